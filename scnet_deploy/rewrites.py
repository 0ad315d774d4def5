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


# The ordered pipeline: (name, rewrite). Later issues add rewrites here, each with its own exactness test.
PIPELINE: list[tuple[str, Callable[[nn.Module, DeployOptions], nn.Module]]] = [
    ("shift", lambda m, o: replace_shift(m, o.shift)),
]


def to_deploy_form(model: nn.Module, options: DeployOptions = DeployOptions()) -> nn.Module:
    """The reference model with every rewrite of PIPELINE applied, in eval mode."""
    for _, rewrite in PIPELINE:
        model = rewrite(model, options)
    return model.eval()
