"""The note must be able to steer the mask: invariants of an untrained model, and what makes training use it."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from reclmis_core.config import build_config
from reclmis_core.engine.checkpoint import load_checkpoint, save_checkpoint
from reclmis_core.engine.objective import conditioned_contrastive_loss
from reclmis_core.engine.trainer import Trainer, note_groups
from reclmis_core.models import build_model

NOTES = [
    "Unilateral pulmonary infection, one infected area, upper left lung.",
    "Bilateral pulmonary infection, two infected areas, lower left lung and lower right lung.",
]
# The paper presets keep their architecture; a smaller image keeps the test fast.
SIZES = {"tiny": None, "guided-tiny": None, "paper": 64, "guided": 64}


def _note_effect(preset: str, order: str) -> tuple[float, float]:
    """(relative change of the logits when only the note changes, spatial spread of V' relative to V).

    BatchNorm statistics are calibrated on a few batches first: with the initial running statistics the
    decoder is nearly constant and hides what the bottleneck carries.
    """
    size = SIZES[preset]
    over = {"model": {"ci_order": order, "dropout": 0.0, **({"image_size": size} if size else {})}}
    cfg = build_config(preset, overrides=over)
    torch.manual_seed(0)
    model = build_model(cfg.model, corpus=NOTES * 4)
    s = cfg.model.image_size
    images = torch.rand(4, 3, s, s, generator=torch.Generator().manual_seed(1))
    toks = [model.tokenize([n] * 4) for n in NOTES]
    with torch.no_grad():
        feats = [model.encode_text(t.input_ids, t.attention_mask) for t in toks]
        model.train()
        for _ in range(3):
            model.seg(images, feats[0], toks[0].attention_mask)
        model.eval()
        out = [model.seg.forward_features(images, f, t.attention_mask) for f, t in zip(feats, toks)]
        logits = [model.seg.forward_head(o) for o in out]
    change = ((logits[0] - logits[1]).std() / logits[0].std()).item()
    v_new = out[0]["v_new"]
    v = out[0]["bottleneck"].flatten(2).transpose(1, 2)
    spread = (v_new.std(dim=1).mean() / v.std(dim=1).mean()).item()
    return change, spread


# Measured (relative logit change when only the note changes / V' spread over patches), paper order vs the
# reference order, which is note-blind at initialisation: tiny 3.9e-3 / 8.4e-3 vs 7.9e-7 / 1.3e-7; guided-tiny
# 2.6e-4 / 6.6e-3 vs 1.3e-7 / 1.5e-7 (both reading zones, model.text.reader); paper 1.0e-2 / 1.8e-3 vs 1.3e-6 / 8.6e-8; guided 2.6e-3 / 2.4e-3 vs
# 5.1e-7 / 1.1e-7. The bounds sit 4x or more below the paper order and 60x or more above the reference order.
LISTENS = {"change": 5e-5, "spread": 4e-4}


@pytest.mark.parametrize("preset", [
    "tiny", "guided-tiny",
    pytest.param("paper", marks=pytest.mark.slow), pytest.param("guided", marks=pytest.mark.slow),
])
def test_untrained_model_listens_to_the_note(preset):
    change, spread = _note_effect(preset, "paper")
    assert change > LISTENS["change"], f"{preset}: logits moved by {change:.2e} when the note changed (dead CI?)"
    assert spread > LISTENS["spread"], f"{preset}: V' is (nearly) the same vector at every patch ({spread:.2e})"
    blind_change, blind_spread = _note_effect(preset, "reference") if preset in ("tiny", "guided-tiny") else (0, 0)
    assert blind_change < LISTENS["change"] / 50 and blind_spread < LISTENS["spread"] / 50


def test_reference_order_is_note_blind_at_initialisation():
    """Why the paper's order is the default: V' = attn(V -> E') starts as one vector copied to every patch."""
    change, spread = _note_effect("tiny", "reference")
    assert change < 1e-5 and spread < 1e-5


def test_presets_default_to_the_papers_ci_order():
    for name in SIZES:
        assert build_config(name).model.ci_order == "paper"
        assert build_config(name).model.recon_detach


def test_reconstruction_targets_are_detached():
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}})
    torch.manual_seed(0)
    model = build_model(cfg.model, corpus=NOTES).train()
    tok = model.tokenize(NOTES)
    out = model(torch.rand(2, 3, 32, 32), tok.input_ids, tok.attention_mask)
    assert not out.target_image.requires_grad and not out.target_text.requires_grad
    assert out.recon_image.requires_grad and out.recon_text.requires_grad
    cfg.model.recon_detach = False
    model = build_model(cfg.model, corpus=NOTES).train()
    out = model(torch.rand(2, 3, 32, 32), tok.input_ids, tok.attention_mask)
    assert out.target_image.requires_grad and out.target_text.requires_grad


def test_contrastive_loss_treats_identical_notes_as_positives_by_hand():
    # Images 0 and 1 share a note: row 0's target is (1/2, 1/2, 0), row 2's is (0, 0, 1).
    s = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    groups = torch.tensor([0, 0, 1])
    loss = conditioned_contrastive_loss(s, torch.tensor(0.0), groups).item()
    lse_a = math.log(2 * math.exp(0.5) + 1)  # rows/cols 0 and 1
    lse_c = math.log(2 + math.e)  # row/col 2
    row_a = lse_a - 0.5  # -(1/2 * 0.5 + 1/2 * 0.5) + logsumexp
    row_c = lse_c - 1.0
    expected = (2 * row_a + row_c) / 3  # rows and columns are symmetric here
    assert loss == pytest.approx(expected, rel=1e-5)
    # distinct notes: the same as the diagonal-only loss
    s2 = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    assert conditioned_contrastive_loss(s2, torch.tensor(1.0), torch.tensor([0, 1])).item() == pytest.approx(
        conditioned_contrastive_loss(s2, torch.tensor(1.0)).item(), rel=1e-6)


def test_note_groups():
    assert note_groups(["a", "b", "a", "c"], torch.device("cpu")).tolist() == [0, 1, 0, 2]


def _fake_trainer(note_dropout: float, step: int) -> SimpleNamespace:
    cfg = build_config("tiny", overrides={"train": {"note_dropout": note_dropout, "seed": 3}})
    return SimpleNamespace(cfg=cfg, raw_model=SimpleNamespace(text_encoder=object()),
                           state=SimpleNamespace(global_step=step))


def test_note_dropout_trains_empty_notes_on_every_lesion():
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, 0, 0] = 1
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[:, 0, 0] = 3  # the named lesion
    labels[:, 3, 3] = 7  # a distractor the note does not name
    batch = {"note": ["left upper", "right lower"], "mask": mask, "lesion_labels": labels}
    notes, target = Trainer._notes_and_target(_fake_trainer(1.0, 0), batch)
    assert notes == ["", ""]
    assert target[:, 0, 3, 3].tolist() == [1.0, 1.0] and target[:, 0, 0, 0].tolist() == [1.0, 1.0]
    notes, target = Trainer._notes_and_target(_fake_trainer(0.0, 0), batch)
    assert notes == batch["note"] and target is mask
    # the share is honoured and the draw depends only on (seed, step): a resumed run repeats it
    draws = [Trainer._notes_and_target(_fake_trainer(0.3, k), batch)[0][0] == "" for k in range(400)]
    assert 0.2 < sum(draws) / 400 < 0.4
    again = [Trainer._notes_and_target(_fake_trainer(0.3, k), batch)[0][0] == "" for k in range(400)]
    assert draws == again


def test_format_1_checkpoints_keep_the_reference_order(tmp_path):
    cfg = build_config("tiny", overrides={"model": {"image_size": 32, "ci_order": "reference"}})
    model = build_model(cfg.model, corpus=NOTES)
    save_checkpoint(model, cfg, tmp_path / "ck")
    doc = json.loads((tmp_path / "ck" / "config.json").read_text())
    doc["format_version"] = 1
    del doc["config"]["model"]["ci_order"]  # written before the option existed
    (tmp_path / "ck" / "config.json").write_text(json.dumps(doc))
    _, loaded, _ = load_checkpoint(tmp_path / "ck")
    assert loaded.model.ci_order == "reference"


@pytest.mark.parametrize("note_dropout", [0.0, 0.25])
def test_predict_without_a_note_only_for_models_trained_for_it(note_dropout, tmp_path):
    import numpy as np
    from PIL import Image

    from reclmis_core.inference import Failure, Predictor, collect_inputs

    cfg = build_config("tiny", overrides={"model": {"image_size": 32}, "train": {"note_dropout": note_dropout}})
    model = build_model(cfg.model, corpus=NOTES)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "a.png")
    specs, _ = collect_inputs([tmp_path / "a.png"])
    predictor = Predictor.from_model(model, cfg)
    assert predictor.note_optional == (note_dropout > 0)
    (result,) = list(predictor.predict([(specs[0], "")]))
    assert isinstance(result, Failure) == (note_dropout == 0)
