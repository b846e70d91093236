"""`reclmis prepare` through Typer's CliRunner: synthetic, qata round trip, sample_data, errors -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from reclmis_cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def test_synthetic_then_prepare_qata(tmp_path: Path) -> None:
    src, data = tmp_path / "qata", tmp_path / "data"
    r = runner.invoke(app, ["prepare", "--synthetic", "--synthetic-layout", "qata", "--out", str(src),
                            "--n-train", "6", "--n-val", "2", "--n-test", "4", "--size", "64", "--workers", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["prepare", str(src), "--out", str(data), "--size", "64", "--workers", "1",
                            "--report", str(tmp_path / "report.json")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(data / "manifest.csv")
    assert len(df) == 12 and set(df["split"]) == {"train", "val", "test"}
    assert json.loads((tmp_path / "report.json").read_text())["layout"] == "qata"
    # --out refuses a non-empty folder without --overwrite
    r = runner.invoke(app, ["prepare", str(src), "--out", str(data), "--size", "64", "--workers", "1"])
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = runner.invoke(app, ["prepare", str(src), "--out", str(data), "--size", "64", "--workers", "1", "--overwrite"])
    assert r.exit_code == 0, r.output


def test_synthetic_prepared_dir(tmp_path: Path) -> None:
    r = runner.invoke(app, ["prepare", "--synthetic", "--out", str(tmp_path / "d"), "--n-train", "4", "--n-val", "2",
                            "--n-test", "4", "--size", "64", "--seed", "1", "--workers", "1"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert info["counts"] == {"train": 4, "val": 2, "test": 4} and info["synthetic"]["seed"] == 1


def test_synthetic_family_b(tmp_path: Path) -> None:
    r = runner.invoke(app, ["prepare", "--synthetic", "--family", "b", "--out", str(tmp_path / "d"), "--n-train", "3",
                            "--n-val", "1", "--n-test", "4", "--size", "96", "--workers", "1"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert info["synthetic"]["family"] == "b" and info["n_counterfactual_pairs"] == 2
    r = runner.invoke(app, ["prepare", "--synthetic", "--family", "z", "--out", str(tmp_path / "e"), "--workers", "1"])
    assert r.exit_code == 2 and "--family" in r.output and not (tmp_path / "e").exists()


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "qata"
    r = runner.invoke(app, ["prepare", "--synthetic", "--synthetic-layout", "qata", "--out", str(src),
                            "--n-train", "4", "--n-val", "2", "--n-test", "2", "--size", "64", "--workers", "1"])
    assert r.exit_code == 0
    (src / "Train_Folder" / "labelcol" / "mask_syn_train_00001.png").unlink()
    (src / "Train_Folder" / "img" / "syn_train_00002.png").write_bytes(b"broken")
    report = tmp_path / "problems.json"
    r = runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "data"), "--workers", "1",
                            "--report", str(report)])
    assert r.exit_code == 2
    error_lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and "2 problems" in error_lines[0] and "Traceback" not in r.output
    assert "mask_syn_train_00001.png" in r.output and "syn_train_00002.png" in r.output
    assert not (tmp_path / "data").exists()
    kinds = sorted(p["kind"] for p in json.loads(report.read_text())["problems"])
    assert kinds == ["missing_mask", "unreadable"]
    r = runner.invoke(app, ["prepare", str(src), "--out", str(tmp_path / "data"), "--workers", "1", "--skip-bad"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert sorted(info["dropped"]) == ["syn_train_00001", "syn_train_00002"] and info["counts"]["train"] == 2


def test_usage_errors(tmp_path: Path) -> None:
    r = runner.invoke(app, ["prepare", "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "SRC" in r.output
    r = runner.invoke(app, ["prepare", str(tmp_path), "--out", str(tmp_path / "d"), "--layout", "zip"])
    assert r.exit_code == 2 and "unknown layout" in r.output
    r = runner.invoke(app, ["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "not found" in r.output
    r = runner.invoke(app, ["prepare", str(tmp_path), "--out", str(tmp_path / "d"), "--window", "wide"])
    assert r.exit_code == 2 and "CENTER,WIDTH" in r.output


def test_bundled_sample_data_prepares(tmp_path: Path) -> None:
    sample = REPO / "sample_data"
    r = runner.invoke(app, ["prepare", str(sample), "--out", str(tmp_path / "sample"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "sample" / "dataset.json").read_text())
    assert info["layout"] == "qata" and info["lesion_labels"] is True and info["problems"] == []
    df = pd.read_csv(tmp_path / "sample" / "manifest.csv", dtype=str, keep_default_na=False)
    assert df["id"].str.endswith("_cfa").sum() >= 2  # counterfactual pairs survive the qata round trip


def test_prepare_and_notes_help_list_the_registered_layouts() -> None:
    from reclmis_core.data.layouts import LAYOUTS

    for command in ("prepare", "notes"):
        text = " ".join(runner.invoke(app, [command, "-h"]).output.replace("\u2502", " ").split())  # no box lines
        assert f"auto | {' | '.join(LAYOUTS.names())}" in text, text
