"""MATLAB-compatible bicubic and the PSNR/SSIM-Y protocol, checked against MATLAB's own Set5 LR and published
bicubic baselines."""

import numpy as np
import pytest

from conftest import DATASETS, need
from scnet_deploy.imaging.images import list_images, mod_crop, read_rgb_u8
from scnet_deploy.imaging.metrics import psnr, psnr_ssim_y, psnr_y, rgb_to_y, ssim
from scnet_deploy.imaging.resize import bicubic_degrade, imresize, imresize_u8

SET5 = DATASETS / "Set5"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_equals_matlab_lr_of_set5(scale):
    for hr_path in list_images(need(SET5 / "HR")):
        hr = mod_crop(read_rgb_u8(hr_path), scale)
        matlab = read_rgb_u8(SET5 / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        mine = bicubic_degrade(hr, scale)
        assert mine.shape == matlab.shape
        assert np.abs(mine.astype(int) - matlab.astype(int)).max() <= 2  # in fact 0: bit-exact here


@pytest.mark.parametrize("scale,psnr_ref,ssim_ref", [(2, 33.66, 0.9299), (3, 30.39, 0.8682), (4, 28.42, 0.8104)])
def test_bicubic_baseline_on_set5(scale, psnr_ref, ssim_ref):
    scores = []
    for hr_path in list_images(need(SET5 / "HR")):
        hr = mod_crop(read_rgb_u8(hr_path), scale)
        lr = read_rgb_u8(SET5 / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        scores.append(psnr_ssim_y(imresize_u8(lr, scale), hr, crop=scale))
    p, s = np.mean(scores, axis=0)
    assert abs(p - psnr_ref) <= 0.02 and abs(s - ssim_ref) <= 0.002


def test_imresize_properties():
    rng = np.random.default_rng(0)
    flat = np.full((12, 9, 3), 77.0)
    assert np.allclose(imresize(flat, 0.25), 77.0) and np.allclose(imresize(flat, 3), 77.0)  # weights sum to 1
    img = rng.random((16, 20))
    assert imresize(img, 0.5).shape == (8, 10) and imresize(img, 1 / 3).shape == (6, 7)
    assert imresize(img, 4).shape == (64, 80)
    assert np.allclose(imresize(img, 1.0), img)  # identity at scale 1 (cubic interpolates)


def test_y_psnr_ssim_basics():
    white = np.full((4, 4, 3), 255, np.uint8)
    assert np.allclose(rgb_to_y(white), 235.0) and np.allclose(rgb_to_y(np.zeros((2, 2, 3), np.uint8)), 16.0)
    a = np.random.default_rng(1).integers(0, 256, (32, 32)).astype(float)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, a + 1) == pytest.approx(10 * np.log10(255**2))
    assert ssim(a, 255 - a) < 0.1
    rgb = np.random.default_rng(2).integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)
    assert psnr_y(rgb[0], rgb[1], crop=2) == psnr_ssim_y(rgb[0], rgb[1], crop=2)[0]  # the INT8 hold-out's score
