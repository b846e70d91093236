"""The CLI surface: every subcommand registered, version, the one-time CLIP conversion."""

from __future__ import annotations

from typer.testing import CliRunner

from reclmis_cli.main import app

runner = CliRunner()


def test_help_lists_every_subcommand():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("prepare", "train", "eval", "predict", "export", "bench", "convert-clip"):
        assert name in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "reclmis" in result.output


def test_convert_clip_help_warns_about_code_execution():
    result = runner.invoke(app, ["convert-clip", "--help"])
    assert result.exit_code == 0 and "runs that code" in " ".join(result.output.split())


def test_convert_clip_missing_file_is_one_line_exit_2(tmp_path):
    result = runner.invoke(app, ["convert-clip", str(tmp_path / "ViT-B-32.pt"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "not found" in result.output and "Traceback" not in result.output
