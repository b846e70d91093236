"""The one runtime interface: TorchRuntime equals the model, the fast path and int8 stay close, precision and
backend names are checked, int8 exports calibrate and verify, predict reads ahead without changing results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reclmis_core.choices import BACKENDS as CLI_BACKENDS
from reclmis_core.choices import FORMATS
from reclmis_core.config import build_config
from reclmis_core.device import autocast_dtype, bf16_support
from reclmis_core.engine.checkpoint import save_checkpoint
from reclmis_core.errors import ConfigError
from reclmis_core.export import SAMPLE_NOTES, ExportError, export_model, sample_images
from reclmis_core.metrics.dice import dice_iou_per_image
from reclmis_core.models import build_model
from reclmis_core.runtime.backends import BACKENDS, PREDICT_BACKENDS, backend_spec
from reclmis_core.runtime import open_runtime
from reclmis_core.runtime.torch_runtime import TorchRuntime


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 48, "text": {"layers": 1}}})
    model = build_model(cfg.model, corpus=SAMPLE_NOTES).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so a folding mistake would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    folder = save_checkpoint(model, cfg, tmp_path_factory.mktemp("ckpt") / "best")
    return model, cfg, folder


def test_mask_dice_hand_computed():  # the per-image Dice int8 agreement and bench report use
    a = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[1, 0, 0, 0]]], dtype=bool)
    b = np.array([[[1, 0, 1, 0]], [[0, 0, 0, 0]], [[0, 1, 0, 0]]], dtype=bool)
    # 2*1/(2+2) = 0.5; two empty masks agree = 1; disjoint = 0
    assert dice_iou_per_image(a, b)[0].tolist() == [0.5, 1.0, 0.0]


def test_torch_runtime_equals_the_inference_model(tiny):
    model, cfg, _ = tiny
    rt = TorchRuntime(model, cfg, "cpu")
    images = sample_images(cfg, 3, seed=1)
    notes = SAMPLE_NOTES[:3]
    tok = model.tokenize(notes)
    with torch.no_grad():
        want = model.for_inference()(images, tok.input_ids, tok.attention_mask)
    feats, mask = rt.encode(notes)
    assert torch.equal(rt.segment(images, feats, mask), want)
    fast = TorchRuntime(model, cfg, "cpu", fast=True)
    assert torch.allclose(fast.segment(images, feats, mask), want, atol=1e-4)


def test_precision_rules():
    assert autocast_dtype("fp32", "cpu") is None
    with pytest.raises(ConfigError, match="CUDA only"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(ConfigError, match="must be one of"):
        autocast_dtype("int4", "cpu")
    ok, why = bf16_support("cpu")
    if ok:
        assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    else:
        with pytest.raises(ConfigError, match="bf16"):
            autocast_dtype("bf16", "cpu")


def test_backend_table_is_the_one_list():
    assert PREDICT_BACKENDS == CLI_BACKENDS == ("torch", "onnx", "torch-export")
    assert {b.runtime for _, b in BACKENDS.items()} == set(PREDICT_BACKENDS)
    with pytest.raises(ConfigError, match="Did you mean 'eager'.*Available: eager"):
        backend_spec("eagr")
    from reclmis_core.inference.writers import MASK_WRITERS

    assert ("auto", *MASK_WRITERS.names()) == FORMATS


def test_int8_export_calibrates_names_its_graph_and_runs_in_predict(tiny, tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    _, cfg, folder = tiny
    out = tmp_path / "int8"
    with caplog.at_level("WARNING"):
        res = export_model(folder, "onnx", out, verify=True, int8=True, calib_images=8, int8_min_dice=0.0)
    assert "phantom" in caplog.text  # no --calib: calibrated on phantoms, with a warning
    assert set(res.files) == {"segmentation.int8.onnx", "text_encoder.onnx", "reclmis_export.json"}
    side = json.loads((out / "reclmis_export.json").read_text())
    q = side["quantization"]
    assert side["graphs"]["segmentation"]["file"] == "segmentation.int8.onnx"
    assert q["n_calibration_images"] == 8 and "phantom" in q["calibration"]
    assert q["mask_dice_vs_fp32"] is None or 0.0 <= q["mask_dice_vs_fp32"] <= 1.0
    assert q == res.int8 and "another seed" in q["agreement_images"]  # held out: not the calibration images
    assert q["int8_min_dice"] == 0.0 and q["agreement_gate"].startswith("not checked")
    assert "node_conv2d" in q["fp32_nodes"]  # the image's first convolution stays fp32

    from reclmis_core.runtime import open_runtime
    from reclmis_core.runtime.onnx_runtime import OnnxRuntime

    rt = open_runtime(out, "cpu")  # an export folder -> ONNX Runtime; a checkpoint folder -> PyTorch
    assert isinstance(rt, OnnxRuntime) and rt.precision == "int8"
    assert isinstance(open_runtime(folder, "cpu"), TorchRuntime)
    with pytest.raises(ConfigError, match="for the torch backend"):
        open_runtime(out, "cpu", precision="bf16")
    images = sample_images(cfg, 2, seed=2)
    logits = rt.segment(images, *rt.encode(SAMPLE_NOTES[:2]))
    assert logits.shape == (2, 1, 48, 48) and torch.isfinite(logits).all()


def test_int8_refused_below_min_dice_writes_nothing(tiny, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import reclmis_core.export.quantize as quantize

    def worse(src, dst, calib, holdout):  # an int8 graph whose masks agree with fp32's at Dice 0.5
        assert holdout.source != calib.source  # agreement is measured on other images than calibration's
        (dst / "segmentation.int8.onnx").write_bytes(b"")
        return {"mask_dice_vs_fp32": 0.5, "min_mask_dice_vs_fp32": 0.1, "n_compared": 4, "n_both_empty": 0}

    monkeypatch.setattr(quantize, "quantize_export", worse)
    out = tmp_path / "int8"
    with pytest.raises(ExportError, match="int8-min-dice 0.98; nothing was written"):
        export_model(tiny[2], "onnx", out, int8=True, calib_images=4)  # the default gates, --verify or not
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_int8_two_empty_masks_are_no_agreement(tiny, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import reclmis_core.export.quantize as quantize

    empty = np.zeros((3, 8, 8), np.float32)
    q = quantize.mask_agreement(empty, empty, 0.5)
    assert q["mask_dice_vs_fp32"] is None and q["n_both_empty"] == 3 and q["n_compared"] == 0
    one = empty.copy()
    one[0, 2:4, 2:4] = 0.9
    q = quantize.mask_agreement(one, empty, 0.5)  # one lesion lost, two empty pairs: Dice 0, not 2/3
    assert q["mask_dice_vs_fp32"] == 0.0 and q["n_compared"] == 1

    def all_empty(src, dst, calib, holdout):
        (dst / "segmentation.int8.onnx").write_bytes(b"")
        return {"mask_dice_vs_fp32": None, "min_mask_dice_vs_fp32": None, "n_compared": 0, "n_both_empty": 4}

    monkeypatch.setattr(quantize, "quantize_export", all_empty)
    with pytest.raises(ExportError, match="all 4 masks are empty in both"):
        export_model(tiny[2], "onnx", tmp_path / "int8", int8=True, calib_images=4)
    assert not (tmp_path / "int8").exists()


def test_int8_option_errors(tiny, tmp_path):
    folder = tiny[2]
    with pytest.raises(ConfigError, match="--format onnx"):
        export_model(folder, "torch-export", tmp_path / "a", int8=True)
    with pytest.raises(ConfigError, match="add --int8"):
        export_model(folder, "onnx", tmp_path / "b", calib=tmp_path)
    with pytest.raises(ConfigError, match="int8-min-dice"):
        export_model(folder, "onnx", tmp_path / "c", int8=True, int8_min_dice=1.5)


def test_read_ahead_workers_give_the_same_predictions_in_order(tiny, tmp_path):
    from PIL import Image

    from reclmis_core.inference import Predictor, collect_inputs

    _, _, folder = tiny
    rng = np.random.default_rng(0)
    for i in range(7):
        size = (40 + 3 * i, 48)
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    specs, bad = collect_inputs([str(tmp_path)])
    assert not bad
    results = {}
    for workers in (0, 3):
        pred = Predictor.from_checkpoint(folder, workers=workers, batch_size=3)
        results[workers] = list(pred.predict([(s, SAMPLE_NOTES[i % 3]) for i, s in enumerate(specs)]))
    assert [r.spec.stem for r in results[0]] == [r.spec.stem for r in results[3]] == [s.stem for s in specs]
    for a, b in zip(results[0], results[3]):
        assert np.array_equal(a.prob, b.prob)


def test_every_exported_artefact_can_be_written_verified_predicted_and_benchmarked():
    """The artefact table is the one list: each kind export writes has a writer, a verifier, a runtime that
    predict's --backend names and a bench backend."""
    from reclmis_core.artefacts import ARTEFACTS, EXPORT_FORMATS
    from reclmis_core.export import FORMATS as EXPORTS

    assert set(EXPORTS) == set(EXPORT_FORMATS) == {"onnx", "torch-export", "safetensors"}
    bench_runtimes = {b.runtime for _, b in BACKENDS.items()}
    for name in EXPORT_FORMATS:
        spec = ARTEFACTS.get(name)
        assert EXPORTS[name].writer and EXPORTS[name].verifier and EXPORTS[name].artefact is spec
        assert spec.runtime in PREDICT_BACKENDS and spec.runtime in bench_runtimes


def test_torch_export_artefact_is_predicted_and_benchmarked(tmp_path, tiny_cfg, notes):
    """A torch.export artefact could be written but neither predicted nor benchmarked; now open_runtime opens it."""
    from reclmis_core.bench.latency import BenchContext, build_runtime
    from reclmis_core.data.preprocessor import Preprocessor
    from reclmis_core.inference import Predictor
    from reclmis_core.runtime.export_runtime import TorchExportRuntime

    torch.manual_seed(0)
    model = build_model(tiny_cfg.model, corpus=notes).eval()
    ckpt = save_checkpoint(model, tiny_cfg, tmp_path / "ckpt",
                           {"preprocessing": Preprocessor.from_config(tiny_cfg, colour=True).to_dict()})
    res = export_model(ckpt, "torch-export", tmp_path / "pt2", verify=True)
    assert res.verify.passed
    rt = open_runtime(tmp_path / "pt2", "cpu")
    assert isinstance(rt, TorchExportRuntime) and rt.preprocessor.colour is True
    with pytest.raises(ConfigError, match="--backend torch-export"):
        open_runtime(tmp_path / "pt2", "cpu", backend="onnx")
    image = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    eager = Predictor.from_checkpoint(ckpt).predict_arrays([image], notes[:1])[0]
    exported = Predictor.open(tmp_path / "pt2", backend="torch-export").predict_arrays([image], notes[:1])[0]
    np.testing.assert_allclose(exported, eager, atol=1e-5)
    ctx = BenchContext(model, tiny_cfg, Preprocessor.from_config(tiny_cfg), torch.device("cpu"), tmp_path / "bench")
    assert isinstance(build_runtime("torch-export", ctx), TorchExportRuntime)


def test_int8_agreement_images_are_held_out_from_calibration(tiny, tmp_path):
    from reclmis_core.data.synthetic import SyntheticConfig, write_synthetic
    from reclmis_core.export.quantize import calibration_set, holdout_set

    cfg = tiny[1]
    data = tmp_path / "data"
    write_synthetic(data, SyntheticConfig(n_train=6, n_val=2, n_test=2, size=48, seed=3), workers=1)
    calib = calibration_set(cfg, data, 4)
    held = holdout_set(cfg, data, 4)
    assert "held-out" in held.source and "val" in held.source
    assert not any(np.array_equal(c, h) for c in calib.images for h in held.images)
    everything = holdout_set(cfg, data, 6)  # all 6 train images calibrate: only val/test remain
    assert everything.images.shape[0] == 4 and "not used" not in everything.source


def test_mirroring_averages_the_mirrored_pass_and_makes_the_model_mirror_equivariant(tiny):
    from reclmis_core.data.transforms import flip_note_laterality

    model, cfg, _ = tiny
    rt = TorchRuntime(model, cfg, "cpu")
    assert rt.mirror  # tiny's preset turns it on
    rt.mirror = False
    images = sample_images(cfg, 3, seed=1)
    notes = ["upper left lung", "lower right lung", "RUL and left base"]
    plain = torch.sigmoid(rt.forward(images, notes)[0])
    assert torch.equal(plain, torch.sigmoid(rt.segment(images, *rt.encode(notes))))
    rt.mirror = True
    flipped = [flip_note_laterality(n) for n in notes]
    assert flipped == ["upper right lung", "lower left lung", "LUL and right base"]
    other = torch.sigmoid(rt.segment(images.flip(-1), *rt.encode(flipped))).flip(-1)
    both = torch.sigmoid(rt.forward(images, notes)[0])
    torch.testing.assert_close(both, (plain + other) / 2, atol=1e-5, rtol=0)
    assert (both - plain).abs().max() > 1e-4  # the mirrored pass changed something: the test can fail
    # A mirrored image with its mirrored note gives the mirrored mask, exactly what a radiologist expects.
    torch.testing.assert_close(torch.sigmoid(rt.forward(images.flip(-1), flipped)[0]).flip(-1), both, atol=1e-5,
                               rtol=0)


def test_mirroring_travels_with_an_onnx_export(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    import dataclasses

    from reclmis_core.runtime.onnx_segmenter import OnnxSegmenter

    model, cfg, _ = tiny
    cfg = dataclasses.replace(cfg, infer=dataclasses.replace(cfg.infer, mirror=True))
    folder = save_checkpoint(model, cfg, tmp_path / "best")
    export_model(folder, "onnx", tmp_path / "onnx")
    torch_rt, onnx_rt = open_runtime(folder, "cpu"), open_runtime(tmp_path / "onnx", "cpu")
    assert torch_rt.mirror and onnx_rt.mirror and not open_runtime(folder, "cpu", mirror=False).mirror
    images, notes = sample_images(cfg, 2, seed=3), ["upper left lung", "lower right lung"]
    want = torch.sigmoid(torch_rt.forward(images, notes)[0])
    torch.testing.assert_close(torch.sigmoid(onnx_rt.forward(images, notes)[0]), want, atol=1e-4, rtol=0)
    seg = OnnxSegmenter(tmp_path / "onnx")
    np.testing.assert_allclose(seg.predict_proba(images.numpy(), notes), want.numpy(), atol=1e-4)
