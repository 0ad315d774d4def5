"""Parameter and multiply-accumulate counts, measured by running the model (no hand-written formulas to drift)."""

import torch
from torch import nn


def _run_hooked(model: nn.Module, kinds: tuple, hook, height: int, width: int, in_ch: int) -> None:
    """Run ``model`` once on a zero ``height`` x ``width`` input with ``hook`` on every module of ``kinds``."""
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_ch, height, width))
    finally:
        for h in handles:
            h.remove()


def count_macs(model: nn.Module, height: int, width: int, in_ch: int = 3) -> int:
    """MACs of every convolution for one ``height`` x ``width`` input (the shift, activations and resize are free)."""
    total = 0

    def hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    _run_hooked(model, (nn.Conv2d,), hook, height, width, in_ch)
    return total


def macs_per_lr_pixel(model: nn.Module, in_ch: int = 3) -> float:
    # Every conv is 1x1 and every map scales with the input area, so an 8x8 run gives the exact per-pixel rate.
    return count_macs(model, 8, 8, in_ch) / 64


def map_elements(model: nn.Module, height: int, width: int, in_ch: int = 3) -> dict[str, int]:
    """Elements of the feature maps the model's memory-moving ops write for one ``height`` x ``width`` input: every
    convolution (the depthwise shift included), resize and shift, split into those at the input's size ("lr") and
    those above it ("hr", the upsampling tail). Activations and the residual adds are left out: a runtime fuses
    them into the op before. Each map is written once and read at least once: the floor of a run's memory traffic
    is twice these elements at the precision's bytes per element."""
    from .shift import Shift8, ShiftDWConv, ShiftSlice

    counts = {"lr": 0, "hr": 0}

    def hook(_module, _inputs, output: torch.Tensor) -> None:
        counts["hr" if output.shape[-2] * output.shape[-1] > height * width else "lr"] += output[0].numel()

    _run_hooked(model, (nn.Conv2d, nn.Upsample, Shift8, ShiftSlice, ShiftDWConv), hook, height, width, in_ch)
    return counts
