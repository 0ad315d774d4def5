"""Each exact rewrite of the pipeline changes no output beyond float rounding and leaves its input untouched."""

import pytest
import torch

from conftest import tiny_model
from scnet_deploy.errors import ExportError
from scnet_deploy.rewrites import PIPELINE, DeployOptions, replace_shift, to_deploy_form
from scnet_deploy.shift import Shift8, ShiftDWConv, ShiftSlice


@pytest.mark.parametrize("shift", ["slice", "dwconv"])
@pytest.mark.parametrize("scale,upsampler", [(2, "mlp"), (3, "pixelshuffle"), (4, "mlp"), (8, "pixelshuffle")])
def test_deploy_form_matches_reference(shift, scale, upsampler):
    ref = tiny_model(scale, upsampler)
    deploy = to_deploy_form(ref, DeployOptions(shift=shift))
    x = torch.rand(2, 3, 9, 13)
    with torch.no_grad():
        assert (deploy(x) - ref(x)).abs().max() <= 1e-6
    kinds = {type(m) for m in deploy.modules()}
    assert Shift8 not in kinds and (ShiftSlice if shift == "slice" else ShiftDWConv) in kinds
    assert any(isinstance(m, Shift8) for m in ref.modules()), "the rewrite must not modify its input"


def test_every_pipeline_step_and_candidate_is_exact_alone():
    from scnet_deploy.rewrites import CANDIDATES

    ref = tiny_model(4, "mlp")
    x = torch.rand(1, 3, 8, 8)
    for name, rewrite in PIPELINE + CANDIDATES:
        with torch.no_grad():
            assert (rewrite(ref, DeployOptions())(x) - ref(x)).abs().max() <= 1e-6, name


def test_unknown_shift_form_is_a_user_error():
    with pytest.raises(ExportError, match="slice"):
        replace_shift(tiny_model(), "conv3x3")


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_conv_before_upsample_is_exact_and_cheaper(scale):
    from scnet_deploy.complexity import macs_per_lr_pixel
    from scnet_deploy.rewrites import conv_before_upsample

    ref = tiny_model(scale, "mlp")
    moved = conv_before_upsample(ref)
    x = torch.rand(2, 3, 7, 9)
    with torch.no_grad():
        assert (moved(x) - ref(x)).abs().max() <= 1e-5
    assert isinstance(moved.upconv1.up_layer[0], torch.nn.Conv2d)
    assert isinstance(ref.upconv1.up_layer[0], torch.nn.Upsample)  # input untouched
    assert macs_per_lr_pixel(moved) < macs_per_lr_pixel(ref)


def test_conv_before_upsample_leaves_pixelshuffle_alone():
    from scnet_deploy.rewrites import conv_before_upsample

    ref = tiny_model(4, "pixelshuffle")
    assert [type(m) for m in conv_before_upsample(ref).modules()] == [type(m) for m in ref.modules()]
