"""Image files to arrays, with every conversion explicit.

For the SR protocol (``read_rgb_u8``): palette -> RGB through its palette; grayscale (L, I;16, I, F) -> replicated
to 3 equal channels; RGBA/LA -> alpha dropped (colour kept as stored, not composited); 16-bit -> 8-bit by
round(v / 257) (65535 -> 255 exactly); CMYK/YCbCr -> RGB by Pillow's conversion. Unreadable, truncated and
zero-size files raise ImageError (one line, naming the file).
"""

from pathlib import Path

import numpy as np

from .errors import ImageError, ScnetDeployError  # noqa: F401 (ImageError: re-exported, its old home)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_rgb_u8(path: str | Path) -> np.ndarray:
    """An HxWx3 uint8 RGB array, by the conversions in the module docstring (on top of the full-fidelity reader,
    so the size guard and error messages are the same everywhere)."""
    from .image_io import quantize, read_image

    pixels = read_image(path).pixels
    rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    return quantize(rgb, 8)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_float_chw(img_u8: np.ndarray) -> np.ndarray:
    return (img_u8.transpose(2, 0, 1).astype(np.float32) / 255.0)


def to_u8_hwc(chw: np.ndarray) -> np.ndarray:
    """Model output (CHW float, nominally [0, 1]) to HxWx3 uint8: clipped, rounded half up (the protocol)."""
    return np.floor(np.clip(np.nan_to_num(chw, nan=0.0), 0.0, 1.0).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
