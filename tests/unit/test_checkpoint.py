"""Checkpoints: safetensors + JSON round trip, nothing unpickled, clear mismatch messages."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from reclmis_core.config import build_config
from reclmis_core.engine.checkpoint import load_checkpoint, save_checkpoint
from reclmis_core.errors import CheckpointError
from reclmis_core.models import build_model


def test_round_trip_reproduces_outputs(tiny_cfg, notes, tmp_path):
    model = build_model(tiny_cfg.model, corpus=notes).eval()
    save_checkpoint(model, tiny_cfg, tmp_path / "ckpt", meta={"epoch": 3})
    loaded, cfg, doc = load_checkpoint(tmp_path / "ckpt")
    assert cfg == tiny_cfg and doc["meta"]["epoch"] == 3
    x = torch.randn(2, 3, 32, 32)
    tb = model.tokenize(notes[:2])
    tb2 = loaded.tokenize(notes[:2])
    assert torch.equal(tb.input_ids, tb2.input_ids)
    with torch.no_grad():
        assert torch.equal(model(x, tb.input_ids, tb.attention_mask).logits,
                           loaded(x, tb2.input_ids, tb2.attention_mask).logits)
    assert not list(tmp_path.glob(".ckpt*")), "temporary folders left behind"


def test_pickle_is_refused_and_never_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open(r'%s', 'w').write('pwned')" % (tmp_path / "pwned"),))

    payload = tmp_path / "model.pt"
    payload.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="never loads pickled"):
        load_checkpoint(payload)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    (folder / "config.json").write_text(json.dumps({"model_class": "RecLMIS", "format_version": 1,
                                                     "config": {"preset": "tiny"}}))
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)
    assert not (tmp_path / "pwned").exists()


def test_architecture_mismatch_says_what_differs(tiny_cfg, notes, tmp_path):
    model = build_model(tiny_cfg.model, corpus=notes)
    save_checkpoint(model, tiny_cfg, tmp_path / "ckpt")
    doc = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    doc["config"]["model"]["base_channels"] = 16
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="differ in shape"):
        load_checkpoint(tmp_path / "ckpt")


def test_newer_format_refused(tiny_cfg, notes, tmp_path):
    save_checkpoint(build_model(tiny_cfg.model, corpus=notes), tiny_cfg, tmp_path / "ckpt")
    doc = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    doc["format_version"] = 99
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="newer than this reclmis supports"):
        load_checkpoint(tmp_path / "ckpt")


def test_frozen_pretrained_text_weights_are_not_copied(notes, tmp_path):
    cfg = build_config("tiny", overrides={"model": {"image_size": 32, "text": {"encoder": "minilm", "freeze": True}}})
    model = build_model(cfg.model)
    save_checkpoint(model, cfg, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").stat().st_size < 5e6  # MiniLM alone is ~90 MB
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(loaded.seg.head.weight, model.seg.head.weight)
