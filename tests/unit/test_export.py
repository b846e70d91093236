"""Export round trips on the tiny preset: onnx and torch-export verified at batch 1 and 3 with different notes,
no reconstruction modules in the artefacts, the sidecar, the ONNX Runtime wrapper used by predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reclmis_core.config import build_config
from reclmis_core.engine.checkpoint import load_checkpoint, save_checkpoint
from reclmis_core.errors import ConfigError, ReclmisError
from reclmis_core.export import SAMPLE_NOTES, ExportError, export_model, sample_images
from reclmis_core.models import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 48, "text": {"layers": 1}}})
    model = build_model(cfg.model, corpus=SAMPLE_NOTES)
    # non-trivial BatchNorm statistics, so folding/normalisation mistakes would show
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    folder = save_checkpoint(model, cfg, tmp_path_factory.mktemp("ckpt") / "best")
    return folder


@pytest.fixture(scope="module")
def onnx_export(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "onnx"
    return export_model(tiny_ckpt, "onnx", out, verify=True), out


def test_onnx_export_verifies_at_batch_1_and_3_with_different_notes(onnx_export):
    res, out = onnx_export
    assert res.verify is not None and res.verify.passed and res.verify.max_abs_diff <= 1e-4
    assert [c.batch for c in res.verify.cases] == [1, 3]
    notes = [n for c in res.verify.cases for n in c.notes]
    assert len(set(notes)) == len(notes) == 4
    assert set(res.files) == {"segmentation.onnx", "text_encoder.onnx", "reclmis_export.json"}
    assert res.exporters == {"text_encoder": "dynamo", "segmentation": "dynamo"}


def test_onnx_graphs_have_dynamic_batch_and_length_and_no_reconstruction(onnx_export, tiny_ckpt):
    import onnx

    res, out = onnx_export
    side = json.loads((out / "reclmis_export.json").read_text())
    seg_in = side["graphs"]["segmentation"]["inputs"]
    assert list(seg_in) == ["image", "text_features", "text_mask"]
    assert seg_in["image"]["shape"] == ["batch", 3, 48, 48]
    assert seg_in["text_features"]["shape"][:2] == ["batch", "text_len"]
    assert list(side["graphs"]["text_encoder"]["inputs"]) == ["input_ids", "attention_mask"]
    assert side["graphs"]["text_encoder"]["inputs"]["input_ids"]["shape"] == ["batch", "text_len"]
    assert side["opset"] == 18 and side["text"]["tokenizer"]["kind"] == "bpe-scratch"
    assert side["preprocessing"]["image_size"] == 48 and "mean" in side["preprocessing"]
    assert side["postprocessing"]["threshold"] == 0.5
    assert side["source"]["checkpoint"].endswith("best")

    model, _, _ = load_checkpoint(tiny_ckpt)
    inf = model.for_inference()
    assert res.params_exported == res.params_inference == _numel(inf)
    assert res.params_inference < _numel(model)  # the training model has CVR/CLR/W heads on top
    seg_names = {i.name for i in onnx.load(str(out / "segmentation.onnx")).graph.initializer}
    seg_params = dict(inf.seg.named_parameters())
    assert sum(seg_params[n].numel() for n in seg_names if n in seg_params) == _numel(inf.seg)
    assert not [n for n in seg_names if n.split(".")[0] in ("cvr", "clr", "interest", "logit_scale")]


def test_onnx_segmenter_matches_eager_and_encodes_each_note_once(onnx_export, tiny_ckpt):
    from reclmis_core.export.runtime import OnnxSegmenter

    _, out = onnx_export
    rt = OnnxSegmenter(out)
    model, cfg, _ = load_checkpoint(tiny_ckpt)
    inf = model.for_inference()
    assert rt.uses_text and rt.image_size == 48 and rt.max_length == inf.max_length
    notes = [SAMPLE_NOTES[0], SAMPLE_NOTES[3], SAMPLE_NOTES[0]]
    ids, mask = rt.tokenize(notes)
    tok = inf.tokenize(notes)
    assert np.array_equal(ids, tok.input_ids.numpy()) and np.array_equal(mask, tok.attention_mask.numpy())
    x = sample_images(cfg, 3, seed=2)
    with torch.no_grad():
        ref = torch.sigmoid(inf(x, tok.input_ids, tok.attention_mask)).numpy()
    feats, m = rt.encode_text(notes)
    assert np.abs(torch.sigmoid(torch.from_numpy(rt.segment(x.numpy(), feats, m))).numpy() - ref).max() < 1e-4
    assert rt.mirror  # tiny's infer.mirror travels in the sidecar; mirroring itself: tests/unit/test_runtime.py
    rt.mirror = False
    assert np.abs(rt.predict_proba(x.numpy(), notes) - ref).max() < 1e-4
    # one note for a batch of images is broadcast
    f1, m1 = rt.encode_text([SAMPLE_NOTES[0]])
    assert rt.segment(x.numpy(), f1, m1).shape == (3, 1, 48, 48)
    # preprocess: uint8 grayscale -> normalised 3-channel
    assert rt.preprocess(np.zeros((2, 48, 48), np.uint8)).shape == (2, 3, 48, 48)


def test_onnx_runtime_preprocesses_colour_like_training_and_predict(onnx_export, tiny_ckpt):
    """RGB -> gray by luminance (not channel mean), honouring the sidecar's colour flag, as the Dataset does."""
    from reclmis_core.data.preprocessor import PreprocessPlan
    from reclmis_core.export.runtime import OnnxSegmenter

    _, out = onnx_export
    rt = OnnxSegmenter(out)
    assert rt.preprocessor.colour is False
    rgb = np.zeros((1, 48, 48, 3), np.uint8)
    rgb[..., 0] = 200  # pure red: luminance 60, channel mean 67
    _, cfg, doc = load_checkpoint(tiny_ckpt)
    plan = PreprocessPlan.from_checkpoint(cfg, doc)
    expected = plan.normalise(rgb[0])
    np.testing.assert_array_equal(rt.preprocess(rgb)[0], expected)
    np.testing.assert_array_equal(rt.preprocess(rgb.transpose(0, 3, 1, 2))[0], expected)


def test_torch_export_round_trip(tiny_ckpt, tmp_path):
    out = tmp_path / "pt2"
    res = export_model(tiny_ckpt, "torch-export", out, verify=True)
    assert res.verify.passed and [c.batch for c in res.verify.cases] == [1, 3]
    assert {"segmentation.pt2", "text_encoder.pt2", "reclmis_export.json"} <= set(res.files)
    model, _, _ = load_checkpoint(tiny_ckpt)
    assert res.params_exported == _numel(model.for_inference())
    prog = torch.export.load(str(out / "segmentation.pt2"))
    assert not [n for n in prog.state_dict if n.split(".")[0] in ("cvr", "clr", "interest")]


def test_safetensors_export_is_loadable_inference_only(tiny_ckpt, tmp_path):
    out = tmp_path / "st"
    res = export_model(tiny_ckpt, "safetensors", out, verify=True)
    assert res.verify.max_abs_diff == 0.0 and set(res.files) == {"model.safetensors", "config.json"}
    model, _, _ = load_checkpoint(out)
    assert model.cvr is None and model.clr is None and model.interest is None


def test_failed_verification_writes_nothing(tiny_ckpt, tmp_path, monkeypatch):
    import reclmis_core.export.verify as verify

    monkeypatch.setattr(verify, "VERIFY_TOL", -1.0)
    out = tmp_path / "never"
    with pytest.raises(ExportError, match="nothing was written"):
        export_model(tiny_ckpt, "safetensors", out, verify=True)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_image_only_model_exports_segmentation_graph_only(tmp_path):
    cfg = build_config("tiny", overrides={"model": {"image_size": 32, "text": {"encoder": "none"}}})
    model = build_model(cfg.model)
    res = export_model(model, "onnx", tmp_path / "img", verify=True, cfg=cfg)
    assert res.verify.passed and set(res.files) == {"segmentation.onnx", "reclmis_export.json"}
    side = json.loads((tmp_path / "img" / "reclmis_export.json").read_text())
    assert list(side["graphs"]["segmentation"]["inputs"]) == ["image"] and side["text"] is None


def test_unknown_format_is_a_config_error(tiny_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="torch-export"):
        export_model(tiny_ckpt, "tflite", tmp_path / "x")
    assert issubclass(ExportError, ReclmisError)
