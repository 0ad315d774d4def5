"""Property-based tests: every exact rewrite and shift form, tiling, and the loaders' no-traceback rule."""

import io

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import tiny_model
from scnet_deploy.model.arch import detect_arch
from scnet_deploy.model.checkpoint import load_checkpoint
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.imaging.images import read_image
from scnet_deploy.imaging.images import read_rgb_u8
from scnet_deploy.model.rewrites import DeployOptions, to_deploy_form
from scnet_deploy.model.shift import Shift8, ShiftDWConv, ShiftSlice
from scnet_deploy.imaging.tiling import upscale_float

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(batch=st.integers(1, 3), groups=st.integers(1, 4), h=st.integers(1, 12), w=st.integers(1, 12),
       seed=st.integers(0, 2**16))
def test_shift_forms(batch, groups, h, w, seed):
    x = torch.randn(batch, 8 * groups, h, w, generator=torch.Generator().manual_seed(seed))
    ref = Shift8(groups)(x)
    assert torch.equal(ShiftSlice(groups)(x), ref) and torch.equal(ShiftDWConv(8 * groups)(x), ref)


@FAST
@given(nf=st.sampled_from([8, 16, 24]), nb=st.integers(1, 3), scale=st.sampled_from([2, 3, 4, 8]),
       upsampler=st.sampled_from(["mlp", "pixelshuffle"]), shift=st.sampled_from(["slice", "dwconv", "fold"]),
       cbu=st.booleans(), h=st.integers(1, 9), w=st.integers(1, 9))
def test_deploy_rewrites(nf, nb, scale, upsampler, shift, cbu, h, w):
    ref = tiny_model(scale, upsampler, num_feat=nf, num_block=nb)
    deploy = to_deploy_form(ref, DeployOptions(shift=shift, conv_before_upsample=cbu))
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        assert (deploy(x) - ref(x)).abs().max() <= 1e-5


@FAST
@given(scale=st.sampled_from([2, 3, 4]), upsampler=st.sampled_from(["mlp", "pixelshuffle"]), h=st.integers(1, 30),
       w=st.integers(1, 30), tile=st.integers(1, 32))
def test_tiling_is_exact(scale, upsampler, h, w, tile):
    model = tiny_model(scale, upsampler, num_feat=8, num_block=2)
    radius = detect_arch(model.state_dict(), scale=scale).receptive_radius
    infer = lambda x: model(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    img = np.random.default_rng(h * 31 + w).random((3, h, w), dtype=np.float32)
    assert np.abs(upscale_float(infer, img, scale, tile, radius) - infer(img[None])[0]).max() <= 1e-5


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("valid")
    from safetensors.torch import save_file

    model = tiny_model(4, num_feat=8, num_block=1)
    torch.save({"params": model.state_dict()}, d / "m.pth")
    save_file(model.state_dict(), str(d / "m.safetensors"))
    img = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    buf = {}
    for fmt in ("PNG", "JPEG"):
        b = io.BytesIO()
        Image.fromarray(img).save(b, format=fmt)
        buf[fmt] = b.getvalue()
    return {"pth": (d / "m.pth").read_bytes(), "safetensors": (d / "m.safetensors").read_bytes(), **buf}


def mutate(data: bytes, draw) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "random", "splice"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "random":
        return draw(st.binary(max_size=512))
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if kind == "splice":
        data += draw(st.binary(max_size=64))
    return bytes(data)


@FAST
@given(data=st.data(), which=st.sampled_from(["pth", "safetensors"]))
def test_checkpoint_loader_never_tracebacks(tmp_path_factory, valid_files, data, which):
    path = tmp_path_factory.mktemp("fz") / f"x.{which}"
    path.write_bytes(mutate(valid_files[which], data.draw))
    try:
        load_checkpoint(path, scale=4)
    except ScnetDeployError as exc:
        assert "\n" not in str(exc)


@FAST
@given(data=st.data(), which=st.sampled_from(["PNG", "JPEG"]))
def test_image_loaders_never_traceback(tmp_path_factory, valid_files, data, which):
    path = tmp_path_factory.mktemp("fz") / f"x.{which.lower()}"
    path.write_bytes(mutate(valid_files[which], data.draw))
    for reader in (read_image, read_rgb_u8):
        try:
            reader(path)
        except ScnetDeployError as exc:
            assert "\n" not in str(exc)
