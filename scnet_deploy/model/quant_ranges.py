"""The quantizer ranges a quantization-aware checkpoint carries (``scnet-deploy qat`` writes them).

A quantization-aware checkpoint is a state dict like any other plus, per quantized convolution (official module
names), ``quant.<module>.input_amax`` (its input's range, symmetric int8: scale amax/127, zero point 0) and
``quant.<module>.weight_amax`` (per output channel, symmetric int8), and its record (scheme, steps, data hash,
library) as JSON in the file's metadata under ``METADATA_KEY``. One scheme serves every INT8 backend (symmetric int8
activations, per-channel symmetric int8 weights: docs/features.md says which takes it how).
"""
from dataclasses import dataclass, field

import numpy as np

PREFIX = "quant."
METADATA_KEY = "scnet_deploy.quantization_aware"
SCHEME = "int8 symmetric per-tensor activations, int8 symmetric per-channel weights (zero points 0)"
QMAX = 127  # symmetric int8: scale = amax / 127 (weights [-127, 127], activations [-128, 127])


@dataclass(frozen=True)
class QuantRanges:
    """Activation ranges (``inputs``: module -> amax of its input) and weight ranges (``weights``: module -> amax per
    output channel) of a quantization-aware checkpoint, and its record (``info``)."""

    inputs: dict[str, float]
    weights: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    @property
    def quantized_residual(self) -> bool:
        """Whether the training quantized the residual stream where each block reads it (the adds read it too)."""
        return self.info.get("residual_stream") == "quantized"

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The state-dict entries that carry these ranges."""
        found = {f"{PREFIX}{m}.input_amax": np.asarray(a, np.float32).reshape(()) for m, a in self.inputs.items()}
        found.update({f"{PREFIX}{m}.weight_amax": np.asarray(a, np.float32) for m, a in self.weights.items()})
        return found

    def summary(self) -> str:
        steps, data = self.info.get("steps"), self.info.get("data_sha256", "")[:12]
        return (f"quantization-aware: {len(self.inputs)} convolutions with activation ranges, {len(self.weights)} "
                f"with weight ranges; {self.info.get('scheme', SCHEME)}; {steps} steps on data {data or '?'}"
                f" ({self.info.get('library', '?')})")


def split_ranges(state: dict, info: dict | None) -> tuple[dict, "QuantRanges | None"]:
    """(the weights, the ranges) of a state dict whose ``quant.`` entries carry ranges (None: it has none)."""
    weights = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    quant = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if not quant:
        return weights, None
    inputs, ranges = {}, {}
    for key, value in quant.items():
        module, _, kind = key.rpartition(".")
        array = np.asarray(value.detach().float().cpu().numpy() if hasattr(value, "detach") else value, np.float32)
        if kind == "input_amax":
            inputs[module] = float(array.reshape(-1)[0])
        elif kind == "weight_amax":
            ranges[module] = array.reshape(-1)
        else:
            raise ValueError(f"{PREFIX}{key}: a quantizer range is input_amax or weight_amax")
    return weights, QuantRanges(inputs, ranges, dict(info or {}))


