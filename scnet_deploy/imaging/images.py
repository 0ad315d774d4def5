"""Image files to arrays and back, with every conversion explicit.

Two readers over one decoder. ``read_image`` (for ``upscale``) keeps full fidelity: float32 HxWxC in [0, 1]
(C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) and the bit depth (8 or 16); the size is checked from the header before
any pixel is decoded (decompression bombs are refused); 8-bit files go through Pillow, 16-bit colour PNGs (which
Pillow reduces to 8 bits) through pypng. ``read_rgb_u8`` (for the SR protocol) on top of it: palette -> RGB through
its palette; grayscale (L, I;16, I, F) -> replicated to 3 equal channels; RGBA/LA -> alpha dropped (colour kept as
stored, not composited); 16-bit -> 8-bit by round(v / 257) (65535 -> 255 exactly); CMYK/YCbCr -> RGB by Pillow's
conversion. Unreadable, truncated and zero-size files raise ImageError (one line, naming the file).
``write_image`` writes atomically; ``round_to_bits`` is the one float -> uint8/uint16 rounding (half up).
"""

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError, ScnetDeployError  # noqa: F401 (ImageError: re-exported, its old home)
from .chunks import check_chunks

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
TEMPORARY_MARK = ".scnet-tmp"  # in the name of every temporary file write_image makes (never listed as an input)
MAX_PIXELS = 200_000_000  # refuse larger inputs before decoding (an 8K frame is 33 MP)
STREAM_PNG_PIXELS = 64_000_000  # larger PNGs are written row by row (pypng), not through a Pillow copy
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


# EXIF orientation (tag 274) -> the numpy steps that make the pixels upright, as viewers show them
_UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
            5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a.swapaxes(0, 1), 2),
            8: lambda a: np.rot90(a, 1)}


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int):
    """The Pillow image of ``path`` after the size guard (from its header, before decoding); anything Pillow raises
    on corrupt data becomes one ImageError naming the file."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, from the header, before decoding
    try:
        with Image.open(path) as im:
            _check_size(path, im.width, im.height, max_pixels)
            yield im
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many kinds on corrupt data
        raise ImageError(f"'{path}' is not a readable image ({str(exc)[:120] or type(exc).__name__}); check the file.")
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _header(path: Path, max_pixels: int) -> tuple[int, int, tuple[int, int]]:
    """(EXIF orientation, frame count, stored (width, height)) from the header, after the size guard."""
    with _opened(path, max_pixels) as im:
        try:
            orientation = int(im.getexif().get(274, 1) or 1)
        except Exception:  # a malformed EXIF block: the pixels are still the image
            orientation = 1
        return orientation, int(getattr(im, "n_frames", 1) or 1), im.size


def image_size(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as viewers show the image (EXIF orientation applied), from its header alone."""
    check_chunks(Path(path))
    orientation, _, (w, h) = _header(Path(path), max_pixels)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """The image as viewers show it: EXIF orientation applied. An animated or multi-page file is refused (one
    line): which frame was meant cannot be guessed, and upscaling the first alone would drop the rest silently."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"'{path}' does not exist.")
    if path.stat().st_size == 0:
        raise ImageError(f"'{path}' is empty (0 bytes).")
    check_chunks(path)  # before Pillow reads its metadata into memory
    orientation, frames, _ = _header(path, max_pixels)
    if frames > 1:
        raise ImageError(f"'{path}' has {frames} frames (animated or multi-page); upscale takes still images: save "
                         "each frame as its own file and pass the folder.")
    image = _read_png16(path, max_pixels) if _png_is_16bit_colour(path) else _read_pillow(path, max_pixels)
    if orientation in _UPRIGHT:
        image.pixels = np.ascontiguousarray(_UPRIGHT[orientation](image.pixels))
    return image


def _read_pillow(path: Path, max_pixels: int) -> LoadedImage:
    with _opened(path, max_pixels) as im:
        im.load()
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode in ("1", "CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
            im = im.convert("RGB")
        mode = im.mode
        a = np.asarray(im)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return LoadedImage((np.clip(a.astype(np.float32), 0, 65535) / 65535.0)[..., None], 16)
    if mode == "F":
        return LoadedImage(np.clip(a.astype(np.float32), 0, 1)[..., None], 16)
    a = a.astype(np.float32) / 255.0
    return LoadedImage(a[..., None] if a.ndim == 2 else a, 8)


def round_to_bits(pixels: np.ndarray, bits: int) -> np.ndarray:
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
    # unique per writer (threads of one process included), never a name another file already has
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=f"{TEMPORARY_MARK}{suffix}",
                                dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # as a plain write would leave it (mkstemp makes 0600)
    os.close(fd)
    tmp = Path(name)
    try:
        huge = pixels.shape[0] * pixels.shape[1] > STREAM_PNG_PIXELS
        if suffix == ".png" and (bits == 16 or huge):
            import png

            # pypng writes row by row from the array itself: 16-bit (Pillow has no 16-bit colour mode, and Pillow 13
            # refuses uint16 arrays as I;16), and huge images (Pillow holds a 4-byte-per-pixel copy of RGB: 2.1 GB
            # more for an 8K x4 result)
            data = round_to_bits(pixels, bits)
            writer = png.Writer(data.shape[1], data.shape[0], greyscale=channels in (1, 2), alpha=channels in (2, 4),
                                bitdepth=bits)
            with open(tmp, "wb") as f:
                writer.write(f, data.reshape(data.shape[0], -1))
        else:
            data = round_to_bits(pixels, bits)
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


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def list_images(folder: str | Path) -> list[Path]:
    return list_folder(folder)[0]


def list_folder(folder: str | Path) -> tuple[list[Path], dict[Path, str]]:
    """The images of ``folder`` (sorted), and every other file in it with why it is not one: another suffix, or a
    temporary file of a write in progress (or of one that was killed)."""
    images, others = [], {}
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file():
            continue
        if is_temporary(p):
            others[p] = "a temporary file of scnet-deploy (a write in progress, or one that was killed)"
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            others[p] = f"not an image suffix ({', '.join(IMAGE_SUFFIXES)})"
    return images, others


_TEMPORARY = re.compile(r"\..+\.(\d+)-[^/]*" + re.escape(TEMPORARY_MARK) + r"\.[A-Za-z0-9]+")


def is_temporary(path: Path) -> bool:
    return _TEMPORARY.fullmatch(Path(path).name) is not None


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writer process is gone (killed at its rename); returns them."""
    removed = []
    for p in Path(folder).iterdir() if Path(folder).is_dir() else ():
        match = _TEMPORARY.fullmatch(p.name)
        if match and not _alive(int(match.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_rgb_u8(path: str | Path) -> np.ndarray:
    """An HxWx3 uint8 RGB array, by the conversions in the module docstring (on top of the full-fidelity reader,
    so the size guard and error messages are the same everywhere)."""
    pixels = read_image(path).pixels
    rgb = pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    return round_to_bits(rgb, 8)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def centre_crop(img: np.ndarray, height: int, width: int, align: int = 1) -> np.ndarray:
    """The ``height`` x ``width`` middle of ``img`` (HWC), its corner on a multiple of ``align`` (an HR image's crop
    on the LR grid: its LR image's centre crop, scaled)."""
    h, w = img.shape[:2]
    y, x = (h - height) // 2 // align * align, (w - width) // 2 // align * align
    return img[y:y + height, x:x + width]


def to_float_chw(img_u8: np.ndarray) -> np.ndarray:
    return (img_u8.transpose(2, 0, 1).astype(np.float32) / 255.0)


def to_u8_hwc(chw: np.ndarray) -> np.ndarray:
    """Model output (CHW float, nominally [0, 1]) to HxWx3 uint8: clipped, rounded half up (the protocol)."""
    return np.floor(np.clip(np.nan_to_num(chw, nan=0.0), 0.0, 1.0).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
