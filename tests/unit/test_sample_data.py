"""The bundled sample data is package data (in the wheel) and is prepared at the run's image size."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

import reclmis_core
from reclmis_core.data.datasets_registry import SAMPLE_ENV, resolve_dataset, sample_source

REPO = Path(__file__).resolve().parents[2]


def test_sample_data_lives_in_the_package_and_every_file_is_declared_package_data(monkeypatch):
    monkeypatch.delenv(SAMPLE_ENV, raising=False)
    src = sample_source()
    pkg = Path(reclmis_core.__file__).resolve().parent
    assert src == pkg / "sample_data"  # not the checkout's root: a wheel has no checkout
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["reclmis_core"]
    files = [p.relative_to(pkg).as_posix() for p in src.rglob("*") if p.is_file()]
    assert len(files) > 60
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    assert not missing, missing
    assert (REPO / "sample_data" / "Test_Folder" / "img").is_dir()  # the checkout's path still works


def test_sample_is_prepared_at_the_requested_image_size(tmp_path, monkeypatch):
    import functools

    from reclmis_core.data import datasets_registry

    monkeypatch.delenv(SAMPLE_ENV, raising=False)
    # the extra training phantoms are not what this checks; without them it runs in seconds
    monkeypatch.setattr(datasets_registry, "prepare_sample",
                        functools.partial(datasets_registry.prepare_sample, extra_phantoms=0))
    folder = resolve_dataset("sample", root=tmp_path, image_size=64)
    assert json.loads((folder / "dataset.json").read_text())["size"] == 64
    from PIL import Image

    first = next((folder / "images" / "train").iterdir())
    assert Image.open(first).size == (64, 64)
    assert resolve_dataset("sample", root=tmp_path, image_size=64) == folder  # reused
    resolve_dataset("sample", root=tmp_path, image_size=96)
    assert json.loads((folder / "dataset.json").read_text())["size"] == 96


@pytest.mark.parametrize("name", ["qata"])
def test_registered_datasets_are_not_prepared_implicitly(tmp_path, name):
    from reclmis_core.errors import DataError

    with pytest.raises(DataError, match="not prepared"):
        resolve_dataset(name, root=tmp_path, image_size=224)
