"""Calibration and hold-out data: deterministic LR crops, from any image folder or from images that ship with an
installed package (scikit-image's sample photographs), so INT8 export works on a fresh machine.

One data contract for calibration and benchmarking: a re-iterable of float32 NCHW LR arrays in [0, 1].
Calibration and hold-out images never overlap: the sources are split by name before any crop is taken, and the
generated content of each (calibration/content.py) uses its own seeds.

Photographs alone do not predict other content, so the hold-out that gates the INT8 budget mixes held-out
photographs with generated line art, text, flat colours and textures and scikit-image's scanned text, silhouette
and texture (``--holdout DIR`` replaces it with the user's own). ``content_mix`` also adds generated content to the
calibration crops; measured, that costs photographs more than it gains (benchmarks/results/int8_variants.md), so
it is off by default.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from scnet_deploy.build_options import CalibOptions
from scnet_deploy.calibration.content import GENERATORS, skimage_image
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.imaging.images import centre_crop, list_images, mod_crop, read_rgb_u8
from scnet_deploy.imaging.resize import bicubic_degrade

# scikit-image sample photographs (bundled with the package, no download): calibration and hold-out, disjoint.
SKIMAGE_CALIBRATION = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
SKIMAGE_HOLDOUT = ("chelsea", "clock")
# Generated content: seeds for calibration crops and for the hold-out never meet (evaluation uses seeds >= 100).
CONTENT_CALIBRATION_SEEDS = (10, 11)
CONTENT_HOLDOUT_SEEDS = (0,)
# scikit-image images of other content in the hold-out: scanned text, a binary silhouette, texture.
SKIMAGE_HOLDOUT_CONTENT = (("text", "text"), ("horse", "line-art"), ("gravel", "textures"))


Loader = Callable[[], np.ndarray]  # reads an image as HxWx3 uint8 RGB when called


def _sources(options: CalibOptions) -> tuple[list[tuple[str, Loader]], list[tuple[str, Loader]]]:
    """(calibration, hold-out) lists of (name, loader); disjoint by construction."""
    if options.data is None:
        try:
            import skimage.data  # noqa: F401
        except ImportError:
            raise ScnetDeployError("the default calibration images come from scikit-image, which is not installed; "
                                   "pip install scikit-image, or pass --calib-data DIR.")
        as_loader = lambda n: (f"skimage:{n}", lambda: skimage_image(n))  # noqa: E731
        return [as_loader(n) for n in SKIMAGE_CALIBRATION], [as_loader(n) for n in SKIMAGE_HOLDOUT]
    folder = Path(options.data)
    if not folder.is_dir():
        raise ScnetDeployError(f"--calib-data '{folder}' is not a folder of images.")
    hr = folder / "HR" if (folder / "HR").is_dir() else folder
    paths = list_images(hr)
    if len(paths) < 2:
        raise ScnetDeployError(f"--calib-data '{hr}' has {len(paths)} image(s); calibration needs at least 2 (one is "
                               "held out to measure drift).")
    n_hold = max(1, int(round(len(paths) * options.holdout_fraction)))
    loaders = [(str(p), (lambda p=p: read_rgb_u8(p))) for p in paths]
    return loaders[:-n_hold], loaders[-n_hold:]


class CalibrationSet:
    """Deterministic LR crops (re-iterable; ``len``; ``sources`` names the images used)."""

    def __init__(self, arrays: list[np.ndarray], sources: list[str]) -> None:
        self.arrays, self.sources = arrays, sources

    def __iter__(self):
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)


def _lr_of(image: np.ndarray, scale: int, lr_input: bool) -> np.ndarray:
    return image if lr_input else bicubic_degrade(mod_crop(image, scale), scale)


def _crops(lrs: list[np.ndarray], count: int, side: int, rng) -> list[np.ndarray]:
    arrays = []
    for i in range(count):
        lr = lrs[i % len(lrs)]  # round-robin over images, random position: every image contributes
        c = min(side, *lr.shape[:2])
        y, x = rng.integers(lr.shape[0] - c + 1), rng.integers(lr.shape[1] - c + 1)
        arrays.append(lr[y:y + c, x:x + c].transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    return arrays


def content_share(options: CalibOptions) -> int:
    """How many of ``options.count`` crops come from generated content (a quarter; none when mixing is off)."""
    return options.count // 4 if options.content_mix and options.count >= 4 else 0


def calibration_set(options: CalibOptions, scale: int, exclude: set[str] = frozenset()) -> CalibrationSet:
    """``options.count`` LR crops of side ``options.crop`` from the calibration sources (never from ``exclude``),
    a quarter of them from generated content when ``options.content_mix`` is on."""
    if options.count < 1 or options.crop < 4:
        raise ScnetDeployError(f"--calib-count must be >= 1 and the crop >= 4 (got {options.count}, {options.crop}).")
    sources, _ = _sources(options)
    sources = [(n, f) for n, f in sources if n not in exclude and Path(n).stem not in exclude]
    if not sources:
        raise ScnetDeployError("every calibration image is also a validation image; pass other --calib-data.")
    rng = np.random.default_rng(options.seed)
    n_content = content_share(options)
    arrays = _crops([_lr_of(load(), scale, options.lr_input) for _, load in sources], options.count - n_content, options.crop, rng)
    names = [n for n, _ in sources]
    if n_content:
        generated = [(f"generated:{kind}:{seed}", make(seed)) for seed in CONTENT_CALIBRATION_SEEDS
                     for kind, make in GENERATORS.items()]
        arrays += _crops([_lr_of(image, scale, False) for _, image in generated], n_content, options.crop, rng)
        names += [n for n, _ in generated]
    return CalibrationSet(arrays, names)


@dataclass(frozen=True)
class HoldoutImage:
    name: str
    content: str  # content type: photo, line-art, text, flat-colours, textures, or the user's sub-folder name
    lr: np.ndarray  # uint8 HWC
    hr: np.ndarray  # uint8 HWC, mod-cropped to the scale


def _centre_pair(image: np.ndarray, scale: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    hr = mod_crop(image, scale)
    crop = centre_crop(hr, min(size * scale, hr.shape[0]), min(size * scale, hr.shape[1]), scale)
    return bicubic_degrade(crop, scale), crop


def _user_holdout(folder: Path) -> list[tuple[str, str, Loader]]:
    if not folder.is_dir():
        raise ScnetDeployError(f"--holdout '{folder}' is not a folder of images.")
    found = [(str(p), "holdout", (lambda p=p: read_rgb_u8(p))) for p in list_images(folder)]
    for sub in sorted(d for d in folder.iterdir() if d.is_dir()):
        found += [(str(p), sub.name, (lambda p=p: read_rgb_u8(p))) for p in list_images(sub)]
    if not found:
        raise ScnetDeployError(f"--holdout '{folder}' has no images (PNG, JPEG, BMP, TIFF, WebP; sub-folders name "
                               "content types).")
    return found


def holdout_set(options: CalibOptions, scale: int, size: int = 96) -> list[HoldoutImage]:
    """Held-out (LR, HR) uint8 pairs that gate the INT8 budget: a centre crop of ``size`` LR pixels per image.

    ``options.holdout``: the user's folder, alone. Otherwise the calibration source's held-out photographs plus
    generated line art, text, flat colours and textures and scikit-image's scanned text, silhouette and texture:
    content a photo-only hold-out does not predict."""
    if options.holdout is not None:
        entries = _user_holdout(Path(options.holdout))
    else:
        _, photos = _sources(options)
        entries = [(n, "photo", load) for n, load in photos]
        entries += [(f"generated:{kind}:{seed}", kind, (lambda m=make, s=seed: m(s)))
                    for seed in CONTENT_HOLDOUT_SEEDS for kind, make in GENERATORS.items()]
        entries += [(f"skimage:{n}", kind, (lambda n=n: skimage_image(n))) for n, kind in SKIMAGE_HOLDOUT_CONTENT]
    items = []
    for name, content, load in entries:
        lr, hr = _centre_pair(load(), scale, size)
        items.append(HoldoutImage(name, content, lr, hr))
    return items
