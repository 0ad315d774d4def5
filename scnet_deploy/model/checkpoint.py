"""Read an SCNet checkpoint safely and build the model it describes.

Accepted: ``.pth``/``.pt`` as BasicSR writes it (``{"params": sd}``, ``{"params_ema": sd}``, both), common wrappers
(``state_dict``, ``model``), a raw state dict, a ``module.`` prefix (DataParallel), and ``.safetensors``.
Pickles are always read with ``weights_only=True``: a checkpoint can never run code.
"""

import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .arch import ArchSpec, build_model, detect_arch
from ..errors import CheckpointError
from ..manifest import sha256_of
from .network import SCNet
from .quant_ranges import METADATA_KEY, QuantRanges, split_ranges

PARAM_KEYS = ("params_ema", "params")  # BasicSR; EMA weights first: they are what BasicSR evaluates when present
_WRAPPER_KEYS = ("state_dict", "model")


class NonFiniteWeightsWarning(UserWarning):
    """The checkpoint holds NaN or Inf weights: outputs will be garbage and calibration is refused."""


@dataclass
class Checkpoint:
    model: SCNet
    spec: ArchSpec
    path: Path
    sha256: str
    param_key: str | None  # which entry of the file held the weights (None: a raw state dict)
    nonfinite: list[str] = field(default_factory=list)  # tensors with NaN/Inf values
    quant: QuantRanges | None = None  # a quantization-aware checkpoint's quantizer ranges (``scnet-deploy qat``)

    def require_finite(self, purpose: str) -> None:
        if self.nonfinite:
            raise CheckpointError(f"refusing to {purpose}: '{self.path}' has NaN/Inf weights in "
                                  f"{self.nonfinite[:4]}; retrain or restore the checkpoint.")

    def manifest_entry(self) -> dict:
        entry = {"path": str(self.path), "sha256": self.sha256, "param_key": self.param_key}
        return entry if self.quant is None else {**entry, "quantization_aware": self.quant.info}


def _unpickling_reason(exc: Exception) -> str:
    """The line of torch's long weights_only message that names the offending object, without terminal codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "GLOBAL" in line]
    return (named or lines or [type(exc).__name__])[0].split(". Please")[0][:160]


def _read_file(path: Path) -> Any:  # whatever the file holds: a state dict, a BasicSR dict, a module
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist or is not a file; pass the path of a .pth or "
                              ".safetensors file.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes); re-download or re-save it.")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"'{path}' is not a readable .safetensors file ({exc}); re-download or re-save it.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4": we report our own one line instead
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refused to load '{path}': it holds objects other than tensors, which could run code "
                              f"({_unpickling_reason(exc)}). Re-save it as a plain state dict or .safetensors.")
    except Exception as exc:  # the unpickler raises many kinds (EOFError, KeyError, BadZipFile...) on garbage
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"'{path}' is not a readable PyTorch checkpoint (truncated or another format: "
                              f"{reason}); re-download or re-save it.")


def _unwrap(obj: Any, param_key: str | None, path: Path) -> tuple[dict, str | None]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"'{path}' holds a {type(obj).__name__}, not a state dict; pass a checkpoint saved "
                              "with torch.save(model.state_dict()) or by BasicSR.")
    if param_key is not None:
        if param_key not in obj:
            found = [k for k in obj if not isinstance(obj[k], torch.Tensor)] or sorted(obj)[:5]
            raise CheckpointError(f"--param-key '{param_key}' is not in '{path}'; it has {found}. Pick one of those.")
        inner = obj[param_key]
        key = param_key
    else:
        key = next((k for k in PARAM_KEYS + _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        inner = obj[key] if key else obj
    if not isinstance(inner, dict):
        raise CheckpointError(f"entry '{key}' of '{path}' is a {type(inner).__name__}, not a state dict.")
    non_tensors = [k for k, v in inner.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(f"'{path}' is not a state dict: entries {non_tensors[:5]} are not tensors. Pass the "
                              "weights file (BasicSR 'params'/'params_ema' or a raw state dict).")
    if inner and all(k.startswith("module.") for k in inner):
        inner = {k[len("module."):]: v for k, v in inner.items()}
    return inner, key


def _load_strict(model: SCNet, sd: dict, path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"'{path}' is not an SCNet state dict of the detected shape: missing keys {missing[:6]}"
                              f"{' ...' if len(missing) > 6 else ''}, unexpected keys {unexpected[:6]}"
                              f"{' ...' if len(unexpected) > 6 else ''}. Pass a checkpoint of the official SCNet.")
    wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"'{path}' has inconsistent shapes: {'; '.join(wrong[:3])}. The file is damaged or "
                              "mixes two models.")
    # float weights only: an integer tensor cast to float is a different model (int8 codes without their scales)
    integer = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in sd.items()
               if not v.is_floating_point() and k in expected]
    if integer:
        raise CheckpointError(f"'{path}' holds integer weights ({', '.join(integer[:3])}), and SCNet's are float: "
                              "they would run as their raw codes, without the scales that make them weights. Pass the "
                              "float checkpoint it was quantized from.")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)


def read_state_dict(path: str | Path, param_key: str | None = None) -> tuple[dict, str | None]:
    path = Path(path)
    return _unwrap(_read_file(path), param_key, path)


def _quantization_record(path: Path) -> dict | None:
    """The quantization-aware record in a .safetensors file's metadata (None: none)."""
    import json

    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    text = (safe_open(str(path), "pt").metadata() or {}).get(METADATA_KEY)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        raise CheckpointError(f"'{path}': its quantization-aware record ({METADATA_KEY}) is not JSON; re-save it "
                              "with scnet-deploy qat.") from None
    return record if isinstance(record, dict) else None


def load_checkpoint(path: str | Path, scale: int | None = None, param_key: str | None = None) -> Checkpoint:
    """Load ``path`` into an SCNet in eval mode, its architecture detected from the weights alone (a
    quantization-aware checkpoint's ranges are read beside them)."""
    path = Path(path)
    sd, key = read_state_dict(path, param_key)
    try:
        sd, quant = split_ranges(sd, _quantization_record(path))
    except ValueError as exc:
        raise CheckpointError(f"'{path}': {exc}; re-save it with scnet-deploy qat.") from None
    if scale is None and quant is not None and isinstance(quant.info.get("scale"), int):
        scale = quant.info["scale"]  # recorded by scnet-deploy qat
    spec = detect_arch(sd, scale=scale, filename=path)
    model = build_model(spec)
    _load_strict(model, sd, path)
    model.eval()
    nonfinite = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        warnings.warn(f"'{path}' has NaN/Inf weights in {nonfinite[:4]}: its outputs will not be meaningful, and "
                      "calibration is refused.", NonFiniteWeightsWarning, stacklevel=2)
    if quant is not None:
        convs = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
        stray = sorted((set(quant.inputs) | set(quant.weights)) - convs)
        if stray:
            raise CheckpointError(f"'{path}' carries quantizer ranges for {stray[:3]}, which are not convolutions of "
                                  "this model; re-save it with scnet-deploy qat.")
    return Checkpoint(model, spec, path, sha256_of(path), key, nonfinite, quant)
