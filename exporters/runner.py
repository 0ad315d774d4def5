"""The runner contract: every backend's engine runs as ``with runner: sr = runner.infer(lr)``.

``lr`` is float32 NCHW (or CHW) in [0, 1]; the result has the same layout at ``scale`` times the size. Nothing here
needs PyTorch (an artifact runs without it); the PyTorch runners are in ``torch_runner``.
"""

import abc
import hashlib

import numpy as np

from scnet_deploy.errors import ScnetDeployError, VerificationError
from scnet_deploy.gate import AccuracyGate
from scnet_deploy.options import QUANTIZED, SizeRange


class InputOutOfRange(ScnetDeployError):
    """The input size is outside the range the engine was built for."""


class Runner(abc.ABC):
    """Base class: input checks and the context-manager protocol; subclasses implement ``_infer(nchw)``."""

    backend = "?"
    stoppable = False  # its runtime can end a run in progress (``stop``)

    def __init__(self, precision: str = "fp32", size_range: SizeRange = SizeRange(), name: str = "",
                 arch: dict | None = None) -> None:
        self.precision = precision
        self.size_range = size_range
        self.name = name or self.backend
        self.arch = arch  # ArchSpec.to_dict() of the model it runs: scale, receptive radius, ...
        self.manifest: dict = {}  # the artifact's manifest; empty for a PyTorch module

    def declare(self, manifest: dict) -> "Runner":
        """Declare what this engine is from its artifact's manifest: the manifest, the architecture and, where the
        engine was built for a fixed range, the size range. Every backend's ``load`` returns ``runner.declare(...)``."""
        self.manifest = manifest
        self.arch = manifest.get("arch", self.arch)
        if manifest.get("size_range"):
            self.size_range = SizeRange.from_dict(manifest["size_range"])
        return self

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        from scnet_deploy.interrupts import abandoned

        if not abandoned():  # an engine freed under the thread still running it crashes (ncnn: -11); we are exiting
            self.close()

    def close(self) -> None:
        pass

    def infer(self, lr: np.ndarray) -> np.ndarray:
        lr = np.asarray(lr)
        squeeze = lr.ndim == 3
        if squeeze:
            lr = lr[None]
        if lr.ndim != 4:
            raise ScnetDeployError(f"infer() takes an NCHW or CHW array, got shape {lr.shape}.")
        h, w = lr.shape[2:]
        if not self.size_range.contains(h, w):
            r = self.size_range
            raise InputOutOfRange(f"{self.name}: input {h}x{w} is outside the range this engine was built for "
                                  f"(min {r.min}, max {r.max}); re-export with --min-size/--max-size covering it, "
                                  "or tile the image.")
        from scnet_deploy.interrupts import run_stoppable

        x = np.ascontiguousarray(lr, dtype=np.float32)
        # Ctrl-C ends it within a second on every backend: stopped where the runtime can be, else abandoned
        out = run_stoppable(lambda: self._infer(x), self.stop if self.stoppable else None)
        return out[0] if squeeze else out

    def stop(self) -> None:
        """Ask the runtime to end the run in progress (called from another thread on Ctrl-C or SIGTERM); a backend
        whose runtime cannot be cancelled leaves it (``interrupts.run_stoppable`` abandons it)."""

    @abc.abstractmethod
    def _infer(self, lr: np.ndarray) -> np.ndarray:
        """Run the engine on a contiguous float32 NCHW batch that passed the checks."""

    @property
    def element_bytes(self) -> int:
        """Bytes per feature-map element as the engine computes (the profile's bytes moved): by its precision; a
        backend whose compute precision differs from its label (OpenVINO's fp16 weights, f32 compute) says so."""
        return {"bf16": 2, "fp16": 2, "int8": 1, "a16w8": 2}.get(self.precision, 4)

    # why ``profile_ops`` gives nothing on this backend (its runtime has no per-operator timing one can read)
    profile_note = "its runtime offers no per-operator timing"

    def profile_ops(self, lr: np.ndarray, runs: int) -> dict | None:
        """Per-operator time from the runtime's own profiler over ``runs`` runs of ``lr`` after one warm-up:
        {"ops": [{"name", "type", "ms"} (mean per run)], "runs": runs}; None where it has none (``profile_note``)."""
        return None

    def optimal_requests(self) -> int:
        """How many requests this engine runs best with in flight (throughput); 1 where it has no notion of it."""
        return 1

    def worker(self) -> "Runner":
        """A runner one more thread can use while others use theirs (``upscale`` of a folder, several images in
        flight): the same engine; a backend whose runs hold per-request state (OpenVINO) gives a new request."""
        return self

    def parts(self):
        """This engine's graph cut at the body's output, as two functions: ``body(lr) -> features`` and
        ``tail(features, lr) -> sr`` (``split.SplitRunner``); None where the backend cannot cut its graph. Each call
        gives functions one more thread can use, as ``worker``."""
        return None

    def run_in_flight(self, lr: np.ndarray, count: int, inflight: int) -> None:
        """Run ``count`` inferences of ``lr`` with ``inflight`` of them at a time: threads here (the runtimes
        release the GIL while they compute); a backend with an asynchronous API overrides this."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(inflight) as pool:
            for _ in pool.map(lambda _: self.infer(lr), range(count)):
                pass


class TiledRunner(Runner):
    """An engine run tile by tile with a halo >= the receptive radius (so exactly), where the autotuner measured it
    faster than whole images (``manifest["autotune"]["tile"]``)."""

    def __init__(self, inner: Runner, tile: int, halo: int, scale: int) -> None:
        r = inner.size_range
        super().__init__(inner.precision, SizeRange(r.min, r.opt, None), f"{inner.name} (tiles of {tile})",
                         inner.arch)
        self.manifest = inner.manifest
        self.backend = inner.backend
        self.inner, self.tile, self.halo, self.scale = inner, tile, halo, scale

    def close(self) -> None:
        self.inner.close()

    @property
    def stoppable(self) -> bool:
        return self.inner.stoppable

    def stop(self) -> None:
        self.inner.stop()

    def worker(self) -> "Runner":
        import copy

        clone = copy.copy(self)
        clone.inner = self.inner.worker()
        return clone

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        from scnet_deploy.imaging.tiling import upscale_float

        return np.stack([upscale_float(self.inner.infer, image, self.scale, self.tile, self.halo) for image in lr])


def array_key(x: np.ndarray) -> str:
    """What identifies an input array: its shape and its float32 bytes."""
    return hashlib.sha256(repr(x.shape).encode() + np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()


class ShippedReference:
    """PyTorch FP32 outputs computed elsewhere for known inputs (the verification set an export ships to the device
    that builds its engine): ``reference(x)`` is the output made for exactly ``x``."""

    def __init__(self, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> None:
        self.inputs = inputs
        self._outputs = {array_key(x): y for x, y in zip(inputs, outputs)}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._outputs[array_key(x)]

    def save(self, path) -> None:
        np.savez(path, **{f"input_{i}": x for i, x in enumerate(self.inputs)},
                 **{f"output_{i}": self(x) for i, x in enumerate(self.inputs)})

    @classmethod
    def load(cls, path) -> "ShippedReference":
        with np.load(path, allow_pickle=False) as data:
            n = len([k for k in data.files if k.startswith("input_")])
            return cls([data[f"input_{i}"] for i in range(n)], [data[f"output_{i}"] for i in range(n)])


# Tolerances per precision: FP32 must match to float rounding; reduced precisions must stay close to FP32.
FP32_MAX_ABS = 1e-4
REDUCED_MIN_PSNR_DB = 30.0
INT8_MIN_PSNR_DB = 25.0  # a sanity floor against broken engines; the real INT8 gate is the PSNR budget on images


SAME_ENGINE_MIN_PSNR_DB = 50.0  # an engine against itself run another way (split in two parts): far closer still


def within_tolerance(precision: str, max_abs_diff: float, min_psnr_db: float, max_abs: float = FP32_MAX_ABS,
                     same_engine: bool = False) -> bool:
    """The one verification tolerance, for an engine's output against PyTorch FP32 (``verify_runner``, the device
    layer's check of an engine built there) or, ``same_engine``, against the same engine run another way (the
    autotuner's split execution): FP32 to float rounding; a reduced precision by PSNR (INT8's floor here is a
    sanity floor: its gate is the accuracy gate on images)."""
    if precision == "fp32":
        return max_abs_diff <= max_abs
    floor = SAME_ENGINE_MIN_PSNR_DB if same_engine else INT8_MIN_PSNR_DB if precision in QUANTIZED else REDUCED_MIN_PSNR_DB
    return min_psnr_db >= floor


def tolerance_rule(precision: str, max_abs: float = FP32_MAX_ABS) -> str:
    """``within_tolerance``'s rule in words, as verification records state it."""
    if precision == "fp32":
        return f"max abs diff <= {max_abs:g}"
    return f"PSNR vs FP32 >= {INT8_MIN_PSNR_DB if precision in QUANTIZED else REDUCED_MIN_PSNR_DB:g} dB"


def psnr_vs_reference(out: np.ndarray, ref: np.ndarray) -> float:
    mse = float(np.mean((out.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def random_inputs(shapes, in_ch: int = 3, seed: int = 0) -> list[np.ndarray]:
    """The random float32 inputs an engine is verified on, one per (batch, h, w) of ``shapes``."""
    gen = np.random.default_rng(seed)
    return [gen.random((batch, in_ch, h, w), dtype=np.float32) for batch, h, w in shapes]


def verify_runner(runner: Runner, reference, shapes, precision: str, in_ch: int = 3,
                  seed: int = 0, inputs: list[np.ndarray] | None = None, max_abs: float = FP32_MAX_ABS,
                  int8: dict | None = None) -> dict:
    """Compare ``runner`` with the PyTorch FP32 ``reference`` (a module, or ``ReferenceOutputs``) at each
    (batch, h, w) on random inputs (or on ``inputs``,
    natural images, for INT8 whose calibrated ranges are those of images); raise if out of tolerance.

    INT8 is verified by its budget check (``int8``: the hold-out drift measured by the quantizer) plus a sanity
    floor of PSNR vs FP32 on image crops against broken engines."""
    cases = []
    if inputs is None:
        inputs = random_inputs(shapes, in_ch, seed)
    for x in inputs:
        batch, _, h, w = x.shape
        if isinstance(reference, ShippedReference):  # outputs made elsewhere (a device verifies without PyTorch)
            ref = reference(x)
        else:
            import torch

            with torch.no_grad():
                ref = reference(torch.from_numpy(x)).numpy()
        out = runner.infer(x)
        finite = bool(np.isfinite(out).all())
        diff = float(np.abs(out - ref).max()) if finite and out.shape == ref.shape else float("inf")
        cases.append({"shape": [batch, in_ch, h, w], "max_abs_diff": diff,
                      "psnr_vs_fp32_db": psnr_vs_reference(out, ref) if diff != float("inf") else 0.0})
    worst_diff = max(c["max_abs_diff"] for c in cases)
    worst_psnr = min(c["psnr_vs_fp32_db"] for c in cases)
    if precision == "fp32":
        passed, rule = within_tolerance(precision, worst_diff, worst_psnr, max_abs), tolerance_rule(precision, max_abs)
    elif int8 is not None or precision == "int8":
        if int8 is None:
            raise VerificationError(f"{runner.name}: an INT8 engine is verified by its hold-out budget check, and "
                                    "none was given (a bug: report it).")
        passed = within_tolerance(precision, worst_diff, worst_psnr) and int8["within_budget"]
        gate = ("the accuracy gate on the hold-out: "
                + AccuracyGate.from_record(int8["budget_db"], int8.get("gate")).describe()
                if int8.get("budget_db") is not None else "no drift budget: the accuracy gate is off (--no-budget)")
        rule = f"{gate}; and {tolerance_rule(precision)} on image crops (sanity floor)"
    else:
        passed, rule = within_tolerance(precision, worst_diff, worst_psnr), tolerance_rule(precision)
    report = {"runtime": runner.name, "reference": "PyTorch FP32, official form", "precision": precision,
              "rule": rule, "max_abs_diff": worst_diff, "min_psnr_vs_fp32_db": worst_psnr, "cases": cases,
              "passed": bool(passed)}
    if int8 is not None:
        report["holdout_mean_drift_db"] = int8["drift_db"]
        report["holdout_worst_image"] = int8["worst_image"]
    if not passed:
        raise VerificationError(f"{runner.name} ({precision}) does not match PyTorch FP32: max abs diff "
                                f"{worst_diff:.3g}, PSNR vs FP32 {worst_psnr:.1f} dB (rule: {rule}). Nothing was "
                                "written; try another precision or report it with the options used.")
    return report
