"""scnet_deploy/model/rewrites.py: each exact rewrite changes no output beyond float rounding (fuzzed too) and leaves
its input untouched."""

import pytest
import torch
from hypothesis import given, HealthCheck, settings, strategies as st

from conftest import tiny_model
from scnet_deploy.errors import ExportError
from scnet_deploy.model.rewrites import DeployOptions, PIPELINE, replace_shift, to_deploy_form
from scnet_deploy.model.shift import Shift8, ShiftDWConv, ShiftSlice
from scnet_deploy.options import CANDIDATE_FORMS, CPU_FORMS


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


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


def test_every_pipeline_step_is_exact_alone():
    ref = tiny_model(4, "mlp")
    x = torch.rand(1, 3, 8, 8)
    for shift in ("slice", "dwconv", "fold"):
        # every switch on, so each step really rewrites something (with upsample_as_deconv off, its step is a no-op)
        options = DeployOptions(shift=shift, conv_before_upsample=True, upsample_as_deconv=True, skip_as_conv=True)
        for name, rewrite in PIPELINE:
            rewritten = rewrite(ref, options)
            assert [type(m) for m in rewritten.modules()] != [type(m) for m in ref.modules()], (name, shift)
            with torch.no_grad():
                assert (rewritten(x) - ref(x)).abs().max() <= 1e-5, (name, shift)


@pytest.mark.parametrize("form", CANDIDATE_FORMS + CPU_FORMS + ("fold", "slice", "slice+upsample_as_deconv",
                                                                  "fold+upsample_as_deconv+skip_as_conv"))
@pytest.mark.parametrize("scale,upsampler", [(2, "mlp"), (3, "pixelshuffle"), (3, "mlp"), (4, "mlp"),
                                             (8, "pixelshuffle")])
def test_every_autotune_candidate_form_is_exact(form, scale, upsampler):
    ref = tiny_model(scale, upsampler)
    deploy = to_deploy_form(ref, DeployOptions.from_name(form))
    x = torch.rand(2, 3, 7, 10)
    with torch.no_grad():
        assert (deploy(x) - ref(x)).abs().max() <= 1e-5
    assert not any(isinstance(m, Shift8) for m in deploy.modules())


@pytest.mark.parametrize("upsampler", ["mlp", "pixelshuffle"])
def test_fold_turns_each_shift_and_next_conv_into_one_sparse_3x3_conv(upsampler):
    from scnet_deploy.model.complexity import macs_per_lr_pixel
    from scnet_deploy.model.rewrites import fold_shift

    ref = tiny_model(4, upsampler)
    folded = fold_shift(ref)
    shifts = sum(isinstance(m, Shift8) for m in ref.modules())
    convs3 = [m for m in folded.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == shifts and not any(isinstance(m, (Shift8, ShiftSlice, ShiftDWConv)) for m in folded.modules())
    for conv in convs3:  # each input channel keeps exactly one of the nine taps
        nonzero_taps = (conv.weight.detach().abs().sum(0) > 0).sum(dim=(1, 2))
        assert (nonzero_taps == 1).all()
    assert macs_per_lr_pixel(folded) > macs_per_lr_pixel(ref)  # dense kernels pay for the zeros
    assert any(isinstance(m, Shift8) for m in ref.modules()), "the rewrite must not modify its input"


def test_fold_is_exact_at_the_border_where_zero_fill_matters():
    # A one-pixel image: every shifted value comes from the zero fill, which the 3x3 conv's zero padding must match.
    from scnet_deploy.model.rewrites import fold_shift

    ref = tiny_model(2, "mlp")
    x = torch.rand(1, 3, 1, 1)
    with torch.no_grad():
        assert (fold_shift(ref)(x) - ref(x)).abs().max() <= 1e-6


def test_unknown_shift_form_is_a_user_error():
    with pytest.raises(ExportError, match="fold"):
        replace_shift(tiny_model(), "conv3x3")


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_conv_before_upsample_is_exact_and_cheaper(scale):
    from scnet_deploy.model.complexity import macs_per_lr_pixel
    from scnet_deploy.model.rewrites import conv_before_upsample

    ref = tiny_model(scale, "mlp")
    moved = conv_before_upsample(ref)
    x = torch.rand(2, 3, 7, 9)
    with torch.no_grad():
        assert (moved(x) - ref(x)).abs().max() <= 1e-5
    assert isinstance(moved.upconv1.up_layer[0], torch.nn.Conv2d)
    assert isinstance(ref.upconv1.up_layer[0], torch.nn.Upsample)  # input untouched
    assert macs_per_lr_pixel(moved) < macs_per_lr_pixel(ref)


def test_conv_before_upsample_leaves_pixelshuffle_alone():
    from scnet_deploy.model.rewrites import conv_before_upsample

    ref = tiny_model(4, "pixelshuffle")
    assert [type(m) for m in conv_before_upsample(ref).modules()] == [type(m) for m in ref.modules()]


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("h,w", [(1, 1), (1, 6), (5, 3), (16, 9)])
def test_bilinear_deconv_is_bilinear_upsampling(scale, h, w):
    from scnet_deploy.model.rewrites import BilinearDeconv

    x = torch.rand(2, 5, h, w)
    ref = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    assert (BilinearDeconv(5, scale)(x) - ref).abs().max() <= 1e-6


def test_upsample_as_deconv_replaces_every_even_bilinear_and_leaves_x3_alone():
    from scnet_deploy.model.rewrites import BilinearDeconv, upsample_as_deconv

    x4 = upsample_as_deconv(tiny_model(4, "mlp"))
    assert not any(isinstance(m, torch.nn.Upsample) for m in x4.modules())
    assert sum(isinstance(m, BilinearDeconv) for m in x4.modules()) == 3  # two x2 stages and the x4 image skip
    x3 = upsample_as_deconv(tiny_model(3, "mlp"))
    assert sum(isinstance(m, torch.nn.Upsample) for m in x3.modules()) == 2  # odd factors keep the resize
    with pytest.raises(ExportError, match="not rewrites"):
        DeployOptions.from_name("dwconv+upsample_as_pixelshuffle")


def test_conv_before_upsample_saves_17_percent_of_scnet_t_x4_macs():
    """README's number: SCNet-T x4, 363,712 -> 302,272 MACs per LR pixel (-16.9%)."""
    from scnet_deploy.model.complexity import macs_per_lr_pixel
    from scnet_deploy.model.rewrites import conv_before_upsample

    ref = tiny_model(4, "mlp", num_feat=64, num_block=16)
    before, after = macs_per_lr_pixel(ref), macs_per_lr_pixel(conv_before_upsample(ref))
    assert (before, after) == (363_712, 302_272)
    assert round(100 * (1 - after / before)) == 17


def test_the_form_names_without_pytorch_are_the_shift_forms():
    from scnet_deploy.model.forms import FOLD, SHIFT_CHOICES
    from scnet_deploy.model.shift import SHIFT_FORMS

    assert SHIFT_CHOICES == (*sorted(SHIFT_FORMS), FOLD)


def test_map_elements_counts_each_memory_moving_op_once_by_resolution():
    """The memory roofline's floor (benchmarks/speed_suite.py): tiny x2 model, 16 features, 2 blocks, 8x8 input
    (P = 64 pixels). At LR: conv_first 16P, each block conv1 + shift + conv2 48P; above it: the x2 stage's upsample,
    conv, shift and conv 4 x 64P, conv_hr 64P, conv_last and the image skip 12P each. Conv before upsample moves that
    stage's first conv to LR."""
    from scnet_deploy.model.complexity import map_elements
    from scnet_deploy.model.rewrites import conv_before_upsample

    p = 64
    assert map_elements(tiny_model(2), 8, 8) == {"lr": (16 + 96) * p, "hr": (256 + 64 + 12 + 12) * p}
    assert map_elements(conv_before_upsample(tiny_model(2)), 8, 8) == {"lr": (16 + 96 + 16) * p,
                                                                       "hr": (192 + 64 + 12 + 12) * p}
    deploy = to_deploy_form(tiny_model(2), DeployOptions("dwconv", conv_before_upsample=True))
    assert map_elements(deploy, 8, 8) == map_elements(conv_before_upsample(tiny_model(2)), 8, 8)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 3, 7, 10), (1, 5, 2, 9)])
def test_bilinear_phases_is_the_half_pixel_bilinear_resize(scale, shape):
    from torch.nn import functional as F

    from scnet_deploy.model.rewrites import BilinearPhases

    x = torch.rand(*shape)
    expected = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    assert (BilinearPhases(shape[1], scale)(x) - expected).abs().max() <= 1e-6  # borders (clamped) included


@pytest.mark.parametrize("scale,upsampler", [(3, "mlp"), (4, "pixelshuffle")])
def test_skip_as_conv_replaces_only_the_image_skip(scale, upsampler):
    from scnet_deploy.model.rewrites import BilinearPhases, skip_as_conv

    ref = tiny_model(scale, upsampler)
    rewritten = skip_as_conv(ref)
    assert isinstance(rewritten.skip, BilinearPhases) and rewritten.skip.scale == scale
    assert [type(m) for n, m in rewritten.named_modules() if not n.startswith("skip")] == \
        [type(m) for n, m in ref.named_modules() if not n.startswith("skip")]
    assert isinstance(ref.skip, torch.nn.Upsample), "the rewrite must not modify its input"
    assert DeployOptions.from_name("dwconv+skip_as_conv").skip_as_conv
