"""PSNR and SSIM as the SR literature reports them (BasicSR / MATLAB protocol).

Y channel of BT.601 studio-range YCbCr: Y = 16 + 65.481 R + 128.553 G + 24.966 B for RGB in [0, 1] (so Y in
[16, 235] on the 0..255 scale), ``crop`` pixels removed at each border, images already rounded to 8 bits.
SSIM: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, valid filtering (the reference code).
"""

import numpy as np


def rgb_to_y(img_u8: np.ndarray) -> np.ndarray:
    """BT.601 luma (studio range, 0..255 scale, float64) of an HxWx3 RGB uint8 image; grayscale passes through."""
    img = np.asarray(img_u8, dtype=np.float64)
    if img.ndim == 2:
        return img
    rgb = img / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def _crop(img: np.ndarray, crop: int) -> np.ndarray:
    return img[crop:img.shape[0] - crop, crop:img.shape[1] - crop] if crop > 0 else img


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


SSIM_WINDOW = 11  # the Gaussian window's side: an image (less its crop) must be at least this large to score


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable 'valid' correlation with the 1-D Gaussian g along both axes.
    k = len(g)
    rows = sum(g[i] * img[i:img.shape[0] - k + 1 + i, :] for i in range(k))
    return sum(g[i] * rows[:, i:rows.shape[1] - k + 1 + i] for i in range(k))


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a**2
    var_b = _filter_valid(b * b, g) - mu_b**2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def psnr_y(sr_u8: np.ndarray, hr_u8: np.ndarray, crop: int) -> float:
    """PSNR-Y alone (``psnr_ssim_y``'s first value, without the cost of SSIM)."""
    return psnr(_crop(rgb_to_y(sr_u8), crop), _crop(rgb_to_y(hr_u8), crop))


def psnr_ssim_y(sr_u8: np.ndarray, hr_u8: np.ndarray, crop: int) -> tuple[float, float]:
    """PSNR-Y and SSIM-Y of two uint8 RGB images, ``crop`` border pixels removed (the scale, by convention)."""
    y_sr, y_hr = _crop(rgb_to_y(sr_u8), crop), _crop(rgb_to_y(hr_u8), crop)
    return psnr(y_sr, y_hr), ssim(y_sr, y_hr)
