"""Training augmentations that keep image, mask, lesion labels and note consistent.

From the paper: Gaussian blur with a random sigma, contrast distortion, and saturation/hue distortion (colour
inputs only). Added: small rotations (the reference code uses up to 20 degrees) and a *spatially honest*
left-right flip: flipping the image mirrors the anatomy, so the note's "left" and "right" are swapped and the
lesion label map's zone codes are swapped too. No 90-degree rotations and no up-down flips: they would
scramble upper/lower and left/right relative to the note.

All randomness comes from the ``numpy.random.Generator`` passed in, so a sample is reproducible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from ..config_schema import DataConfig
from ..errors import ConfigError
from .note_text import ZONE_CODES, format_note

# The side words of the zone reader (note_text): left/right, Lt/Rt and the side letter of lobe/zone abbreviations
# (RUL <-> LUL, LLZ <-> RLZ).
_LR_RE = re.compile(r"\b(?:(?:left|right|lt|rt)\b|[rl](?=[uml][lz]\b))", re.IGNORECASE)
_SWAP = {"left": "right", "right": "left", "lt": "rt", "rt": "lt", "l": "r", "r": "l"}
#: Zone codes of the synthetic lesion label maps swap right <-> left on a flip (1..3 <-> 4..6).
FLIP_ZONE = np.array([0, 4, 5, 6, 1, 2, 3] + list(range(7, 256)), dtype=np.uint8)
MAX_ROTATION_DEG = 30.0


def _match_case(word: str, template: str) -> str:
    if template.isupper():
        return word.upper()
    if template[0].isupper():
        return word.capitalize()
    return word


def flip_note_laterality(note: str) -> str:
    """Swap the words "left" and "right", "Lt" and "Rt" and the side of abbreviations such as RUL (whole words, case
    kept): what a left-right image flip implies.

    "bilateral"/"unilateral" and words that merely contain "left"/"right" are untouched.

    Example:
        >>> flip_note_laterality("Unilateral pulmonary infection, one infected area, Upper LEFT lung.")
        'Unilateral pulmonary infection, one infected area, Upper RIGHT lung.'
    """
    return _LR_RE.sub(lambda m: _match_case(_SWAP[m.group(0).lower()], m.group(0)), note)


@dataclass
class Sample:
    """One training sample before tensor conversion."""

    image: np.ndarray  # uint8 (H, W) or (H, W, 3)
    mask: np.ndarray  # uint8 (H, W) in {0, 1}
    note: str
    lesion_labels: np.ndarray | None = None  # uint8 (H, W) zone codes


def counterfactual(sample: Sample, rng: np.random.Generator) -> Sample:
    """The same pixels with another note and its mask: a random non-empty subset of the lesions of the label map,
    named in the ``plain`` style (``"upper left and lower right lung"``), and the mask of exactly those lesions.

    What a counterfactual pair teaches (same image, two notes, two masks), drawn afresh at every epoch; samples
    without a label map or with one lesion come back unchanged.

    Example:
        >>> s = counterfactual(Sample(img, mask, note, labels), np.random.default_rng(0))
    """
    if sample.lesion_labels is None:
        return sample
    codes = [int(c) for c in np.unique(sample.lesion_labels) if 0 < c <= len(ZONE_CODES)]
    if len(codes) < 2:
        return sample
    k = int(rng.integers(1, len(codes) + 1))
    chosen = sorted(int(c) for c in rng.choice(codes, size=k, replace=False))
    return Sample(sample.image, np.isin(sample.lesion_labels, chosen).astype(np.uint8),
                  format_note([[c] for c in chosen], "plain"), sample.lesion_labels)


def hflip(sample: Sample) -> Sample:
    """Mirror left-right: image, mask, lesion labels (with zone codes swapped) and the note together."""
    labels = None
    if sample.lesion_labels is not None:
        labels = FLIP_ZONE[np.ascontiguousarray(sample.lesion_labels[:, ::-1])]
    return Sample(
        image=np.ascontiguousarray(sample.image[:, ::-1]),
        mask=np.ascontiguousarray(sample.mask[:, ::-1]),
        note=flip_note_laterality(sample.note),
        lesion_labels=labels,
    )


def rotate(sample: Sample, degrees: float) -> Sample:
    """Rotate about the centre (bilinear image, nearest mask/labels, zero fill)."""
    def rot(a: np.ndarray, nearest: bool) -> np.ndarray:
        res = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
        return np.asarray(Image.fromarray(a).rotate(degrees, resample=res, fillcolor=0))

    return Sample(
        image=rot(sample.image, False),
        mask=rot(sample.mask, True),
        note=sample.note,
        lesion_labels=None if sample.lesion_labels is None else rot(sample.lesion_labels, True),
    )


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=float(sigma))))


def contrast(image: np.ndarray, factor: float, shift: float = 0.0) -> np.ndarray:
    """Scale intensities about the image mean by ``factor`` and add ``shift`` (grey levels)."""
    x = image.astype(np.float32)
    mean = float(x.mean())
    return np.clip((x - mean) * factor + mean + shift + 0.5, 0, 255).astype(np.uint8)


def saturation_hue(image: np.ndarray, saturation: float, hue: float) -> np.ndarray:
    """Colour images only: scale saturation, rotate hue by ``hue`` (fraction of a turn)."""
    hsv = np.asarray(Image.fromarray(image).convert("HSV")).copy()
    h = hsv[..., 0].astype(np.int16) + int(round(hue * 255))
    hsv[..., 0] = np.mod(h, 256).astype(np.uint8)
    hsv[..., 1] = np.clip(hsv[..., 1].astype(np.float32) * saturation, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"))


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    """Intensity gamma: ``255 * (x / 255) ** g``."""
    return np.clip(255.0 * (image.astype(np.float32) / 255.0) ** g + 0.5, 0, 255).astype(np.uint8)


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add zero-mean Gaussian noise of ``sigma`` grey levels."""
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def low_resolution(image: np.ndarray, zoom: float) -> np.ndarray:
    """Down-sample by ``zoom`` (< 1) and back up (bilinear): the blur of a scan taken at a coarser resolution."""
    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((max(1, round(w * zoom)), max(1, round(h * zoom))), Image.BILINEAR)
    return np.asarray(small.resize((w, h), Image.BILINEAR))


def lesion_contrast(image: np.ndarray, region: np.ndarray, factor: float) -> np.ndarray:
    """Scale the difference between the lesions in ``region`` and the tissue around them by ``factor``: a fainter
    (< 1) or denser (> 1) lesion of the same shape. The tissue under a lesion is the image outside the (dilated)
    region, spread in by normalised convolution; the change fades out over two pixels beyond the region, where a
    lesion's rim lies."""
    from scipy import ndimage

    inside = region > 0
    if not inside.any():
        return image
    x = image.astype(np.float32)
    grown = ndimage.binary_dilation(inside, iterations=2)
    outside = (~grown).astype(np.float32)
    spread = 0.08 * max(image.shape[:2])
    weight = np.maximum(ndimage.gaussian_filter(outside, spread), 1e-3)
    soft = np.clip(ndimage.gaussian_filter(grown.astype(np.float32), 1.0) * 1.5, 0.0, 1.0)
    if x.ndim == 3:
        bg = np.stack([ndimage.gaussian_filter(x[..., c] * outside, spread) / weight for c in range(x.shape[2])], -1)
        soft = soft[..., None]
    else:
        bg = ndimage.gaussian_filter(x * outside, spread) / weight
    return np.clip(x + (factor - 1.0) * soft * (x - bg) + 0.5, 0, 255).astype(np.uint8)


def is_colour(image: np.ndarray) -> bool:
    return image.ndim == 3 and image.shape[2] == 3 and not (
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    )


class TrainAugment:
    """The training pipeline: honest flip, small rotation, blur, contrast, colour (colour inputs only).

    Args:
        cfg: ``DataConfig`` (``augment``, ``hflip``, ``rotate_deg``).

    Example:
        >>> aug = TrainAugment(DataConfig())
        >>> out = aug(Sample(img, mask, "upper left lung"), np.random.default_rng(0))
    """

    p_flip = 0.5
    p_rotate = 0.5
    p_blur = 0.3
    blur_sigma = (0.1, 1.5)
    p_contrast = 0.5
    contrast_range = (0.75, 1.25)
    brightness = 0.08  # fraction of 255
    p_colour = 0.5
    saturation_range = (0.8, 1.2)
    hue_range = 0.03
    # data.domain_augment: images from another scanner or generator (nnU-Net's intensity and resolution transforms)
    gamma_range = (0.7, 1.5)
    noise_sigma = (0.0, 12.0)  # grey levels
    zoom_range = (0.5, 1.0)
    wide_contrast = (0.65, 1.5)
    lesion_factor = (0.35, 1.25)  # data.lesion_contrast

    def __init__(self, cfg: DataConfig) -> None:
        if abs(cfg.rotate_deg) > MAX_ROTATION_DEG:
            raise ConfigError(
                f"data.rotate_deg must be <= {MAX_ROTATION_DEG:g} degrees (larger turns scramble upper/lower "
                f"and left/right relative to the note), got {cfg.rotate_deg}"
            )
        self.cfg = cfg

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        cfg = self.cfg
        # Draw every random number in a fixed order so a sample depends only on the generator's seed.
        u = rng.random(5)
        angle = float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if cfg.rotate_deg else 0.0
        sigma = float(rng.uniform(*self.blur_sigma))
        factor = float(rng.uniform(*self.contrast_range))
        shift = float(rng.uniform(-self.brightness, self.brightness)) * 255
        sat = float(rng.uniform(*self.saturation_range))
        hue = float(rng.uniform(-self.hue_range, self.hue_range))
        if not cfg.augment:
            return sample
        if cfg.hflip and u[0] < self.p_flip:
            sample = hflip(sample)
        if angle and u[1] < self.p_rotate:
            sample = rotate(sample, angle)
        image = sample.image
        if u[2] < self.p_blur:
            image = gaussian_blur(image, sigma)
        if u[3] < self.p_contrast:
            image = contrast(image, factor, shift)
        if u[4] < self.p_colour and is_colour(image):
            image = saturation_hue(image, sat, hue)
        if cfg.lesion_contrast > 0 and rng.random() < cfg.lesion_contrast:
            labels = sample.lesion_labels
            region = labels if labels is not None and labels.any() else sample.mask
            image = lesion_contrast(image, region, float(rng.uniform(*self.lesion_factor)))
        if cfg.domain_augment > 0 and rng.random() < cfg.domain_augment:
            image = self._domain(image, rng)
        return Sample(image, sample.mask, sample.note, sample.lesion_labels)

    def _domain(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each of gamma, wide contrast, simulated low resolution and noise with probability 1/2 (drawn in a
        fixed order; only when ``data.domain_augment`` picks the sample, so other recipes draw as before)."""
        u = rng.random(4)
        g, factor = float(rng.uniform(*self.gamma_range)), float(rng.uniform(*self.wide_contrast))
        zoom, sigma = float(rng.uniform(*self.zoom_range)), float(rng.uniform(*self.noise_sigma))
        if u[0] < 0.5:
            image = gamma(image, g)
        if u[1] < 0.5:
            image = contrast(image, factor)
        if u[2] < 0.5:
            image = low_resolution(image, zoom)
        if u[3] < 0.5:
            image = gaussian_noise(image, sigma, rng)
        return image
