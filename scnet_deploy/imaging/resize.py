"""MATLAB-compatible ``imresize(img, scale, 'bicubic')`` (antialiased), the degradation of the SR benchmarks.

Follows MATLAB's algorithm: Keys cubic (a = -0.5); when shrinking, the kernel is stretched by 1/scale (antialiasing);
output pixel i (1-based) maps to u = i/scale + 0.5 * (1 - 1/scale); the support is ceil(kernel width) + 2 taps,
weights normalised to sum 1; out-of-image taps are mirrored (symmetric padding); the first dimension is resized
first. On uint8 images MATLAB rounds back to uint8 after each pass; ``imresize_u8`` does the same and so
reproduces the shipped Set5 LR images bit for bit (tested).
"""

import math

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    kernel_width = 4.0
    antialias = scale < 1
    if antialias:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based
    dist = u[:, None] - indices
    weights = scale * _cubic(scale * dist) if antialias else _cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    # Mirror out-of-range taps, as MATLAB's aux = [1:n, n:-1:1] indexing does.
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    return indices[:, keep], weights[:, keep]


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float) -> np.ndarray:
    indices, weights = _contributions(img.shape[axis], out_len, scale)
    moved = np.moveaxis(img, axis, 0)
    gathered = moved[indices]  # out_len x taps x ...
    w = weights.reshape(weights.shape + (1,) * (moved.ndim - 1))
    return np.moveaxis((gathered * w).sum(axis=1), 0, axis)


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize an HxW or HxWxC float array by ``scale`` as MATLAB's bicubic imresize; float64, unrounded."""
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape[:2]
    out = _resize_axis(img, 0, int(math.ceil(h * scale)), scale)
    return _resize_axis(out, 1, int(math.ceil(w * scale)), scale)


def imresize_u8(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB's imresize on a uint8 image: each pass rounded back to uint8."""
    img = np.asarray(img)
    h, w = img.shape[:2]
    out = to_uint8(_resize_axis(img.astype(np.float64), 0, int(math.ceil(h * scale)), scale))
    return to_uint8(_resize_axis(out.astype(np.float64), 1, int(math.ceil(w * scale)), scale))


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round to 8 bits as MATLAB does (half away from zero), from a [0, 255] float image."""
    return np.clip(np.floor(np.asarray(img, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def bicubic_degrade(hr_u8: np.ndarray, scale: int) -> np.ndarray:
    """The standard LR: HR (uint8, already mod-cropped) shrunk by 1/scale with MATLAB bicubic, rounded to uint8."""
    return imresize_u8(hr_u8, 1.0 / scale)
