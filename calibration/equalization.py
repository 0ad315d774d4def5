"""Channel equalization: rescale SCNet's channels so that each per-tensor int8 activation uses its range evenly.

Every tensor SCNet quantizes sits between convolutions that only ReLU, LeakyReLU, the shift and bilinear upsampling
separate, and each of those acts on a channel alone and commutes with a positive scale. So dividing a producer
convolution's output channel c (its weights' row and bias) by ``s_c`` and multiplying its consumers' input column c
by ``s_c`` leaves the network's function unchanged (float rounding aside) while the activation channel c shrinks by
``s_c``. With a per-tensor activation range and per-channel weight ranges, a channel whose values are small next to
the tensor's largest channel rounds coarsely; the scales move part of each channel's range into its consumers'
weights (SmoothQuant's migration, Xiao et al. 2023: ``s_c = r_c^a / w_c^(1-a)``, ``r_c`` the channel's largest
activation on the data, ``w_c`` its consumers' largest weight on that column). The residual stream is one group:
``conv_first`` and every block's ``conv2`` produce it, every block's ``conv1`` and the first upsampling convolution
read it.

What it is worth (``benchmarks/qat_recipe.py``; benchmarks/README.md): on SCNet-T x4 all-INT8 it divides the visible
change by 1.5-4 on every content type at ``a`` 0.75 (0.5 and 1.0 do worse), with its scales from photo and generated
patches alike (from photos alone, flat colours' large channels clip: 11% of their pixels).
"""

import copy

import torch
from torch import nn

ALPHA = 0.75  # the share of each channel's range moved into its consumers' weights
_FLOOR = 1e-3  # a channel's range or weight below this share of the tensor's largest counts as this share


def channel_groups(model) -> list[tuple[list[nn.Conv2d], list[nn.Conv2d]]]:
    """(producers, consumers) that share one channel scale, for SCNet in its reference or ``dwconv`` form. A
    PixelShuffle stage's output mixes channels into pixels: its last convolution's output is left as it is."""
    from scnet_deploy.model.network import UpShiftMLP

    ups = model.upconvs()
    mlp = isinstance(ups[0], UpShiftMLP)
    ends = [(u.up_layer[1], u.up_layer[4]) if mlp else (u.up_layer[0], u.up_layer[3]) for u in ups]
    groups = [([b.conv1], [b.conv2]) for b in model.body]
    groups += [([first], [last]) for first, last in ends]
    if mlp:
        groups += [([last], [following]) for (_, last), (following, _) in zip(ends, ends[1:])]
        groups.append(([ends[-1][1]], [model.conv_hr]))
    groups.append(([model.conv_hr], [model.conv_last]))
    groups.append(([model.conv_first] + [b.conv2 for b in model.body], [b.conv1 for b in model.body] + [ends[0][0]]))
    return groups


def observe_inputs(model, convs: list[nn.Conv2d], batches: list[torch.Tensor], observe) -> None:
    """Run ``batches`` through ``model`` without gradients; each of ``convs``' inputs goes to ``observe(conv, x)``."""

    def hook(conv, inputs):
        observe(conv, inputs[0].detach())  # returns None: the input goes on unchanged

    hooks = [conv.register_forward_pre_hook(hook) for conv in convs]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for handle in hooks:
            handle.remove()


def input_ranges(model, convs: list[nn.Conv2d], batches: list[torch.Tensor]) -> dict[nn.Conv2d, torch.Tensor]:
    """Each convolution's largest absolute input per channel over ``batches``."""
    found = {conv: torch.zeros(conv.in_channels) for conv in convs}

    def record(conv, x):
        found[conv] = torch.maximum(found[conv], x.abs().amax((0, 2, 3)).cpu())

    observe_inputs(model, convs, batches, record)
    return found


def equalize(model, batches: list[torch.Tensor], alpha: float = ALPHA):
    """A copy of ``model`` (SCNet) with every channel group rescaled as the module docstring says; the same function.
    ``batches``: NCHW float LR patches whose activations set the scales."""
    model = copy.deepcopy(model)
    groups = channel_groups(model)
    ranges = input_ranges(model, [c for _, consumers in groups for c in consumers], batches)
    with torch.no_grad():
        for producers, consumers in groups:
            r = _floored(torch.stack([ranges[c] for c in consumers]).amax(0))
            w = _floored(torch.stack([c.weight.abs().amax((0, 2, 3)).cpu() for c in consumers]).amax(0))
            s = r ** alpha / w ** (1 - alpha)
            rescale(producers, consumers, s / s.log().mean().exp())  # geometric mean 1: the overall scale stays
    return model


def rescale(producers: list[nn.Conv2d], consumers: list[nn.Conv2d], s: torch.Tensor) -> None:
    """Divide channel c of what ``producers`` write by ``s[c]`` and multiply it back where ``consumers`` read it."""
    s = s.to(producers[0].weight.device)
    with torch.no_grad():
        for conv in producers:
            conv.weight.div_(s.view(-1, 1, 1, 1))
            conv.bias.div_(s)
        for conv in consumers:
            conv.weight.mul_(s.view(1, -1, 1, 1))


def _floored(values: torch.Tensor) -> torch.Tensor:
    return values.clamp_min(float(values.max()) * _FLOOR + 1e-12)
