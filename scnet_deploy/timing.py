"""Timing an engine run by run: the one primitive the latency autotuner and the INT8 budget loop's speed limit
share (``bench`` reports full statistics of its own)."""

import statistics
import time

import numpy as np

from .errors import ScnetDeployError

DROP_ABOVE = 1.3  # in turn: a way this much slower than the best median after two timed rounds cannot win; stop it


def in_turn(infers: dict, x: np.ndarray, runs: int, warmup: int = 2, drop_above: float | None = DROP_ABOVE) -> dict:
    """Time several ways of running ``x`` one run each in turn, so a slow spell of the machine hits all alike:
    {name: {"median_ms": ..., "runs": n}} after ``warmup`` untimed rounds, or {name: {"error": ...}} for a way
    that raised a user-facing error (a tile smaller than the engine's minimum input, say). From the second timed
    round on, a way whose fastest run is over ``drop_above`` times the best median is not run again."""
    times, errors, dropped = {name: [] for name in infers}, {}, set()
    for round_ in range(warmup + runs):
        for name, infer in infers.items():
            if name in errors or name in dropped:
                continue
            try:
                t0 = time.perf_counter()
                infer(x)
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - t0)
            except ScnetDeployError as exc:
                errors[name] = str(exc).splitlines()[0][:300]
        if drop_above is not None and round_ >= warmup + 1:
            medians = [statistics.median(t) for n, t in times.items() if t and n not in errors]
            best = min(medians, default=None)
            dropped |= {n for n, t in times.items() if t and best is not None and min(t) > drop_above * best}
    return {name: {"error": errors[name]} if name in errors else
            {"median_ms": statistics.median(t) * 1e3, "runs": len(t)} for name, t in times.items()}


def median_ms(infer, x: np.ndarray, runs: int, warmup: int = 1, give_up_above_ms: float | None = None) -> float:
    """Median ms of ``runs`` timed runs after ``warmup`` untimed ones. With ``give_up_above_ms``, a first timed run
    slower than that ends the timing there: a screened candidate that already cannot win is not run again."""
    for _ in range(warmup):
        infer(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        infer(x)
        times.append((time.perf_counter() - t0) * 1e3)
        if give_up_above_ms is not None and times[0] > give_up_above_ms:
            break
    return statistics.median(times)
