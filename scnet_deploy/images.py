"""Image files to arrays, with every conversion explicit.

For the SR protocol (``read_rgb_u8``): palette -> RGB through its palette; grayscale (L, I;16, I, F) -> replicated
to 3 equal channels; RGBA/LA -> alpha dropped (colour kept as stored, not composited); 16-bit -> 8-bit by
round(v / 257) (65535 -> 255 exactly); CMYK/YCbCr -> RGB by Pillow's conversion. Unreadable, truncated and
zero-size files raise ImageError (one line, naming the file).
"""

from pathlib import Path

import numpy as np

from .errors import ScnetDeployError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ScnetDeployError):
    """An image file cannot be read."""


def list_images(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _open(path: Path):
    from PIL import Image

    try:
        im = Image.open(path)
        im.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"'{path}' declares {exc} — refused as a decompression bomb; resize it first.")
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"'{path}' is not a readable image ({str(exc)[:120] or type(exc).__name__}); check the file.")
    if im.width == 0 or im.height == 0:
        raise ImageError(f"'{path}' has zero width or height.")
    return im


def _to_u8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype in (np.uint16, np.int32, np.int64, np.int16):  # 16-bit PNG/TIFF samples
        return np.clip(np.floor(a.astype(np.float64) / 257.0 + 0.5), 0, 255).astype(np.uint8)
    if a.dtype.kind == "f":  # float TIFF in [0, 1]
        return np.clip(np.floor(a.astype(np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    raise ImageError(f"unsupported sample type {a.dtype}")


def read_rgb_u8(path: str | Path) -> np.ndarray:
    """An HxWx3 uint8 RGB array, by the conversions in the module docstring."""
    path = Path(path)
    with _open(path) as im:
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            mode = im.mode
        if mode in ("RGB", "RGBA"):
            return np.array(im)[..., :3].copy()
        if mode in ("L", "LA", "1"):
            gray = _to_u8(np.array(im if mode != "LA" else im.getchannel(0)))
        elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            gray = _to_u8(np.array(im))
        else:
            return np.array(im.convert("RGB"))
    return np.repeat(gray[..., None], 3, axis=2)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_float_chw(img_u8: np.ndarray) -> np.ndarray:
    return (img_u8.transpose(2, 0, 1).astype(np.float32) / 255.0)


def to_u8_hwc(chw: np.ndarray) -> np.ndarray:
    """Model output (CHW float, nominally [0, 1]) to HxWx3 uint8: clipped, rounded half up (the protocol)."""
    return np.floor(np.clip(np.nan_to_num(chw, nan=0.0), 0.0, 1.0).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
