"""Options beyond the paper: each builds, trains a step (test_models), saves/loads and exports to ONNX with --verify."""

from __future__ import annotations

import pytest
import torch

from reclmis_core.config import build_config
from reclmis_core.engine.checkpoint import load_checkpoint, save_checkpoint
from reclmis_core.engine.objective import RecLMISObjective
from reclmis_core.export import export_model
from reclmis_core.models import build_model

OPTIONS = {
    "multiscale_film": {"fusion": "multiscale", "guide": "film"},
    "multiscale_attention": {"fusion": "multiscale", "guide": "attention"},
    "coords": {"coords": True},
    "guided": {"fusion": "multiscale", "guide": "film", "coords": True},
    "convnext_tiny": {"image_encoder": "convnext-tiny", "image_size": 64},
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_option_trains_saves_loads_and_exports(name, notes, tmp_path):
    cfg = build_config("tiny", overrides={"model": {"image_size": 32, **OPTIONS[name]}})
    torch.manual_seed(0)
    model = build_model(cfg.model, corpus=notes).train()
    s = cfg.model.image_size
    x, y = torch.randn(2, 3, s, s), (torch.rand(2, 1, s, s) > 0.7).float()
    tb = model.tokenize(notes[:2])
    parts = RecLMISObjective(cfg.loss, cfg.model)(model(x, tb.input_ids, tb.attention_mask), y, model.logit_scale)
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"])
    save_checkpoint(model.eval(), cfg, tmp_path / "ckpt")
    loaded, loaded_cfg, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded_cfg.model == cfg.model
    with torch.no_grad():
        assert torch.equal(model(x, tb.input_ids, tb.attention_mask).logits,
                           loaded(x, tb.input_ids, tb.attention_mask).logits)
    res = export_model(tmp_path / "ckpt", "onnx", tmp_path / "onnx", verify=True)
    assert res.verify.max_abs_diff <= 1e-4
