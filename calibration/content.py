"""Images of the content SR users feed besides photographs, made in code or taken from what dependencies ship, so an
INT8 hold-out can predict how a quantized engine does on them: line art and text on flat backgrounds, saturated
flat colours, fine textures.

Every generator is deterministic in its seed and returns an RGB uint8 HR image. Edges are antialiased by drawing
at 4x and reducing with a box filter, as rendered or scanned content is.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIDE = 384  # HR side: 96 LR pixels at x4, 192 at x2
_SS = 4  # supersampling factor for antialiasing

# A palette of saturated colours, white and black: the corners of the RGB cube, where clipping shows first.
SATURATED = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 255, 255),
             (0, 0, 0), (255, 128, 0), (128, 0, 255)]


def _canvas(color=(255, 255, 255), side: int = SIDE) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (side * _SS, side * _SS), color)
    return image, ImageDraw.Draw(image)


def _reduce(image: Image.Image) -> np.ndarray:
    return np.asarray(image.reduce(_SS), dtype=np.uint8).copy()


def _bezier(rng, side: int, n: int = 24) -> list[tuple[float, float]]:
    p = rng.uniform(0, side, (4, 2))
    t = np.linspace(0, 1, n)[:, None]
    curve = ((1 - t) ** 3) * p[0] + 3 * ((1 - t) ** 2) * t * p[1] + 3 * (1 - t) * t ** 2 * p[2] + t ** 3 * p[3]
    return [tuple(xy) for xy in curve]


def line_art(seed: int, side: int = SIDE) -> np.ndarray:
    """Black ink on white paper: outlined shapes with flat grey/colour fills, curved strokes of several widths,
    hatching."""
    rng = np.random.default_rng(seed)
    image, draw = _canvas(side=side)
    s = side * _SS
    for _ in range(rng.integers(3, 6)):  # flat-filled outlined shapes
        x0, y0 = rng.uniform(0, s * 0.7, 2)
        w, h = rng.uniform(s * 0.15, s * 0.4, 2)
        fill = tuple(int(v) for v in rng.choice([255, 230, 200, 160], 3)) if rng.random() < 0.5 else None
        box = [x0, y0, x0 + w, y0 + h]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill, outline=(0, 0, 0),
                                                                 width=int(rng.integers(4, 16)))
    for _ in range(rng.integers(8, 16)):  # pen strokes
        draw.line(_bezier(rng, s), fill=(0, 0, 0), width=int(rng.integers(2, 14)), joint="curve")
    x0, y0 = rng.uniform(0, s * 0.6, 2)  # a hatched patch
    for k in range(0, int(s * 0.3), int(rng.integers(10, 24))):
        draw.line([(x0 + k, y0), (x0 + k + s * 0.1, y0 + s * 0.3)], fill=(0, 0, 0), width=3)
    return _reduce(image)


def _font(size: int):
    import matplotlib

    path = f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans.ttf"
    return ImageFont.truetype(path, size)


_WORDS = ("the quick brown fox jumps over lazy dog super resolution engine calibrate quantize verify deploy pixel "
          "edge device latency budget drift sample kernel layer scale shift convolution network image text line "
          "0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ").split()


def text(seed: int, side: int = SIDE) -> np.ndarray:
    """Lines of text in several sizes, dark on light and light on dark, some in saturated colours."""
    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in rng.choice([(255, 255, 255), (250, 245, 230), (20, 20, 20), (0, 40, 160)]))
    image, draw = _canvas(bg, side)
    s, y = side * _SS, 8 * _SS
    dark = sum(bg) < 300
    while y < s - 10 * _SS:
        size = int(rng.integers(9, 26)) * _SS
        color = (255, 255, 255) if dark else tuple(int(v) for v in SATURATED[rng.integers(0, 10)]) \
            if rng.random() < 0.3 else (0, 0, 0)
        if color == bg:
            color = (0, 0, 0) if not dark else (255, 255, 0)
        line = " ".join(rng.choice(_WORDS, 8))
        draw.text((int(rng.integers(2, 20)) * _SS, y), line, fill=color, font=_font(size))
        y += int(size * 1.35)
    return _reduce(image)


def flat_colours(seed: int, side: int = SIDE) -> np.ndarray:
    """Saturated flat regions (the RGB cube's corners) with sharp antialiased borders, like UI, charts, cartoons."""
    rng = np.random.default_rng(seed)
    image, draw = _canvas(SATURATED[int(rng.integers(0, 10))], side)
    s = side * _SS
    for _ in range(rng.integers(10, 20)):
        color = SATURATED[int(rng.integers(0, len(SATURATED)))]
        pts = [tuple(xy) for xy in rng.uniform(-0.1 * s, 1.1 * s, (int(rng.integers(3, 7)), 2))]
        if rng.random() < 0.4:
            x0, y0 = rng.uniform(0, s * 0.8, 2)
            r = rng.uniform(s * 0.05, s * 0.25)
            draw.ellipse([x0, y0, x0 + r, y0 + r], fill=color)
        else:
            draw.polygon(pts, fill=color)
    return _reduce(image)


def textures(seed: int, side: int = SIDE) -> np.ndarray:
    """Fine periodic and random textures near the Nyquist limit of the LR image: gratings at several angles and
    frequencies, a checkerboard, band-limited noise, each in a tile of the image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    out = np.zeros((side, side, 3))
    half = side // 2
    for i, (y0, x0) in enumerate(((0, 0), (0, half), (half, 0), (half, half))):
        sl = np.s_[y0:y0 + half, x0:x0 + half]
        if i < 2:
            angle, period = rng.uniform(0, np.pi), rng.uniform(3.0, 9.0)
            v = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
            colour = rng.uniform(0.3, 1.0, 3)
            out[sl] = v[sl][..., None] * colour
        elif i == 2:
            cell = int(rng.integers(2, 6))
            out[sl] = (((yy[sl] // cell) + (xx[sl] // cell)) % 2)[..., None]
        else:
            noise = rng.random((half // 2, half // 2, 3))
            out[sl] = np.asarray(Image.fromarray((noise * 255).astype(np.uint8)).resize((half, half), Image.BICUBIC),
                                 dtype=np.float64) / 255
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def skimage_image(name: str) -> np.ndarray:
    """A scikit-image sample image as RGB uint8 (grey replicated, alpha dropped, booleans as black on white)."""
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    if image.dtype == bool:
        image = np.where(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


GENERATORS = {"line-art": line_art, "text": text, "flat-colours": flat_colours, "textures": textures}
