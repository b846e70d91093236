"""The zone reader (``model.text.reader=zones``): what it reads in notes of several grammars, and that every path
that tokenizes a note (training, checkpoints, exports, predict) reads it the same way."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

from reclmis_core.data.note_text import format_note, parse_note, read_note, unplaced_levels, zone_code
from reclmis_core.data.synthetic_b import make_note_b

UL, ML, LL = zone_code("left", "upper"), zone_code("left", "middle"), zone_code("left", "lower")
UR, MR, LR = zone_code("right", "upper"), zone_code("right", "middle"), zone_code("right", "lower")

# Hand-written notes: the zones a reader of the note would mark.
CASES = [
    ("Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.", {UL, LR}),
    ("Bilateral pulmonary infection, three infected areas, upper middle left lung and lower right lung.",
     {UL, ML, LR}),
    ("Unilateral pulmonary infection, one infected area, all right lung.", {UR, MR, LR}),
    ("Findings: 2 foci of consolidation, right apical zone and mid zone of the left lung.", {UR, ML}),
    ("left middle zone and mid zone of the right lung: opacities.", {ML, MR}),
    ("Infection involving both lungs, right upper and mid zones and left basal zone (3 lesions).", {UR, MR, LL}),
    ("There are 2 infiltrates in the upper, mid and lower zones of the left lung.", {UL, ML, LL}),
    ("upper to lower zones of the right lung", {UR, MR, LR}),
    ("Bibasal consolidation.", {LL, LR}),
    ("lower zones bilaterally", {LL, LR}),
    ("Ground-glass opacity in both upper zones.", {UL, UR}),
    ("right lung upper zone and left lung lower zone", {UR, LL}),
    ("Left lung: upper and lower zone opacities; right lung clear.", {UL, LL}),
    ("left-sided lower zone opacity", {LL}),
    ("Opacity of the entire left lung.", {UL, ML, LL}),
    ("superior right and inferior left lung", {UR, LL}),
    ("RUL consolidation, LLL atelectasis.", {UR, LL}),
    ("Right perihilar and left costophrenic opacities.", {MR, LL}),
    ("Patchy opacity in the upper area of the left lung.", {UL}),
    ("Rt lower zone and Lt cranial zone", {LR, UL}),
    ("Opacity in the caudal part of the right lung.", {LR}),
    # Negation within a clause: before the zones, after them, and what is not a negation.
    ("No opacity in the left upper zone. Consolidation in right lower zone.", {LR}),
    ("Right upper and mid zones are clear, opacity in the left lower zone", {LL}),
    ("Opacity in the left lower zone with the right lung clear", {LL}),
    ("Bilateral lower zone opacities, sparing the apices.", {LL, LR}),
    ("Right upper zone not involved; left mid zone consolidation", {ML}),
    ("The right lung is normal and there is opacity in the left lower zone", {LL}),
    ("no opacity in the right upper, mid or lower zones; left basal consolidation", {LL}),
    ("No change in the left lower zone opacity.", {LL}),
    ("Left lower zone opacity without cavitation.", {LL}),
    ("no definite opacity except in the left lower zone", {LL}),
]


@pytest.mark.parametrize("note,zones", CASES)
def test_the_reader_finds_the_zones_whatever_the_grammar(note: str, zones: set[int]) -> None:
    parsed = parse_note(note)
    assert parsed is not None and parsed.zones == zones


def test_what_the_model_reads() -> None:
    assert read_note(CASES[3][0]) == "middle left and upper right lung"  # left lung first, upper to lower
    assert read_note(CASES[0][0]) == read_note("right basal zone and left apical zone: opacities.")
    assert read_note("No pulmonary infection.") == "no infection"
    assert read_note("Opacity in the left lung.") == "left lung"  # a side without a level
    assert read_note("Some opacity.") == ""  # nothing the reader knows: no note
    assert read_note("Some opacity.", "raw") == "Some opacity."
    with pytest.raises(ValueError, match="reader"):
        read_note("x", "bag-of-words")


def test_a_level_without_a_side_is_reported_not_read() -> None:
    note = "Opacity in the upper zone and the left base."
    assert read_note(note) == "lower left lung" and unplaced_levels(note) == ["upper"]
    assert unplaced_levels("No opacity in the upper zones. Left base consolidation.") == []  # negated: nothing lost
    assert all(unplaced_levels(n) == [] for n, _ in CASES)


def test_every_zone_set_reads_back_in_every_style() -> None:
    for k in range(1, 7):
        for codes in itertools.combinations(range(1, 7), k):
            plain = read_note(format_note([list(codes)], "qata"))
            assert parse_note(plain).zones == set(codes)
            for style in ("qata", "mosmed", "plain"):
                assert read_note(format_note([[c] for c in codes], style)) == plain, (codes, style)


def test_family_b_notes_read_to_their_zones() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        codes = sorted(rng.choice(np.arange(1, 7), size=int(rng.integers(1, 5)), replace=False).tolist())
        note = make_note_b(codes, rng)
        assert read_note(note) == read_note(format_note([codes])), note


def _scratch_tower(reader: str):
    from reclmis_core.config import build_config
    from reclmis_core.models.text import build_text_tower

    cfg = build_config("tiny", overrides={"model": {"text": {"reader": reader}}}).model.text
    return build_text_tower(cfg, corpus=[c[0] for c in CASES])


def test_a_zone_reading_tokenizer_gives_one_encoding_per_zone_set(caplog: pytest.LogCaptureFixture) -> None:
    tok = _scratch_tower("zones").tokenizer
    a = tok(["Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.",
             "right basal zone and left apical zone: opacities."], 32)
    assert a.input_ids[0].tolist() == a.input_ids[1].tolist()
    assert tok.token_strings(CASES[3][0], 32)[1:-1] == ["middle", "left", "and", "upper", "right", "lung"]
    with caplog.at_level(logging.WARNING):
        b = tok(["Some opacity."], 32)
    assert b.attention_mask.sum().item() == 2  # [BOS] [EOS]: the model reads no note, and says so
    assert "found no lung zone" in caplog.text and tok.unread_count() == 1
    with caplog.at_level(logging.WARNING):
        tok(["Opacity in the upper zone and the left base."], 32)
    assert "could not tell the side of 'upper'" in caplog.text and "reads 'lower left lung'" in caplog.text
    raw = _scratch_tower("raw").tokenizer
    c = raw(["Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.",
             "right basal zone and left apical zone: opacities."], 32)
    assert c.input_ids[0].tolist() != c.input_ids[1].tolist()


def test_an_export_keeps_the_reader(tmp_path) -> None:
    from reclmis_core.models.text import build_tokenizer, tokenizer_description

    tok = _scratch_tower("zones").tokenizer
    again = build_tokenizer(tokenizer_description(tok, tmp_path), tmp_path, 32)
    assert again.reader == "zones"
    note = "Findings: 2 foci of consolidation, right apical zone and mid zone of the left lung."
    assert again([note], 32).input_ids.tolist() == tok([note], 32).input_ids.tolist()
    assert build_tokenizer({**tokenizer_description(_scratch_tower("raw").tokenizer, tmp_path)}, tmp_path,
                           32).reader == "raw"


def test_the_tokenizer_vocabulary_is_learnt_from_the_notes_as_read() -> None:
    tok = _scratch_tower("zones").tokenizer
    vocab = tok._tok.get_vocab()
    assert "findings" not in vocab and "consolidation" not in vocab  # words the reader drops are never seen


def test_predict_says_what_the_model_read(tmp_path) -> None:
    import torch
    from PIL import Image

    from reclmis_core.api import load
    from reclmis_core.checkpoint import save_checkpoint
    from reclmis_core.config import build_config
    from reclmis_core.models import build_model

    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32, "text": {"reader": "zones"}}})
    ckpt = save_checkpoint(build_model(cfg.model, corpus=[c[0] for c in CASES]), cfg, tmp_path / "best")
    Image.fromarray((np.arange(48 * 48).reshape(48, 48) % 251).astype(np.uint8)).save(tmp_path / "x.png")
    model = load(ckpt)
    note = "Findings: 2 foci of consolidation, right apical zone and mid zone of the left lung."
    (res,) = model.predict(str(tmp_path / "x.png"), note=note, out=tmp_path / "out")
    assert res.note_read == "middle left and upper right lung" and res.entry["note_read"] == res.note_read
    (arr,) = model.predict(np.zeros((40, 40), np.uint8), note=note)
    assert arr.note_read == res.note_read
    assert model.predictor.note_read("Some opacity.") == ""  # nothing read: the model sees no note


def test_a_note_the_model_cannot_read_is_refused_not_guessed(tmp_path) -> None:
    import torch
    from PIL import Image
    from typer.testing import CliRunner

    from reclmis_cli.main import app
    from reclmis_core.api import load
    from reclmis_core.checkpoint import save_checkpoint
    from reclmis_core.config import build_config
    from reclmis_core.errors import ConfigError
    from reclmis_core.models import build_model

    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32, "text": {"reader": "zones"}}})
    ckpt = save_checkpoint(build_model(cfg.model, corpus=[c[0] for c in CASES]), cfg, tmp_path / "best")
    with pytest.raises(ConfigError, match="names no lung zone"):
        load(ckpt).predict(np.zeros((40, 40), np.uint8), note="左肺下叶有感染病灶")
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(tmp_path / "x.png")
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "x.png"), "--note", "Some opacity.", "-c", str(ckpt),
                                   "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "names no lung zone" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "x_mask.png").exists()
    # A level whose side the reader cannot tell would be dropped from the mask: refused too, naming the word.
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "x.png"), "--note", "Opacity in the upper zone and the "
                                   "left base.", "-c", str(ckpt), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "names 'upper' without a side" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "x_mask.png").exists()
