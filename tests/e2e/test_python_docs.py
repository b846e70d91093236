"""docs/python.md runs as written (issue 23): every ```python block, in order, in one namespace, from a folder
holding what the README's quickstart leaves behind (the workspace of test_readme_examples.py); so does the
README's "From Python" block."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_readme_examples import _workspace

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "python.md"
README = ROOT / "README.md"


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(1-based line of the first line, code) of each ```python block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i + 1
            i += 1
            while not lines[i].strip().startswith("```"):
                i += 1
            blocks.append((start + 1, "\n".join(lines[start:i]) + "\n"))
        i += 1
    return blocks


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("python_docs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("RECLMIS_DATA", raising=False)
        mp.delenv("RECLMIS_SAMPLE_DATA", raising=False)
        _workspace(root)
        yield root


def test_the_page_is_a_tour():
    blocks = python_blocks(PAGE)
    assert len(blocks) >= 8
    code = "".join(c for _, c in blocks)
    for call in ("reclmis_core.load(", ".predict(", "w_poi(", "reclmis_core.train(", ".evaluate(", ".export(",
                 '"ct_series"'):
        assert call in code, f"docs/python.md no longer shows {call}"


def _run_blocks(path: Path) -> None:
    namespace: dict[str, object] = {"__name__": "docs_python"}
    for line, code in python_blocks(path):
        where = f"{path.relative_to(ROOT)}:{line}"
        try:
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs' own code
        except Exception as exc:  # noqa: BLE001 - report which block failed, with its error
            raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc


def test_every_python_block_runs(workspace):
    _run_blocks(PAGE)
    assert (workspace / "runs" / "python-tiny" / "best" / "README.md").is_file()
    assert (workspace / "exports" / "python-tiny" / "README.md").is_file()
    assert (workspace / "runs" / "predict" / "ct" / "ct_series_seg.dcm").is_file()
    assert os.listdir(workspace / "runs" / "predict" / "python")


def test_the_readme_python_block_runs(workspace):
    assert len(python_blocks(README)) == 1
    _run_blocks(README)
