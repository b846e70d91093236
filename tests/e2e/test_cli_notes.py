"""`reclmis notes` through Typer's CliRunner: masks-only folder -> notes.csv -> prepare -> train -> eval."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from reclmis_cli.main import app
from reclmis_core.data.writers import encode_png
from reclmis_core.data.synthetic import SyntheticConfig, generate_item

runner = CliRunner()
TINY = ["--preset", "tiny", "--batch-size", "4", "--set", "model.image_size=32", "--deterministic", "--cpu"]


def _masks_only_folder(root: Path, n: int = 12) -> None:
    """images/ + masks/ and a notes.csv that only assigns splits (no notes yet)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n):
        it = generate_item(SyntheticConfig(size=64, seed=8), "train", i)[0]
        (root / "images" / f"{it.id}.png").write_bytes(encode_png(it.image))
        (root / "masks" / f"{it.id}.png").write_bytes(encode_png(it.mask * np.uint8(255)))
        rows.append({"image": f"{it.id}.png", "split": ("train", "train", "val", "test")[i % 4], "note": ""})
    pd.DataFrame(rows).to_csv(root / "notes.csv", index=False)


def test_notes_prepare_train_eval(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _masks_only_folder(src)
    notes_csv = src / "notes.csv"
    r = runner.invoke(app, ["notes", str(src), "--out", str(notes_csv), "--workers", "1"])
    assert r.exit_code == 2 and "--overwrite" in r.output  # the existing notes.csv is not replaced silently
    r = runner.invoke(app, ["notes", str(src), "--out", str(notes_csv), "--workers", "1", "--overwrite", "-q"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(notes_csv.open()))
    assert len(rows) == 12 and list(rows[0]) == ["image", "mask", "note", "zones", "areas", "lungs", "split"]
    assert all(row["note"].endswith("lung.") and row["zones"] and int(row["areas"]) >= 1 for row in rows)
    assert {row["lungs"] for row in rows} == {"estimated"} and rows[0]["image"].startswith("images/")
    assert sorted({row["split"] for row in rows}) == ["test", "train", "val"]
    data = tmp_path / "data"
    r = runner.invoke(app, ["prepare", str(src), "--layout", "folder", "--out", str(data), "--size", "32",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    manifest = pd.read_csv(data / "manifest.csv")
    assert len(manifest) == 12 and set(manifest["note"]) <= {row["note"] for row in rows}
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(data), "--epochs", "1", "--out", str(run), *TINY])
    assert r.exit_code == 0, r.output
    out_json = tmp_path / "eval.json"
    r = runner.invoke(app, ["eval", "--checkpoint", str(run / "best"), "--data", str(data), "--split", "test",
                            "--json", str(out_json)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out_json.read_text())
    assert doc["n_images"] == 3 and 0.0 <= doc["dice"] <= 1.0


def test_notes_check_json_and_errors(tmp_path: Path) -> None:
    src = tmp_path / "qata"
    r = runner.invoke(app, ["prepare", "--synthetic", "--synthetic-layout", "qata", "--out", str(src),
                            "--n-train", "10", "--n-val", "2", "--n-test", "2", "--size", "96", "--workers", "1"])
    assert r.exit_code == 0, r.output
    out_json = tmp_path / "check.json"
    r = runner.invoke(app, ["notes", str(src), "--out", str(tmp_path / "n.csv"), "--check", "--json", str(out_json),
                            "--workers", "1", "--style", "mosmed"])
    assert r.exit_code == 0, r.output
    assert "agreement" in r.output
    check = json.loads(out_json.read_text())["check"]
    assert check["n_compared"] == 14 and check["side"] >= 0.9
    for key in ("side", "zones", "count", "n_compared", "n_unparsed", "mismatches"):
        assert key in check
    r = runner.invoke(app, ["notes", "-h"])
    assert r.exit_code == 0 and "--lungs" in r.output
    for bad in (["--style", "poetic"], ["--lungs", str(tmp_path / "missing")], ["--span-share", "0"]):
        r = runner.invoke(app, ["notes", str(src), "--out", str(tmp_path / "x.csv"), *bad])
        assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output, bad
        assert not (tmp_path / "x.csv").exists()
    r = runner.invoke(app, ["notes", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "not found" in r.output


def test_notes_takes_its_config_section_and_set(tmp_path: Path) -> None:
    """Like every command: a `notes:` section of --config and --set key=value set its options."""
    src = tmp_path / "src"
    _masks_only_folder(src, n=4)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("notes: {style: plain, workers: 1}\n")
    out_csv = tmp_path / "notes.csv"
    r = runner.invoke(app, ["notes", str(src), "--out", str(out_csv), "--config", str(cfg), "-q"])
    assert r.exit_code == 0, r.output
    plain = [row["note"] for row in csv.DictReader(out_csv.open())]
    r = runner.invoke(app, ["notes", str(src), "--out", str(out_csv), "--config", str(cfg), "--set", "style=qata",
                            "--overwrite", "-q"])
    assert r.exit_code == 0, r.output
    assert [row["note"] for row in csv.DictReader(out_csv.open())] != plain  # --set wins over the file
    r = runner.invoke(app, ["notes", str(src), "--out", str(out_csv), "--set", "styel=plain", "--overwrite"])
    assert r.exit_code == 2 and "Did you mean 'style'" in r.output
