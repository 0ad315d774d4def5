"""The parameter-free 8-direction spatial shift of SCNet, in three exactly equivalent forms.

Channels are split into 8 equal groups; group i is moved one pixel in direction OFFSETS[i] with zero fill, i.e.
``out[:, group i, y, x] = in[:, group i, y + dy, x + dx]`` (zero where that lies outside the image).

- ``Shift8``: the official implementation (writes slices into a zeros tensor). Exports to ONNX as ScatterND.
- ``ShiftSlice``: one zero pad, eight constant slices and a concat. Slice bounds are negative constants, so the
  exported graph needs no shape arithmetic for dynamic sizes.
- ``ShiftDWConv``: a depthwise 3x3 convolution with fixed one-hot kernels and zero padding 1.
"""

import torch
from torch import nn
from torch.nn import functional as F

# (dy, dx) per channel group, in the official order.
OFFSETS = ((-1, 0), (1, 0), (0, -1), (0, 1), (1, 1), (1, -1), (-1, 1), (-1, -1))


class Shift8(nn.Module):
    """The official shift, kept bit for bit (reference form)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.g = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        g = self.g
        out = torch.zeros_like(x)
        pad_x = F.pad(x, [1, 1, 1, 1])
        for i, (dy, dx) in enumerate(OFFSETS):
            out[:, i * g:(i + 1) * g] = pad_x[:, i * g:(i + 1) * g, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        return out


def _window(offset: int) -> slice:
    # Rows (or columns) 1+offset .. 1+offset+size of the padded map, written with negative ends so no size is needed.
    start = 1 + offset
    stop = start - 2
    return slice(start, stop if stop < 0 else None)


class ShiftSlice(nn.Module):
    """Pad once, slice each group's window, concatenate."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.g = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.g
        pad_x = F.pad(x, [1, 1, 1, 1])
        parts = [pad_x[:, i * g:(i + 1) * g, _window(dy), _window(dx)] for i, (dy, dx) in enumerate(OFFSETS)]
        return torch.cat(parts, dim=1)


def shift_kernel(channels: int) -> torch.Tensor:
    """One-hot depthwise 3x3 kernels (channels x 1 x 3 x 3) that perform the shift under zero padding 1."""
    g = channels // 8
    weight = torch.zeros(channels, 1, 3, 3)
    for i, (dy, dx) in enumerate(OFFSETS):
        weight[i * g:(i + 1) * g, 0, 1 + dy, 1 + dx] = 1.0
    return weight


class ShiftDWConv(nn.Module):
    """The shift as a depthwise convolution with fixed one-hot kernels (a buffer, not a parameter)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("weight", shift_kernel(channels), persistent=False)
        # An explicit zero bias: without one the dynamo exporter builds a zero bias at run time (CastLike+Expand).
        self.register_buffer("bias", torch.zeros(channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=1, groups=self.channels)


SHIFT_FORMS = {"slice": ShiftSlice, "dwconv": ShiftDWConv}
