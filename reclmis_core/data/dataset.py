"""The manifest Dataset: what ``train``, ``eval`` and ``predict --data`` read from a prepared DATA_DIR.

Images, masks and lesion label maps of a split are decoded and resized once, at construction, into contiguous
uint8 arrays (the cache). Epochs then only index memory and augment; with ``num_workers > 0`` the forked
workers share the arrays copy-on-write.

Example:
    >>> ds = ManifestDataset("data/sample", "train", image_size=96, in_channels=3, data_cfg=DataConfig(), train=True)
    >>> loader = build_loader(ds, batch_size=16, shuffle=True, num_workers=2, device="cuda")
    >>> batch = next(iter(loader))   # image (B,3,96,96), mask (B,1,96,96), note [str], id [str]
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from ..config_schema import DataConfig
from ..errors import DataError
from .data_dir import MANIFEST_COLUMNS
from .layouts import SPLITS
from .note_augment import augment_note
from .preprocessor import Preprocessor
from .transforms import Sample, TrainAugment, counterfactual

log = logging.getLogger(__name__)

_PATH_COLUMNS = ("image", "mask", "lesion_labels")


def resolve_data_path(data_dir: Path, value: str) -> Path:
    """A manifest path: relative to DATA_DIR (must stay inside it) or absolute (used as given)."""
    p = Path(value)
    if p.is_absolute():
        return p
    full = data_dir / p
    try:
        full.resolve().relative_to(data_dir.resolve())
    except ValueError:
        raise DataError(f"{data_dir / 'manifest.csv'}: path '{value}' resolves outside {data_dir}") from None
    return full


def read_manifest(data_dir: str | Path) -> pd.DataFrame:
    """Load and validate ``DATA_DIR/manifest.csv``.

    Checks the required columns, split values, unique ids, non-empty notes and that relative paths stay inside
    DATA_DIR. Path columns come back as absolute path strings.

    Raises:
        DataError: naming the manifest and the problem (and how to fix it: rerun ``reclmis prepare``).
    """
    data_dir = Path(data_dir)
    path = data_dir / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found; is {data_dir} a folder made by 'reclmis prepare'?")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; rerun 'reclmis prepare'")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise DataError(f"{path}: split must be train, val or test, found {', '.join(map(repr, bad))}")
    dup = df["id"][df["id"].duplicated()].tolist()
    if dup:
        raise DataError(f"{path}: duplicate id '{dup[0]}' ({len(dup)} duplicates)")
    empty = df["id"][df["note"].str.strip() == ""].tolist()
    if empty:
        raise DataError(f"{path}: empty note for id '{empty[0]}' ({len(empty)} empty)")
    for col in _PATH_COLUMNS:
        if col not in df.columns:
            continue
        df[col] = [str(resolve_data_path(data_dir, v)) if v else "" for v in df[col]]
    for col in ("height", "width"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype(int)
    return df


def _load_png(path: str, size: int, nearest: bool, channels: int) -> np.ndarray:
    """Decode a manifest image as uint8 with ``channels`` (1 or 3) channels at ``size`` x ``size``."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith("I"):  # 16/32-bit (hand-made manifests): scale to 8 bit
                a = np.asarray(img).astype(np.float32)
                img = Image.fromarray(((a - a.min()) * (255.0 / max(float(a.max() - a.min()), 1e-6))).astype(np.uint8))
            img = img.convert("L" if channels == 1 else "RGB") if img.mode != ("L" if channels == 1 else "RGB") else img
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
            return np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: file listed in manifest.csv not found; rerun 'reclmis prepare'") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image listed in manifest.csv ({exc})") from None


def _model_image(pre: Preprocessor, path: str) -> np.ndarray:
    """A manifest image as the model sees it: read and brought to the model side by the preprocessor."""
    if not Path(path).is_file():
        raise DataError(f"{path}: file listed in manifest.csv not found; rerun 'reclmis prepare'")
    try:
        pixels, meta = pre.load(path)
    except DataError as exc:
        raise DataError(f"unreadable image listed in manifest.csv: {exc}") from None
    return pre.to_model(pixels[0], pre.geometry(pixels.shape[1:3], meta))


def _check_prepared_size(data_dir: Path, frame: pd.DataFrame, pre: Preprocessor) -> None:
    """Refuse pixels that ``prepare --size N`` already resized to another side than the model's: resizing them
    again would feed training other pixels than predict feeds for the same file (two resizes against one)."""
    path = data_dir / "dataset.json"
    if not path.is_file():
        return
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); rerun 'reclmis prepare'") from None
    if "native" not in doc and doc.get("layout") != "synthetic" and int(doc.get("size", 0)) != pre.image_size:
        log.warning("%s was prepared at %s px by an older reclmis and the model takes %d px: its images are resized "
                    "twice, unlike predict's; rerun 'reclmis prepare' (native size is the default now)", data_dir,
                    doc.get("size"), pre.image_size)
    if doc.get("native", True) or int(doc.get("size", 0)) == pre.image_size:
        resized = int(((frame["height"] != pre.image_size) | (frame["width"] != pre.image_size)).sum())
        note = None if doc.get("native", True) or not resized else pre.resized_source_note(resized, len(frame))
        if note:
            log.warning("%s", note)
        return
    raise DataError(
        f"{data_dir} was prepared at {doc.get('size')} px and the model takes {pre.image_size} px: its images "
        f"would be resized twice, unlike predict's; rerun 'reclmis prepare' with --size 0 (native, the default) "
        f"or --size {pre.image_size}"
    )


def _is_rgb(path: str) -> bool:
    try:
        with Image.open(path) as img:
            return img.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr")
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return False


class ManifestDataset(Dataset):
    """One split of a prepared DATA_DIR.

    Items are dicts: ``image`` FloatTensor[C, S, S] as :attr:`preprocessor` makes it, ``mask`` FloatTensor[1, S, S]
    in {0, 1}, ``note`` str, ``id`` str, and ``lesion_labels`` LongTensor[S, S] when the manifest has that column
    (zone codes, see :mod:`.synthetic`; zeros for rows without a map).

    Each image is read and brought to the model side by the :class:`~.preprocessor.Preprocessor` (one resize
    from the prepared pixels, which ``prepare`` stores at native size by default), exactly as predict does with
    the original file.

    Args:
        data_dir: prepared folder holding ``manifest.csv``.
        split: ``train``, ``val`` or ``test``.
        image_size: side the model expects (ignored when ``preprocessor`` is given).
        in_channels: 1 or 3 (ignored when ``preprocessor`` is given).
        data_cfg: ``DataConfig`` (cache, augment, hflip, rotate_deg, mean, std, preprocessing).
        train: apply :class:`TrainAugment` (deterministic per (seed, epoch, index); see :meth:`set_epoch`).
        seed: augmentation seed.
        preprocessor: the model's (a checkpoint's, or the training split's for validation); None builds one
            from ``data_cfg`` with colour kept when this split's first image is colour (training).
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        image_size: int | None = None,
        in_channels: int = 3,
        data_cfg: DataConfig | None = None,
        train: bool = False,
        seed: int = 0,
        preprocessor: Preprocessor | None = None,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"split must be train, val or test, got '{split}'")
        self.data_dir = Path(data_dir)
        self.split = split
        self.cfg = data_cfg or DataConfig()
        self.train = train
        self.seed = seed
        df = read_manifest(self.data_dir)
        self.frame = df[df["split"] == split].reset_index(drop=True)
        if len(self.frame) == 0:
            raise DataError(f"{self.data_dir / 'manifest.csv'}: no '{split}' rows")
        self.ids: list[str] = self.frame["id"].tolist()
        self.notes: list[str] = self.frame["note"].tolist()
        self.has_lesion_labels = "lesion_labels" in self.frame.columns
        if preprocessor is None:
            if image_size is None:
                raise DataError("ManifestDataset needs image_size or a preprocessor")
            if in_channels not in (1, 3):
                raise DataError(f"in_channels must be 1 or 3, got {in_channels}")
            # colour is kept only when the data has it (saturation/hue augmentation then applies)
            colour = _is_rgb(self.frame["image"].iloc[0]) and in_channels == 3
            preprocessor = Preprocessor.build(self.cfg.preprocessing, image_size, in_channels, self.cfg.mean,
                                              self.cfg.std, colour)
        self.preprocessor = preprocessor
        self.image_size = preprocessor.image_size
        self.in_channels = preprocessor.in_channels
        self.colour = preprocessor.keeps_colour  # the cache holds (S, S, 3) images
        _check_prepared_size(self.data_dir, self.frame, preprocessor)
        self.augment = TrainAugment(self.cfg) if train else None
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        if self.cfg.cache:
            self._fill_cache()

    # ------------------------------------------------------------------ cache
    def _decode(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        row = self.frame.iloc[i]
        s = self.image_size
        image = _model_image(self.preprocessor, row["image"])
        mask = (_load_png(row["mask"], s, True, 1) > 0).astype(np.uint8)
        labels = None
        if self.has_lesion_labels:
            labels = (_load_png(row["lesion_labels"], s, True, 1) if row["lesion_labels"]
                      else np.zeros((s, s), dtype=np.uint8))
        return image, mask, labels

    def _fill_cache(self) -> None:
        n, s = len(self.frame), self.image_size
        shape = (n, s, s, 3) if self.colour else (n, s, s)
        images = np.empty(shape, dtype=np.uint8)
        masks = np.empty((n, s, s), dtype=np.uint8)
        labels = np.zeros((n, s, s), dtype=np.uint8) if self.has_lesion_labels else None

        def put(i: int) -> None:
            img, m, lab = self._decode(i)
            images[i], masks[i] = img, m
            if labels is not None and lab is not None:
                labels[i] = lab

        with ThreadPoolExecutor(max_workers=4) as pool:  # PIL decodes without the GIL
            list(pool.map(put, range(n)))
        self._images, self._masks, self._labels = images, masks, labels
        log.debug("cached %d %s images at %d px (%.1f MB)", n, self.split, s, (images.nbytes + masks.nbytes) / 1e6)

    # ------------------------------------------------------------------ api
    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (shared with worker processes)."""
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self.frame)

    def raw(self, index: int) -> Sample:
        """The cached uint8 sample before augmentation and tensor conversion."""
        if self._images is not None and self._masks is not None:
            labels = self._labels[index] if self._labels is not None else None
            return Sample(self._images[index], self._masks[index], self.notes[index], labels)
        image, mask, labels = self._decode(index)
        return Sample(image, mask, self.notes[index], labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.raw(index)
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, int(self._epoch[0]), index))
            if self.cfg.counterfactual > 0 and rng.random() < self.cfg.counterfactual:
                sample = counterfactual(sample, rng)
            if self.cfg.note_augment > 0 and rng.random() < self.cfg.note_augment:
                sample = replace(sample, note=augment_note(sample.note, rng))
            sample = self.augment(sample, rng)
        item: dict[str, Any] = {
            "image": torch.from_numpy(self.preprocessor.to_tensor(sample.image[None])[0]),
            "mask": torch.from_numpy(_writable(sample.mask)).float().unsqueeze(0),
            "note": sample.note,
            "id": self.ids[index],
        }
        if self.has_lesion_labels:
            labels = sample.lesion_labels if sample.lesion_labels is not None else np.zeros_like(sample.mask)
            item["lesion_labels"] = torch.from_numpy(_writable(labels)).long()
        return item


def _writable(arr: np.ndarray) -> np.ndarray:
    """Contiguous and writable (PIL hands back read-only views; torch warns on those)."""
    return arr if arr.flags.c_contiguous and arr.flags.writeable else np.array(arr, order="C", copy=True)


def collate_fn(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep ``note`` and ``id`` (and any other non-tensor field) as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


def build_loader(
    dataset: ManifestDataset,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """A DataLoader with :func:`collate_fn`, pinned memory on CUDA and persistent workers when ``num_workers``."""
    pin = torch.device(device).type == "cuda"
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        generator=generator,
    )
