"""Calibration and hold-out data: deterministic LR crops, from any image folder or from images that ship with an
installed package (scikit-image's sample photographs), so INT8 export works on a fresh machine.

One data contract for calibration and benchmarking: a re-iterable of float32 NCHW LR arrays in [0, 1].
Calibration and hold-out images never overlap: the sources are split by name before any crop is taken.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.images import list_images, mod_crop, read_rgb_u8
from scnet_deploy.resize import bicubic_degrade

# scikit-image sample photographs (bundled with the package, no download): calibration and hold-out, disjoint.
SKIMAGE_CALIBRATION = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
SKIMAGE_HOLDOUT = ("chelsea", "motorcycle")


@dataclass(frozen=True)
class CalibOptions:
    data: Path | None = None  # image folder (HR, degraded with MATLAB bicubic; or LR as is with lr_input)
    count: int = 32  # number of LR crops
    crop: int = 48  # LR crop side
    seed: int = 0
    lr_input: bool = False  # the folder holds LR images: crop them as they are
    holdout_fraction: float = 0.25  # of a folder's images, kept out of calibration for the budget check
    method: str = "minmax"  # minmax | entropy | percentile (ONNX Runtime / TensorRT calibration)


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    return np.ascontiguousarray(image[..., :3])


def _sources(options: CalibOptions) -> tuple[list[tuple[str, object]], list[tuple[str, object]]]:
    """(calibration, hold-out) lists of (name, loader); disjoint by construction."""
    if options.data is None:
        try:
            import skimage.data  # noqa: F401
        except ImportError:
            raise ScnetDeployError("the default calibration images come from scikit-image, which is not installed; "
                                   "pip install scikit-image, or pass --calib-data DIR.")
        as_loader = lambda n: (f"skimage:{n}", lambda: _skimage(n))  # noqa: E731
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


def calibration_set(options: CalibOptions, scale: int, exclude: set[str] = frozenset()) -> CalibrationSet:
    """``options.count`` LR crops of side ``options.crop`` from the calibration sources (never from ``exclude``)."""
    if options.count < 1 or options.crop < 4:
        raise ScnetDeployError(f"--calib-count must be >= 1 and the crop >= 4 (got {options.count}, {options.crop}).")
    sources, _ = _sources(options)
    sources = [(n, f) for n, f in sources if n not in exclude and Path(n).stem not in exclude]
    if not sources:
        raise ScnetDeployError("every calibration image is also a validation image; pass other --calib-data.")
    lrs = [_lr_of(load(), scale, options.lr_input) for _, load in sources]
    rng = np.random.default_rng(options.seed)
    arrays = []
    for i in range(options.count):
        lr = lrs[i % len(lrs)]  # round-robin over images, random position: every image contributes
        c = min(options.crop, *lr.shape[:2])
        y, x = rng.integers(lr.shape[0] - c + 1), rng.integers(lr.shape[1] - c + 1)
        arrays.append(lr[y:y + c, x:x + c].transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    return CalibrationSet(arrays, [n for n, _ in sources])


def holdout_pairs(options: CalibOptions, scale: int, size: int = 96) -> tuple[list[tuple[np.ndarray, np.ndarray]],
                                                                              list[str]]:
    """Held-out (LR, HR) uint8 pairs for drift checks: a centre HR crop of ``size`` (x scale-aligned) per image."""
    _, sources = _sources(options)
    pairs = []
    for _, load in sources:
        hr = mod_crop(load(), scale)
        side = min(size * scale, hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale)
        y, x = (hr.shape[0] - side) // 2 // scale * scale, (hr.shape[1] - side) // 2 // scale * scale
        crop = hr[y:y + side, x:x + side]
        pairs.append((bicubic_degrade(crop, scale), crop))
    return pairs, [n for n, _ in sources]
