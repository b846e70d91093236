"""ManifestDataset, collate_fn, read_manifest validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from reclmis_core.config import DataConfig
from reclmis_core.data.dataset import ManifestDataset, build_loader, collate_fn, read_manifest
from reclmis_core.data.synthetic import SyntheticConfig, write_synthetic
from reclmis_core.errors import DataError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "data"
    write_synthetic(out, SyntheticConfig(n_train=8, n_val=2, n_test=4, size=64, seed=2), workers=1)
    return out


def test_items_and_batches(data_dir: Path) -> None:
    ds = ManifestDataset(data_dir, "train", image_size=32, in_channels=3, data_cfg=DataConfig(mean=0.5, std=0.25),
                         train=True, seed=1)
    assert len(ds) == 8
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, 32, 32) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["lesion_labels"].shape == (32, 32) and item["lesion_labels"].dtype == torch.long
    assert isinstance(item["note"], str) and item["id"].startswith("syn_train_")
    assert item["image"].min() >= (0 - 0.5) / 0.25 and item["image"].max() <= (1 - 0.5) / 0.25
    again = ds[0]
    assert torch.equal(item["image"], again["image"])  # deterministic per (seed, epoch, index)
    ds.set_epoch(1)
    batch = collate_fn([ds[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32) and isinstance(batch["note"], list) and len(batch["id"]) == 4
    loader = build_loader(ds, batch_size=3, shuffle=True, num_workers=0)
    assert sum(b["image"].shape[0] for b in loader) == 8


def test_eval_split_one_channel_no_cache(data_dir: Path) -> None:
    ds = ManifestDataset(data_dir, "test", image_size=64, in_channels=1, data_cfg=DataConfig(cache=False))
    item = ds[0]
    assert item["image"].shape == (1, 64, 64)
    pairs = [i for i, n in enumerate(ds.ids) if n.endswith("_cfa")]
    assert pairs  # counterfactual pairs reach the test split
    a, b = ds[pairs[0]], ds[pairs[0] + 1]
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["mask"], b["mask"])


def test_read_manifest_refuses_bad_manifests(tmp_path: Path, data_dir: Path) -> None:
    df = read_manifest(data_dir)
    assert Path(df["image"].iloc[0]).is_absolute()
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = pd.read_csv(data_dir / "manifest.csv", dtype=str, keep_default_na=False)
    raw.loc[0, "image"] = "../../etc/passwd"
    raw.to_csv(bad / "manifest.csv", index=False)
    with pytest.raises(DataError, match="resolves outside"):
        read_manifest(bad)
    raw.drop(columns=["note"]).to_csv(bad / "manifest.csv", index=False)
    with pytest.raises(DataError, match="missing column"):
        read_manifest(bad)
    raw2 = pd.read_csv(data_dir / "manifest.csv", dtype=str, keep_default_na=False)
    raw2.loc[0, "split"] = "holdout"
    raw2.to_csv(bad / "manifest.csv", index=False)
    with pytest.raises(DataError, match="split must be"):
        read_manifest(bad)
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(DataError, match="split must be"):
        ManifestDataset(data_dir, "dev", image_size=32)
