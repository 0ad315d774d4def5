"""SR datasets from folders, in the standard layouts.

- ``DIR/HR/*`` + ``DIR/LR_bicubic/X{s}/<name>x{s}.<ext>``: shipped LR used as is (as in Set5);
- ``DIR/HR/*`` alone: LR made on the fly with the MATLAB-compatible bicubic;
- a plain folder of images: each image is an HR image, LR made on the fly;
- a video file (the ``video`` extra): its first ``VIDEO_FRAMES`` frames (or ``limit``), each an HR image, LR made on
  the fly; a dataset of consecutive frames (``Dataset.consecutive``: ``validate`` adds flicker).
HR is always mod-cropped to a multiple of the scale.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ScnetDeployError
from .images import list_images, mod_crop, read_rgb_u8, round_to_bits
from .resize import bicubic_degrade


VIDEO_FRAMES = 60  # a video as a dataset: its first frames, unless a limit says otherwise


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

    def __init__(self, pairs=(), unreadable=(), consecutive: bool = False) -> None:
        super().__init__(pairs)
        self.unreadable = list(unreadable)
        self.consecutive = consecutive  # the pairs are consecutive frames of a video

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
        return Dataset(kept, self.unreadable + reasons, self.consecutive)


def load_dataset(root: str | Path, scale: int, limit: int | None = None) -> Dataset:
    from .video import is_video

    root = Path(root)
    if root.is_file() and is_video(root):
        return _video_dataset(root, scale, limit or VIDEO_FRAMES)
    if not root.is_dir():
        raise DatasetError(f"--dataset '{root}' is not a folder or a video; pass a folder with HR/ (and "
                           f"LR_bicubic/X{scale}/), a folder of images, or a video file.")
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


def _video_dataset(src: Path, scale: int, frames: int) -> Dataset:
    """The first ``frames`` frames of a video (through ``imaging.video``'s checked door), as stored (rotation is
    display metadata); deep video rounded to 8 bits; corrupt packets named as one unreadable entry."""
    from .video import decode, probe

    report: dict = {}
    pairs = []
    for i, (rgb, _) in zip(range(frames), decode(probe(src), report)):
        if rgb.dtype == np.uint16:  # as a 16-bit PNG is read: round(v / 257)
            rgb = round_to_bits(rgb.astype(np.float32) / 65535.0, 8)
        hr = mod_crop(rgb, scale)
        if min(hr.shape[:2]) < scale:
            raise DatasetError(f"'{src}' has frames smaller than the scale x{scale}.")
        pairs.append(Pair(f"frame{i:05d}", bicubic_degrade(hr, scale), hr, "bicubic", f"{src}#{i}"))
    unreadable = [{"path": str(src), "error": f"{report['corrupt_packets']} corrupt packet(s) skipped"}] \
        if report.get("corrupt_packets") else []
    if not pairs:
        raise DatasetError(f"no frame FFmpeg could decode in '{src}'.")
    return Dataset(pairs, unreadable, consecutive=True)
