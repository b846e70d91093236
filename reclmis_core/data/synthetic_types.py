"""What both phantom generators share (:mod:`.synthetic`, family a; :mod:`.synthetic_b`, family b): the size and
mix of a set and one generated sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

FAMILIES = ("a", "b")


@dataclass
class SyntheticConfig:
    """Size and mix of a synthetic set."""

    n_train: int = 200  # (int) training images
    n_val: int = 50  # (int) validation images
    n_test: int = 50  # (int) test images (about half of them in counterfactual pairs)
    size: int = 224  # (int) image side in pixels
    seed: int = 0  # (int) master seed
    distractor_share: float = 0.5  # (float) share of images with lesions in zones the note does not name
    pair_share: float = 0.5  # (float) share of test images that belong to counterfactual pairs (family a)
    family: str = "a"  # (str) a: the QaTa-template phantoms | b: a second generator (other grammar, lesions, images; every test image a pair), see synthetic_b


@dataclass
class SyntheticItem:
    """One generated sample (counterfactual pairs give two items with the same ``image``)."""

    id: str
    split: str
    image: np.ndarray  # uint8 (S, S)
    mask: np.ndarray  # uint8 (S, S) {0, 1}: named lesions only
    lesion_labels: np.ndarray  # uint8 (S, S): zone code of every lesion pixel (named or not)
    note: str
    named: list[int]  # zone codes the note names
    distractors: list[int]  # zone codes with lesions the note does not name
    pair: str = ""  # counterfactual pair id ("" when not in a pair)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
