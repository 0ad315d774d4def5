"""Channel equalization (``calibration/equalization.py``): the same function, with each quantized activation's
channels brought closer to its largest one."""

import pytest
import torch

from conftest import tiny_model

from scnet_deploy.calibration.equalization import channel_groups, equalize, input_ranges, rescale
from scnet_deploy.model.rewrites import replace_shift


def uneven(model, scale: float = 30.0):
    """``model`` with a few channels of every group made far larger than the rest (the same function): what
    equalization must undo."""
    for producers, consumers in channel_groups(model):
        s = torch.ones(producers[0].out_channels)
        s[::5] = 1 / scale
        rescale(producers, consumers, s)
    return model


def evenness(model, batches) -> float:
    """The mean over quantized tensors of (a channel's largest value / the tensor's largest), averaged over channels:
    1 when every channel fills the range."""
    consumers = [c for _, cs in channel_groups(model) for c in cs]
    ranges = input_ranges(model, consumers, batches)
    return float(torch.stack([(r / r.max()).mean() for r in ranges.values()]).mean())


@pytest.mark.parametrize("scale,upsampler", [(4, "mlp"), (2, "pixelshuffle"), (3, "mlp")])
def test_equalization_keeps_the_function_and_evens_the_channels(scale, upsampler):
    model = uneven(tiny_model(scale, upsampler))
    torch.manual_seed(1)
    batches = [torch.rand(2, 3, 12, 12) for _ in range(2)]
    x = torch.rand(1, 3, 10, 14)
    equalized = equalize(model, batches)
    with torch.no_grad():
        before, after = model(x), equalized(x)
    assert torch.allclose(before, after, atol=1e-5), float((before - after).abs().max())
    assert evenness(equalized, batches) > evenness(model, batches) + 0.2
    assert model.conv_first.weight is not equalized.conv_first.weight  # a copy: the input is left as it was


def test_equalization_reads_the_dwconv_form_too():
    model = replace_shift(uneven(tiny_model(2)), "dwconv")
    batches = [torch.rand(2, 3, 12, 12)]
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.allclose(model(x), equalize(model, batches)(x), atol=1e-5)
