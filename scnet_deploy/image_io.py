"""Full-fidelity image I/O for ``upscale``: bit depth, grayscale and alpha are kept.

``read_image`` returns float32 HxWxC in [0, 1] (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) and the bit depth (8 or
16). The size is checked from the header before any pixel is decoded (decompression bombs are refused).
8-bit files go through Pillow; 16-bit colour PNGs, which Pillow reduces to 8 bits, through pypng.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError

MAX_PIXELS = 200_000_000  # refuse larger inputs before decoding (an 8K frame is 33 MP)
WRITE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class LoadedImage:
    pixels: np.ndarray  # float32 HxWxC in [0, 1]
    bits: int  # 8 or 16

    @property
    def channels(self) -> int:
        return self.pixels.shape[2]


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"'{path}' has zero width or height ({width}x{height}).")
    if width * height > max_pixels:
        raise ImageError(f"'{path}' declares {width}x{height} = {width * height / 1e6:.0f} MP, over the "
                         f"{max_pixels / 1e6:.0f} MP limit; refused before decoding (decompression bomb guard). "
                         "Resize it first.")


def _png_is_16bit_colour(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(33)
    # PNG signature, then the IHDR chunk: width, height, bit depth, colour type (2 RGB, 6 RGBA)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 26 and head[24] == 16 and head[25] in (2, 6)


def _read_png16(path: Path, max_pixels: int) -> LoadedImage:
    import png

    try:
        reader = png.Reader(filename=str(path))
        width, height, rows, info = reader.asDirect()
        _check_size(path, width, height, max_pixels)
        planes = info["planes"]
        data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, planes)
    except (png.Error, ValueError, EOFError, OSError) as exc:
        raise ImageError(f"'{path}' is not a readable PNG ({str(exc)[:120]}); check the file.")
    return LoadedImage((data.astype(np.float32) / 65535.0), 16)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"'{path}' does not exist.")
    if path.stat().st_size == 0:
        raise ImageError(f"'{path}' is empty (0 bytes).")
    if _png_is_16bit_colour(path):
        return _read_png16(path, max_pixels)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, from the header, before decoding
    try:
        with Image.open(path) as im:
            _check_size(path, im.width, im.height, max_pixels)
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("1", "CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
                im = im.convert("RGB")
            mode = im.mode
            a = np.asarray(im)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many kinds on corrupt data
        raise ImageError(f"'{path}' is not a readable image ({str(exc)[:120] or type(exc).__name__}); check the file.")
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return LoadedImage((np.clip(a.astype(np.float32), 0, 65535) / 65535.0)[..., None], 16)
    if mode == "F":
        return LoadedImage(np.clip(a.astype(np.float32), 0, 1)[..., None], 16)
    a = a.astype(np.float32) / 255.0
    return LoadedImage(a[..., None] if a.ndim == 2 else a, 8)


def quantize(pixels: np.ndarray, bits: int) -> np.ndarray:
    """Float [0, 1] to uint8/uint16, clipped and rounded half up; integer arrays pass through."""
    if pixels.dtype.kind in "ui":
        return pixels
    peak = np.float32(65535.0 if bits == 16 else 255.0)
    out = np.floor(np.clip(pixels, 0.0, 1.0) * peak + np.float32(0.5))
    return out.astype(np.uint16 if bits == 16 else np.uint8)


def write_image(path: str | Path, pixels: np.ndarray, bits: int) -> Path:
    """Write HxWxC (float [0, 1], or uint8/uint16 as is) atomically; format from the suffix. JPEG/WebP are 8-bit
    (JPEG drops alpha)."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageError(f"cannot write '{path}': output formats are {', '.join(WRITE_SUFFIXES)}.")
    if pixels.dtype == np.uint16:
        bits = 16
    if suffix != ".png":
        if pixels.dtype == np.uint16:
            pixels = (pixels.astype(np.float32) / 65535.0)
        bits = 8
    channels = pixels.shape[2]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        if bits == 16 and channels in (3, 4, 2):
            import png

            data = quantize(pixels, 16)
            if channels == 2:  # grey + alpha
                writer = png.Writer(data.shape[1], data.shape[0], greyscale=True, alpha=True, bitdepth=16)
            else:
                writer = png.Writer(data.shape[1], data.shape[0], greyscale=False, alpha=channels == 4, bitdepth=16)
            with open(tmp, "wb") as f:
                writer.write(f, data.reshape(data.shape[0], -1))
        else:
            data = quantize(pixels, bits)
            if channels == 1:
                im = Image.fromarray(data[..., 0], mode="I;16" if bits == 16 else "L")
            else:
                im = Image.fromarray(data, mode={2: "LA", 3: "RGB", 4: "RGBA"}[channels])
            if suffix in (".jpg", ".jpeg") and im.mode in ("LA", "RGBA"):
                im = im.convert("RGB" if im.mode == "RGBA" else "L")
            kwargs = {"quality": 95} if suffix in (".jpg", ".jpeg", ".webp") else {}
            im.save(tmp, format={".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}[suffix], **kwargs)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
