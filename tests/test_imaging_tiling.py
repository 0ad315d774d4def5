"""scnet_deploy/imaging/tiling.py: exact tiles (whole-image output for any halo at least the receptive radius),
plans that cover every pixel once, tile sizes from memory and the engine's size range."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from hypothesis import given, HealthCheck, settings, strategies as st

from conftest import cli, tiny_model
from scnet_deploy.imaging.tiling import auto_tile, plan_tiles, upscale_float
from scnet_deploy.model.arch import detect_arch
from scnet_deploy.upscale import upscale, UpscaleOptions


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def load_radius(model):
    from scnet_deploy.model.arch import detect_arch

    return detect_arch(model.state_dict()).receptive_radius


@FAST
@given(scale=st.sampled_from([2, 3, 4]), upsampler=st.sampled_from(["mlp", "pixelshuffle"]), h=st.integers(1, 30),
       w=st.integers(1, 30), tile=st.integers(1, 32))
def test_tiling_is_exact(scale, upsampler, h, w, tile):
    model = tiny_model(scale, upsampler, num_feat=8, num_block=2)
    radius = detect_arch(model.state_dict(), scale=scale).receptive_radius
    infer = lambda x: model(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    img = np.random.default_rng(h * 31 + w).random((3, h, w), dtype=np.float32)
    assert np.abs(upscale_float(infer, img, scale, tile, radius) - infer(img[None])[0]).max() <= 1e-5


@pytest.mark.parametrize("h,w", [(1, 1), (1, 13), (9, 1), (7, 5), (23, 31)])
@pytest.mark.parametrize("tile", [1, 3, 8, 64])
def test_tiled_equals_whole(h, w, tile):
    model = tiny_model(4, "mlp", num_block=3)
    radius = load_radius(model)
    infer = lambda x: model(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    img = np.random.default_rng(h * 100 + w).random((3, h, w), dtype=np.float32)
    whole = infer(img[None])[0]
    assert np.abs(upscale_float(infer, img, 4, tile, radius) - whole).max() <= 1e-5


def test_a_halo_below_the_receptive_field_is_not_exact():
    model = tiny_model(4, "mlp", num_block=3)
    infer = lambda x: model(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    img = np.random.default_rng(0).random((3, 24, 24), dtype=np.float32)
    assert np.abs(upscale_float(infer, img, 4, 8, 2) - infer(img[None])[0]).max() > 1e-3


def test_tile_plan_covers_every_pixel_once():
    tiles = plan_tiles(17, 10, 4, 3)
    cover = np.zeros((17, 10), int)
    for t in tiles:
        cover[t.y0:t.y1, t.x0:t.x1] += 1
        assert t.cy0 == max(0, t.y0 - 3) and t.cx1 == min(10, t.x1 + 3)
    assert (cover == 1).all()


def test_auto_tile_from_memory_and_engine_limit():
    from scnet_deploy.memory import bytes_per_lr_pixel

    per_px = bytes_per_lr_pixel({"num_feat": 64, "scale": 4, "num_in_ch": 3, "num_out_ch": 3}, "onnxruntime")
    gib = 2**30
    assert auto_tile(100, 100, per_px, 21, gib) is None  # fits whole
    tile = auto_tile(4320, 7680, per_px, 21, gib)
    crop = tile + 42
    assert crop * crop * per_px <= gib < (crop + 1) ** 2 * per_px
    assert auto_tile(200, 200, per_px, 10, gib, max_crop=(64, 64)) == 44
    assert auto_tile(4320, 7680, per_px, 21, None) is None  # no budget known: whole


def test_engine_built_for_another_range(tiny, tmp_path):
    import shutil

    _, artifact = tiny
    limited = tmp_path / "limited"
    shutil.copytree(artifact, limited)
    manifest = json.loads((limited / "manifest.json").read_text())
    manifest["size_range"] = {"min": [16, 16], "opt": [32, 32], "max": [48, 48]}  # as a TensorRT/Core ML engine
    (limited / "manifest.json").write_text(json.dumps(manifest))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "small.png")
    out = cli("upscale", limited, tmp_path / "small.png", "-o", tmp_path / "o")
    assert out.returncode == 2 and "outside the range this engine was built for" in out.stderr
    from conftest import one_line_error

    assert "outside the range" in one_line_error(out) and not list((tmp_path / "o").glob("*.png"))
    Image.fromarray(np.zeros((100, 90, 3), np.uint8)).save(tmp_path / "big.png")  # tiled to fit the engine
    results = upscale(limited, [tmp_path / "big.png"], UpscaleOptions(tmp_path / "o2"))
    assert results[0]["tiles"] > 1
