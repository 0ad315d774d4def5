"""Exact rewrites of the reference SCNet into its deploy form, listed as one ordered pipeline.

Each rewrite is a pure function ``(module, options) -> module`` that returns a new module (the input is never
modified) and changes no output beyond float rounding; tests/test_rewrites.py proves that for each one.
"""

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ExportError
# the form names live in forms.py (no PyTorch); DeployOptions is imported from here too
from .forms import FOLD, DeployOptions, check_shift  # noqa: F401
from .shift import OFFSETS, Shift8, ShiftDWConv, ShiftSlice

def replace_shift(model: nn.Module, form: str) -> nn.Module:
    """Replace every official Shift8 by the equivalent ``form`` ("slice", "dwconv"), or fold it ("fold")."""
    check_shift(form)
    if form == FOLD:
        return fold_shift(model)
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Shift8):
                setattr(parent, name, ShiftSlice(child.g) if form == "slice" else ShiftDWConv(child.g * 8))
    return model


def conv_before_upsample(model: nn.Module) -> nn.Module:
    """In each bilinear upsampling stage, run the 1x1 conv that follows the upsample before it instead.

    Both are linear per pixel and bilinear weights sum to one (border clamping included), so
    conv(up(x)) == up(conv(x)), bias included, for a quarter of that conv's MACs at x2 (a ninth at x3).
    """
    from .network import UpShiftMLP

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, UpShiftMLP):
            up, conv, *rest = module.up_layer
            if isinstance(up, nn.Upsample) and isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1):
                module.up_layer = nn.Sequential(conv, up, *rest)
    return model


class BilinearDeconv(nn.Module):
    """Bilinear upsampling by an even factor s (align_corners=False) as edge padding + a depthwise transposed conv.

    Half-pixel bilinear by s blends each pixel with one neighbour using the tent weights
    k[t] = 1 - |t - (s - 1/2)| / s, t = 0 .. 2s-1 (x2: 1/4, 3/4, 3/4, 1/4); the border clamp of the resize is the
    one-pixel edge padding, and the transposed conv's padding 3s/2 crops its output to exactly s x the input.
    """

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        if scale % 2:
            raise ValueError(f"BilinearDeconv needs an even scale, got {scale}")
        self.channels, self.scale = channels, scale
        k = 1 - (torch.arange(2 * scale, dtype=torch.float64) - (scale - 0.5)).abs() / scale
        weight = torch.outer(k, k).float().expand(channels, 1, 2 * scale, 2 * scale).contiguous()
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", torch.zeros(channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(F.pad(x, [1, 1, 1, 1], mode="replicate"), self.weight, self.bias,
                                  stride=self.scale, padding=3 * self.scale // 2, groups=self.channels)


def _even_bilinear(module: nn.Module) -> int | None:
    if (isinstance(module, nn.Upsample) and module.mode == "bilinear" and not module.align_corners
            and module.size is None and float(module.scale_factor) in (2.0, 4.0, 8.0)):
        return int(module.scale_factor)
    return None


def upsample_as_deconv(model: nn.Module) -> nn.Module:
    """Every bilinear upsample by an even factor (the x2 stages of the shift-MLP upsampler, the x4/x8 image skip) as
    a BilinearDeconv. Exact; whether it is faster depends on the runtime (OpenVINO: yes; ONNX Runtime: no)."""
    from .network import UpShiftMLP

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if isinstance(module, UpShiftMLP):
            channels = next(m for m in module.up_layer if isinstance(m, nn.Conv2d)).in_channels
            for i, layer in enumerate(module.up_layer):
                if _even_bilinear(layer):
                    module.up_layer[i] = BilinearDeconv(channels, _even_bilinear(layer))
    skip = getattr(model, "skip", None)
    if skip is not None and _even_bilinear(skip):
        model.skip = BilinearDeconv(model.config.num_in_ch, _even_bilinear(skip))
    return model


class BilinearPhases(nn.Module):
    """Bilinear upsampling by an integer factor s (align_corners=False) computed at the input's resolution: edge
    padding, a 3x3 conv giving each channel's s*s output phases, then depth-to-space.

    Output pixel s*i + p (per axis) reads the input at i + (p + 1/2)/s - 1/2, an offset in (-1/2, 1/2): it blends x[i]
    with x[i - 1] (negative offset) or x[i + 1] with the offset's magnitude as weight; per phase that is a 3x3 kernel
    (the outer product of the two axes' taps), and the resize's border clamp is the one-pixel edge padding.
    """

    def __init__(self, channels: int, scale: int) -> None:
        super().__init__()
        self.channels, self.scale = channels, scale

        def taps(p: int) -> torch.Tensor:
            offset = (p + 0.5) / scale - 0.5
            t = torch.zeros(3, dtype=torch.float64)
            t[0 if offset < 0 else 2], t[1] = abs(offset), 1 - abs(offset)
            return t

        phases = torch.stack([torch.outer(taps(py), taps(px)) for py in range(scale) for px in range(scale)])
        weight = phases.float()[None].expand(channels, -1, -1, -1).reshape(channels * scale * scale, 1, 3, 3)
        self.register_buffer("weight", weight.contiguous(), persistent=False)
        # an explicit zero bias: without one the dynamo exporter makes it in the graph (CastLike + Expand)
        self.register_buffer("bias", torch.zeros(channels * scale * scale), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phases = F.conv2d(F.pad(x, [1, 1, 1, 1], mode="replicate"), self.weight, self.bias, groups=self.channels)
        return F.pixel_shuffle(phases, self.scale)


def skip_as_conv(model: nn.Module) -> nn.Module:
    """The image skip's bilinear upsample as BilinearPhases. Exact. The resize of the few image channels at the
    output size is slow for its size (OpenVINO: 11.9 of its INT8 engine's 162 ms here, probably computed in the
    channel-blocked layout of the 64-channel maps); the conv works at the input size and depth-to-space only moves
    the result (benchmarks/skip_as_conv.py)."""
    model = copy.deepcopy(model)
    skip = getattr(model, "skip", None)
    if (isinstance(skip, nn.Upsample) and skip.mode == "bilinear" and not skip.align_corners and skip.size is None
            and float(skip.scale_factor).is_integer()):
        model.skip = BilinearPhases(model.config.num_in_ch, int(skip.scale_factor))
    return model


def folded_conv(conv: nn.Conv2d, groups: int) -> nn.Conv2d:
    """``conv`` (1x1) applied after the 8-direction shift, as one 3x3 conv with zero padding 1.

    shift(x)[c](y, x) = x[c](y + dy_c, x + dx_c), zero outside; a 3x3 conv reads x(y + ky - 1, x + kx - 1) under the
    same zero padding, so each input channel's weight goes to the one tap (1 + dy_c, 1 + dx_c): 8 of 9 taps are zero.
    """
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=conv.bias is not None)
    weight = conv.weight.detach().new_zeros(conv.out_channels, conv.in_channels, 3, 3)
    for i, (dy, dx) in enumerate(OFFSETS):
        weight[:, i * groups:(i + 1) * groups, 1 + dy, 1 + dx] = conv.weight.detach()[:, i * groups:(i + 1) * groups, 0, 0]
    folded.weight = nn.Parameter(weight)
    if conv.bias is not None:
        folded.bias = nn.Parameter(conv.bias.detach().clone())
    return folded


def fold_shift(model: nn.Module) -> nn.Module:
    """Fold every official shift into the 1x1 conv after it (through the ReLU/LeakyReLU between them in the residual
    blocks: a pointwise activation with act(0) == 0 commutes with a zero-filled shift)."""
    from .network import ResidualBlockShift

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if isinstance(module, ResidualBlockShift) and isinstance(module.shift, Shift8):
            # x + conv2(relu(shift(conv1 x))) == x + conv2(shift(relu(conv1 x))) == x + folded(relu(conv1 x))
            module.conv2 = folded_conv(module.conv2, module.shift.g)
            module.shift = nn.Identity()
        elif isinstance(module, nn.Sequential):
            layers = list(module)
            for i, layer in enumerate(layers[:-1]):
                after = layers[i + 1]
                if isinstance(layer, Shift8) and isinstance(after, nn.Conv2d) and after.kernel_size == (1, 1):
                    layers[i:i + 2] = [nn.Identity(), folded_conv(after, layer.g)]
            for i, layer in enumerate(layers):
                module[i] = layer
    if any(isinstance(m, Shift8) for m in model.modules()):
        raise ExportError("a shift is not followed by a 1x1 conv, so it cannot be folded; use --shift dwconv.")
    return model


# The ordered pipeline: (name, rewrite), each switched by DeployOptions and each exact alone (tests/test_rewrites.py,
# test_fuzz.py). Which combination runs fastest depends on the backend, precision and size: the autotuner
# (scnet_deploy/autotune.py) times the candidates; the defaults are the form measured fastest in ONNX Runtime FP32.
PIPELINE: list[tuple[str, Callable[[nn.Module, DeployOptions], nn.Module]]] = [
    ("conv_before_upsample", lambda m, o: conv_before_upsample(m) if o.conv_before_upsample else m),
    # before upsample_as_deconv: with both, the skip is BilinearPhases (the deconv rewrite leaves it alone)
    ("skip_as_conv", lambda m, o: skip_as_conv(m) if o.skip_as_conv else m),
    ("upsample_as_deconv", lambda m, o: upsample_as_deconv(m) if o.upsample_as_deconv else m),
    ("shift", lambda m, o: replace_shift(m, o.shift)),
]


def to_deploy_form(model: nn.Module, options: DeployOptions = DeployOptions()) -> nn.Module:
    """The reference model with every rewrite of PIPELINE applied, in eval mode."""
    for _, rewrite in PIPELINE:
        model = rewrite(model, options)
    return model.eval()
