"""The ``infer`` verb: arrays in, arrays out. Each float32 CHW array of an ``.npz`` file (LR, values in [0, 1]) runs
through one model (an artifact, or a checkpoint where PyTorch is installed), tiled exactly where the memory model
says a whole image would not fit, and the outputs are written under the same keys to another ``.npz``, atomically.

It is what ``validate --on`` runs on a device: the inputs are made here, the device's engine runs them there, and
the drift is measured here against the FP32 PyTorch reference, on exactly the arrays the engine saw.
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ScnetDeployError
from .memory import limit_bytes
from .options import RuntimeOptions
from .progress import Progress, reporter
from .imaging.tiling import run_within


@dataclass(frozen=True)
class InferOptions:
    output: Path  # the .npz to write
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    max_memory_mb: int | None = None  # images whose run would pass this are run in exact tiles


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ScnetDeployError(f"'{path}' is not a readable .npz of arrays ({exc}); write one with numpy.savez.")
    bad = [k for k, a in arrays.items() if a.ndim != 3 or a.dtype != np.float32]
    if bad:
        raise ScnetDeployError(f"'{path}': {bad} are not float32 CHW arrays; infer takes LR images as float32 CHW "
                               "in [0, 1].")
    return arrays


def write_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    """``numpy.savez`` to a temporary file beside ``path``, then renamed: a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def infer(model: str | Path, inputs: str | Path, options: InferOptions, progress=None) -> dict:
    """Run ``model`` on every array of ``inputs`` (.npz); write the outputs to ``options.output``; return what ran
    (the model's name, backend and precision, per-array tile and seconds, the machine)."""
    from .doctor import machine
    from .runtime import open_model

    arrays = read_arrays(Path(inputs))
    say = reporter(progress)
    outputs, runs = {}, []
    with open_model(model, options.runtime) as runner:
        scale = runner.arch["scale"]
        limit = limit_bytes(options.max_memory_mb)
        for i, (key, lr) in enumerate(arrays.items()):
            say(Progress("inferring", done=i, total=len(arrays)))
            t0 = time.perf_counter()
            outputs[key], tile = run_within(runner, lr, scale, limit)
            runs.append({"key": key, "shape": list(lr.shape), "tile": tile, "seconds": time.perf_counter() - t0})
        name, backend, precision = runner.name, runner.backend, runner.precision
    write_arrays(outputs, options.output)
    return {"model": str(model), "name": name, "backend": backend, "precision": precision, "runs": runs,
            "output": str(options.output), "machine": machine()}
