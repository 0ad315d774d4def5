"""Exact rewrites of the reference SCNet into its deploy form, listed as one ordered pipeline.

Each rewrite is a pure function ``(module, options) -> module`` that returns a new module (the input is never
modified) and changes no output beyond float rounding; tests/test_rewrites.py proves that for each one.
"""

import copy
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .errors import ExportError
from .shift import SHIFT_FORMS, Shift8, ShiftDWConv, ShiftSlice

DEFAULT_SHIFT = "dwconv"  # measured fastest in ONNX Runtime (see README, benchmarks/shift_forms.py)


@dataclass(frozen=True)
class DeployOptions:
    shift: str = DEFAULT_SHIFT  # "slice" (pad + slices + concat) or "dwconv" (depthwise one-hot 3x3)


def replace_shift(model: nn.Module, form: str) -> nn.Module:
    """Replace every official Shift8 by the equivalent ``form`` ("slice" or "dwconv")."""
    if form not in SHIFT_FORMS:
        raise ExportError(f"--shift {form!r} is not a shift form; choose one of {sorted(SHIFT_FORMS)}.")
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
    from .model import UpShiftMLP

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, UpShiftMLP):
            up, conv, *rest = module.up_layer
            if isinstance(up, nn.Upsample) and isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1):
                module.up_layer = nn.Sequential(conv, up, *rest)
    return model


# The ordered pipeline: (name, rewrite). Each has its own exactness test (tests/test_rewrites.py, test_fuzz.py).
# conv_before_upsample is exact and saves 17% of SCNet-T x4's MACs, but measured no faster in ONNX Runtime on this
# CPU (386 vs 390 ms at 180x320, interleaved runs: the HR tail is memory-bound), so it is not a default; it is a
# candidate for per-backend autotuning.
PIPELINE: list[tuple[str, Callable[[nn.Module, DeployOptions], nn.Module]]] = [
    ("shift", lambda m, o: replace_shift(m, o.shift)),
]
CANDIDATES: list[tuple[str, Callable[[nn.Module, DeployOptions], nn.Module]]] = [
    ("conv_before_upsample", lambda m, o: conv_before_upsample(m)),
]


def to_deploy_form(model: nn.Module, options: DeployOptions = DeployOptions()) -> nn.Module:
    """The reference model with every rewrite of PIPELINE applied, in eval mode."""
    for _, rewrite in PIPELINE:
        model = rewrite(model, options)
    return model.eval()
