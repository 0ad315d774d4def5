"""SR datasets from folders, in the standard layouts.

- ``DIR/HR/*`` + ``DIR/LR_bicubic/X{s}/<name>x{s}.<ext>``: shipped LR used as is (as in Set5);
- ``DIR/HR/*`` alone: LR made on the fly with the MATLAB-compatible bicubic;
- a plain folder of images: each image is an HR image, LR made on the fly.
HR is always mod-cropped to a multiple of the scale.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ScnetDeployError
from .images import list_images, mod_crop, read_rgb_u8
from .resize import bicubic_degrade


class DatasetError(ScnetDeployError):
    """A dataset folder cannot be used."""


@dataclass
class Pair:
    name: str
    lr: np.ndarray  # HxWx3 uint8
    hr: np.ndarray  # (sH)x(sW)x3 uint8, mod-cropped
    lr_source: str  # "shipped" or "bicubic"
    path: str = ""  # the HR file


def _shipped_lr(root: Path, name: str, scale: int) -> Path | None:
    folder = root / "LR_bicubic" / f"X{scale}"
    if not folder.is_dir():
        return None
    for candidate in folder.glob(f"{name}x{scale}.*"):
        return candidate
    return None


class Dataset(list):
    """The pairs of a dataset folder (a list of ``Pair``), and the images in it that could not be read
    (``unreadable``: path and reason), which are left out rather than stopping the run."""

    def __init__(self, pairs=(), unreadable=()) -> None:
        super().__init__(pairs)
        self.unreadable = list(unreadable)

    def scorable(self, scale: int, window: int) -> "Dataset":
        """The pairs whose HR, less the ``scale``-pixel border, holds an SSIM ``window``; the others join
        ``unreadable`` with the reason."""
        too_small = lambda p: min(p.hr.shape[:2]) - 2 * scale < window  # noqa: E731
        small = [p for p in self if too_small(p)]
        reasons = [{"path": p.path or p.name, "error": f"{p.hr.shape[1]}x{p.hr.shape[0]} is too small to score at "
                    f"x{scale} (SSIM's {window}x{window} window after a {scale}-pixel border crop)"} for p in small]
        kept = [p for p in self if not too_small(p)]
        if not kept:
            raise DatasetError(f"no image of the dataset can be scored: {(self.unreadable + reasons)[0]['error']}")
        return Dataset(kept, self.unreadable + reasons)


def load_dataset(root: str | Path, scale: int, limit: int | None = None) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"--dataset '{root}' is not a folder; pass a folder with HR/ (and LR_bicubic/X{scale}/) "
                           "or a folder of images.")
    hr_dir = root / "HR" if (root / "HR").is_dir() else root
    paths = list_images(hr_dir)
    if not paths:
        raise DatasetError(f"no images in '{hr_dir}' (looked for .png, .jpg, .bmp, .tif, .webp).")
    pairs, unreadable = [], []
    for path in paths[:limit]:
        try:
            hr = mod_crop(read_rgb_u8(path), scale)
        except ScnetDeployError as e:  # one bad file: named in the results, left out of the means
            unreadable.append({"path": str(path), "error": str(e).strip().splitlines()[0]})
            continue
        if min(hr.shape[:2]) < scale:
            raise DatasetError(f"'{path}' is smaller than the scale x{scale}; remove it from the dataset.")
        shipped = _shipped_lr(root, path.stem, scale) if hr_dir != root else None
        if shipped is not None:
            lr, source = read_rgb_u8(shipped), "shipped"
            if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
                raise DatasetError(f"'{shipped}' is {lr.shape[1]}x{lr.shape[0]} but HR '{path.name}' mod-cropped is "
                                   f"{hr.shape[1]}x{hr.shape[0]} at x{scale}; the LR is not of this HR.")
        else:
            lr, source = bicubic_degrade(hr, scale), "bicubic"
        pairs.append(Pair(path.stem, lr, hr, source, str(path)))
    if not pairs:
        raise DatasetError(f"no readable image in '{hr_dir}': {unreadable[0]['error']}")
    return Dataset(pairs, unreadable)
