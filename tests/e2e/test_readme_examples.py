"""The `reclmis ...` examples of README.md and docs/*.md, run as written (issue 15: docs that do not run).

What is extracted: every fenced ```bash block; in it, every command that starts with ``reclmis`` (continuation
lines joined, ``# comments`` dropped, ``&&``/``;``/``|`` chains split). Commands that start with something else
(``pip``, ``python``, ``torchrun``, ``/usr/bin/time``, ``for``) are not run. Usage synopses (a word starting with
``[`` or ``(``, or ending in ``...``) are syntax, not examples, and are left out.

Where they run: one temporary folder, the working directory of every example, holding what a reader has at that
point of the README, made small:

- ``data/sample``: a prepared phantom DATA_DIR (16/4/4 images, 64 px), standing in for the sample that
  ``reclmis train --dataset sample`` prepares;
- ``runs/sample-tiny``: a 1-epoch tiny run on it (32 px), standing in for the quickstart training;
- ``sample_data``: the bundled sample data (a link, as in the repository);
- ``scan.png``, ``xrays/p001.png`` + ``p002.png`` with ``notes.csv``, ``case01.nii.gz`` (a 6-slice volume),
  ``ct_series/`` (3 CT slices): the inputs the predict examples name.

Every other example runs as written and must exit 0. :data:`SKIPPED` lists the ones that do not run here and
why (long trainings, real datasets and the authors' checkpoint, paper-size models, exports and benchmarks that
take 25-45 s each on the 2-core CI machine: tests/e2e/test_cli_export_bench.py covers those commands on tiny
models). A SKIPPED entry that no longer matches an example fails the test, so the list follows the docs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reclmis_cli.main import app

from tests.dicom_series import write_ct_series

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
runner = CliRunner()

NOTE = "Unilateral pulmonary infection, one infected area, middle right lung."

#: Examples not run here, by the start of their command (as extracted: one space between words), and why.
SKIPPED: dict[str, str] = {
    "reclmis train --dataset sample": "the quickstart training (tiny preset, 60 epochs on 320 images: minutes); "
                                      "runs/sample-tiny stands in for it",
    "reclmis train --dataset qata": "real dataset (QaTa-COV19) and a CLIP download",
    "reclmis prepare /path/to/QaTa-COV19": "real dataset (QaTa-COV19)",
    "reclmis prepare datasets/Covid19": "real dataset (QaTa-COV19)",
    "reclmis convert-reference best_model-RecLMIS.pth.tar": "the authors' checkpoint (not redistributable)",
    "reclmis eval -c ckpt/qata-authors": "needs the authors' checkpoint and QaTa-COV19",
    "reclmis eval --checkpoint ckpt/reclmis-qata": "needs the authors' checkpoint and QaTa-COV19",
    "reclmis eval --checkpoint runs/qata-paper/best": "needs the paper-preset QaTa training",
    "reclmis export --checkpoint runs/qata-paper/best": "needs the paper-preset QaTa training (and an ONNX/"
                                                        "torch.export with --verify takes 25-30 s here)",
    "reclmis predict xrays/ --note ... --backend onnx": "needs exports/qata_onnx from the export examples",
    "reclmis bench --preset paper": "paper-size model: export and timing take minutes on a CPU",
    "reclmis bench --checkpoint runs/sample-tiny/best": "ONNX export + timing + a training step: ~45 s here "
                                                        "(tests/e2e/test_cli_export_bench.py runs bench)",
    "reclmis -q prepare --synthetic --synthetic-layout qata --out /tmp/perf/qata10k": "10,000 images (70 s), "
                                                                                     "written outside the workspace",
    "reclmis train --resume --out runs/sample-tiny --epochs 60": "59 more epochs",
    "reclmis train --data proof/data": "the note-reliance benchmark's trainings (60 epochs each; S is a seed)",
    "reclmis train --data proof/a": "the two-family benchmark's trainings (60 or 150 epochs each; S is a seed)",
    "reclmis eval -c proof/runs/a-sS/best": "needs those trainings (S is a seed)",
    "reclmis eval -c proof/runs/b-X-s0/best": "needs a candidate's training (X names the change)",
    "reclmis eval -c proof/runs/full-sS/best": "needs those trainings ($t and S come from the shell loop)",
    "reclmis -q predict pngs": "needs paper_ckpt (the paper-size model the Python snippet above writes) and $N",
    "reclmis notes SRC": "placeholders (SRC, DATA_DIR) for the reader's own folder",
    "reclmis prepare SRC --layout folder --out DATA_DIR": "placeholders (SRC, DATA_DIR)",
    "reclmis train --data DATA_DIR": "placeholder (DATA_DIR), and a guided-tiny training",
    "reclmis prepare --synthetic --synthetic-layout qata --out /tmp/notesbench": "300 images written to /tmp, "
                                                                                "outside the workspace",
    "reclmis notes /tmp/notesbench": "needs /tmp/notesbench (above); tests/e2e/test_cli_notes.py runs --check",
    "reclmis notes my_dataset/": "placeholder (my_dataset/: images and masks) for the reader's own folder",
    "reclmis train --data data/qata": "real dataset (QaTa-COV19), paper-size training",
    "reclmis predict scans/": "placeholder folder (scans/) and a paper-preset QaTa training or its export",
    "reclmis export -c runs/qata-paper/best": "needs the paper-preset QaTa training and QaTa for calibration",
    "reclmis app": "serves a page until stopped (Ctrl-C); tests/e2e/test_app.py and test_app_browser.py serve it",
}


@dataclass(frozen=True)
class Example:
    where: str  # file:line of the command's first line
    args: tuple[str, ...]  # what follows `reclmis`, as the shell would pass it

    @property
    def text(self) -> str:
        return " ".join(("reclmis", *self.args))


def _bash_blocks(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line of the first line, lines) of each ```bash block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start = i + 1
            i += 1
            while not lines[i].strip().startswith("```"):
                i += 1
            yield start + 1, lines[start:i]
        i += 1


def _commands(first_line: int, lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line, tokens) of each simple command of a block: continuations joined, comments dropped, chains split."""
    joined: list[tuple[int, str]] = []
    for n, line in enumerate(lines, start=first_line):
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
        else:
            joined.append((n, line.strip()))
    for n, line in joined:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for token in lexer:
            if token in ("&&", "||", ";", "|"):
                if command:
                    yield n, command
                command = []
            else:
                command.append(token)
        if command:
            yield n, command


def _is_synopsis(tokens: list[str]) -> bool:
    return any(t.startswith(("[", "(")) or t.endswith("...") and t != "..." for t in tokens)


def examples() -> list[Example]:
    found = []
    for path in DOCS:
        for first, block in _bash_blocks(path):
            for line, tokens in _commands(first, block):
                if tokens[0] != "reclmis" or _is_synopsis(tokens):
                    continue
                found.append(Example(f"{path.relative_to(ROOT)}:{line}", tuple(tokens[1:])))
    return found


def _skip_reason(example: Example) -> str | None:
    return next((why for start, why in SKIPPED.items() if example.text.startswith(start)), None)


# -- the workspace ----------------------------------------------------------------------------------------------


def _invoke(args: list[str]) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, f"reclmis {' '.join(args)}\n{res.output}"


def _ct_series(folder: Path, n: int = 3) -> None:
    write_ct_series(folder, n)


def _workspace(root: Path) -> None:
    _invoke(["-q", "prepare", "--synthetic", "--out", "data/sample", "--n-train", "16", "--n-val", "4",
             "--n-test", "4", "--size", "64", "--seed", "0"])
    _invoke(["-q", "train", "--data", "data/sample", "--preset", "tiny", "--epochs", "1", "--batch-size", "8",
             "--set", "model.image_size=32", "--out", "runs/sample-tiny", "--device", "cpu"])
    (root / "sample_data").symlink_to(ROOT / "reclmis_core" / "sample_data", target_is_directory=True)
    test_images = sorted((root / "data" / "sample" / "images" / "test").glob("*.png"))
    shutil.copy(test_images[0], root / "scan.png")
    (root / "xrays").mkdir()
    for i, src in enumerate(test_images[:2], start=1):
        shutil.copy(src, root / "xrays" / f"p{i:03d}.png")
    (root / "notes.csv").write_text(f'image,note\np001.png,"{NOTE}"\np002.png,"{NOTE}"\n', encoding="utf-8")
    import nibabel as nib

    volume = np.stack([np.asarray(Image.open(p), dtype=np.int16) * 4 - 1000 for p in test_images[:3] * 2])
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), affine), root / "case01.nii.gz")
    _ct_series(root / "ct_series")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("RECLMIS_DATA", raising=False)
        mp.delenv("RECLMIS_SAMPLE_DATA", raising=False)
        _workspace(root)
        yield root


# -- tests ------------------------------------------------------------------------------------------------------


def test_the_docs_have_examples_and_every_skip_names_one():
    found = examples()
    assert len(found) > 20
    stale = [start for start in SKIPPED if not any(e.text.startswith(start) for e in found)]
    assert not stale, f"SKIPPED entries that match no example any more (remove or update them): {stale}"
    assert sum(_skip_reason(e) is None for e in found) >= 10  # most cheap examples run


def test_readme_examples_run_as_written(workspace):
    ran, failed = [], []
    for example in examples():
        if _skip_reason(example) is not None:
            continue
        res = runner.invoke(app, list(example.args))
        ran.append(example.where)
        if res.exit_code != 0:
            tail = "\n".join(res.output.strip().splitlines()[-6:])
            failed.append(f"{example.where}: {example.text}\n  exit {res.exit_code}: {tail}")
    assert not failed, "examples that do not run as written:\n" + "\n".join(failed)
    assert len(ran) >= 10
    # what the examples promise to leave behind
    assert (workspace / "runs" / "predict" / "quickstart" / "syn_test_00000_cfa_overlay.png").is_file()
    assert (workspace / "scores.json").is_file() and (workspace / "per_image.csv").is_file()
    assert any(re.fullmatch(r"\d{8}-\d{6}", p.name) for p in (workspace / "runs" / "predict").iterdir())
    assert os.listdir(workspace / "results")
