"""An engine called INT8 is one: 5% faster than its backend's FP32 engine at least, timed here at ``--opt-size``.

Every INT8 export (standalone, autotuned or in the pipeline) goes through ``check_faster``: the build session times
the INT8 engine and the same backend's FP32 engine (the one autotuned in this session where there is one, else built
now in the session's scratch), in turns (FP32, INT8, FP32, ...: load and thermal drift fall on both), and refuses an
INT8 engine that is not at least 5% faster (``FASTER_BY``), with both numbers. Where this machine cannot time the
engine (TensorRT's stand-in, Core ML off macOS, the HTP's emulator) the manifest says so and nothing is refused: the
device's ``bench`` decides.
"""

import statistics
import time
from dataclasses import dataclass

import numpy as np

from .autotune import RESUME_BELOW
from .errors import ExportError

ROUNDS = 5  # timed runs of each engine, in turns, after one warm-up each
# INT8 must take at most this share of FP32's time: 5% faster, the margin any autotune choice must beat; closer is
# timing noise (an OpenVINO engine with 1 of 57 convolutions quantized timed 1.02x FP32)
FASTER_BY = RESUME_BELOW


class Int8NotFaster(ExportError):
    """The INT8 engine is not 5% faster than its backend's FP32 engine here."""


@dataclass(frozen=True)
class SpeedCheck:
    size: tuple[int, int]  # the LR size timed (--opt-size)
    int8_ms: float | None
    fp32_ms: float | None
    not_timed: str | None = None  # why this machine cannot time it
    kept_slower: bool = False  # not faster, kept as asked (--keep-slower-int8)

    @classmethod
    def from_dict(cls, record: dict) -> "SpeedCheck":
        """The check a manifest's ``int8_speed`` records."""
        return cls(tuple(record["lr_size"]), record.get("int8_ms"), record.get("fp32_ms"), record.get("why"),
                   record.get("kept_slower", False))

    def to_dict(self) -> dict:
        if self.not_timed:
            return {"lr_size": list(self.size), "timed": False, "why": self.not_timed}
        return {"lr_size": list(self.size), "timed": True, "int8_ms": self.int8_ms, "fp32_ms": self.fp32_ms,
                "speedup": self.fp32_ms / self.int8_ms, "rounds": ROUNDS, "kept_slower": self.kept_slower}

    def line(self) -> str:
        if self.not_timed:
            return f"not timed against FP32 here: {self.not_timed}"
        slower = " (not 5% faster: kept as asked, --keep-slower-int8)" if self.kept_slower else ""
        return (f"{self.int8_ms:.1f} ms against FP32's {self.fp32_ms:.1f} ms at {self.size[0]}x{self.size[1]} "
                f"({self.fp32_ms / self.int8_ms:.2f}x){slower}")


def time_in_turns(infers: list, x: np.ndarray, rounds: int = ROUNDS) -> list[float]:
    """The median ms of each of ``infers`` on ``x``, timed in turns after one warm-up each."""
    for infer in infers:
        infer(x)
    times = [[] for _ in infers]
    for _ in range(rounds):
        for i, infer in enumerate(infers):
            t0 = time.perf_counter()
            infer(x)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def untimeable(fields: dict) -> str | None:
    """Why the built engine's time here would mean nothing, from its verification (None: it can be timed)."""
    v = fields.get("verification") or {}
    if v.get("passed") is None:
        return f"not run here ({v.get('skipped') or v.get('note') or 'no runtime'})"
    if v.get("note"):  # verified through a stand-in (TensorRT's graph in ONNX Runtime)
        return f"verified through a stand-in here ({v['note']})"
    return None


def check_faster(load, fields: dict, fp32_ms, size: tuple[int, int], channels: int, fmt: str,
                 keep_slower: bool = False, tuned_int8_ms: float | None = None) -> SpeedCheck:
    """Time the INT8 engine (``load(fields) -> Runner``) against the FP32 engine (``fp32_ms() -> (ms or None,
    runner factory or None)``: a time already measured in this session, or a runner to time in turns); raise
    ``Int8NotFaster`` where it is not faster, unless ``keep_slower`` (``--keep-slower-int8``: recorded).
    ``tuned_int8_ms``: the INT8 engine's autotuned median of this session, compared with FP32's as it is."""
    x = np.random.default_rng(0).random((1, channels, *size), dtype=np.float32)
    why = untimeable(fields)  # before loading: an engine this machine cannot run does not load
    if why is not None:
        return SpeedCheck(size, None, None, why)
    with load(fields) as runner:
        if getattr(runner, "timing_note", None):  # it runs here, but its time is not the device's (an emulator)
            return SpeedCheck(size, None, None, runner.timing_note)
        known, fp32_loader = fp32_ms()
        if known is not None and tuned_int8_ms is not None:  # both autotuned in this session, the same way
            int8_ms, fp32 = tuned_int8_ms, known
        elif known is not None:
            int8_ms, fp32 = time_in_turns([runner.infer], x)[0], known
        else:
            with fp32_loader() as fp32_runner:
                fp32, int8_ms = time_in_turns([fp32_runner.infer, runner.infer], x)
    slower = int8_ms > FASTER_BY * fp32
    check = SpeedCheck(size, int8_ms, fp32, kept_slower=keep_slower and slower)
    if slower and not keep_slower:
        convs = (fields.get("int8") or {}).get("quantization", {}).get("quantized_convs")
        raise Int8NotFaster(f"{fmt} INT8 is not 5% faster than its FP32 engine here: {int8_ms:.1f} ms against FP32's "
                            f"{fp32:.1f} ms at {size[0]}x{size[1]} (medians; "
                            f"{convs if convs is not None else '?'} convolutions quantized), so it is not shipped as "
                            "INT8; export FP32 (or bf16/fp16 where the backend has them), or time another "
                            "--opt-size (or keep it with --keep-slower-int8 where this machine is not its target).")
    return check

