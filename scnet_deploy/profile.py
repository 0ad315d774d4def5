"""``bench --profile``: where an engine's time goes, by stage of SCNet. Each runtime's own profiler gives time per
operator (``Runner.profile_ops``); the names the export recorded (``manifest["onnx"]["stages"]``) map each operator
to its stage (head, body.N, upsampler, tail, skip; a runtime's name contains the ONNX node's or tensor's name it
came from); each stage is set against its MACs and bytes (``model.costs``) and this machine's compute and memory
rooflines, measured in the same run (``rooflines``)."""

import statistics
import time

import numpy as np

OTHER = "other"  # operators no recorded name matches (layout reorders of a runtime's own, quantize/dequantize)


def rooflines(seconds: float = 0.5) -> dict:
    """This machine's float32 compute peak (a 1024x1024 matrix product, all cores) and memory bandwidth (a 128 MB
    copy: read + write), the best of a few tries within about ``seconds`` each."""
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    src, dst = np.ones(2**25, np.float32), np.zeros(2**25, np.float32)  # 128 MB each, touched: no page faults timed
    best_mm = best_copy = float("inf")
    for kind in ("mm", "copy"):
        end = time.perf_counter() + seconds
        for i in range(20):
            t0 = time.perf_counter()
            if kind == "mm":
                a @ a
                best_mm = min(best_mm, time.perf_counter() - t0)
            else:
                np.copyto(dst, src)
                best_copy = min(best_copy, time.perf_counter() - t0)
            if i >= 2 and time.perf_counter() > end:
                break
    return {"gflops": 2 * 1024**3 / best_mm / 1e9, "gbytes_per_s": 2 * src.nbytes / best_copy / 1e9,
            "how": "numpy float32 1024x1024 matmul; 128 MB copy (read + write)"}


def stage_map(manifest: dict) -> dict[str, str]:
    """The export's node/tensor name -> stage record, only where it is what it should be (names and stages as
    strings); {} where the artifact has none (exported before stages were recorded, or by torchscript)."""
    stages = (manifest.get("onnx") or {}).get("stages")
    if not isinstance(stages, dict):
        return {}
    return {k: v for k, v in stages.items() if isinstance(k, str) and isinstance(v, str) and len(k) < 200}


def stage_of(name: str, known: list[str], stages: dict[str, str]) -> str:
    """The stage of the recorded name ``name`` contains (the longest first: ``conv2d_10`` before ``conv2d_1``)."""
    for key in known:
        if key in name:
            return stages[key]
    return OTHER


def group(stage: str) -> str:
    return "body" if stage.startswith("body.") else stage


def profile(runner, shape: tuple[int, int], runs: int, roof: dict, seed: int = 0) -> dict:
    """The profile of ``runner`` at LR ``shape``: each stage's mean ms per run (the measured time of the profiled runs
    shared out as the profiler's counters share it; ``coverage``: how much of that time the raw counters add up to),
    share, MACs, bytes, throughput and distance from the rooflines; ``note`` instead where the runtime has no
    per-operator profiler. A runtime's own layout reorders, named after no node of the graph, count in the stage
    they follow in execution order."""
    from .model.costs import stage_costs

    x = np.random.default_rng(seed).random((1, 3, *shape), dtype=np.float32)
    found = runner.profile_ops(x, runs)
    if found is None:
        return {"note": runner.profile_note}
    stages = stage_map(runner.manifest)
    known = sorted(stages, key=len, reverse=True)
    counted: dict[str, float] = {}
    unmapped = placed = 0.0
    previous = OTHER
    for op in found["ops"]:  # in execution order
        stage = stage_of(op["name"], known, stages) if stages else OTHER
        if stage == OTHER and previous != OTHER:  # a runtime's own layout reorder: the stage it follows
            stage, placed = previous, placed + op["ms"]
        unmapped += op["ms"] if stage == OTHER else 0.0
        previous = stage
        counted[stage] = counted.get(stage, 0.0) + op["ms"]
    costs = stage_costs(runner.arch, *shape, runner.element_bytes)
    counters = sum(counted.values())
    whole = statistics.fmean(found["whole_ms"])  # the same runs, averaged as the operators' times are
    # each stage's share of the profiler's counters, applied to the measured time of the same runs (OpenVINO's
    # counters sum to 104-121% of it here, overlapping; ONNX Runtime's to 99%): ``counter_ms`` keeps the raw
    scale = whole / counters if counters else 0.0
    ms = {k: v * scale for k, v in counted.items()}
    total = sum(ms.values())
    rows = []
    for stage in [*costs, OTHER]:
        if stage not in ms and stage == OTHER:
            continue
        t, c = ms.get(stage, 0.0), costs.get(stage, {"macs": 0, "bytes": 0})
        memory_ms = c["bytes"] / roof["gbytes_per_s"] / 1e6
        compute_ms = 2 * c["macs"] / roof["gflops"] / 1e6
        rows.append({"stage": stage, "ms": t, "counter_ms": counted.get(stage, 0.0),
                     "share": t / total if total else 0.0, "macs": c["macs"],
                     "bytes": c["bytes"], "gflops": 2 * c["macs"] / t / 1e6 if t else None,
                     "gbytes_per_s": c["bytes"] / t / 1e6 if t else None, "memory_roofline_ms": memory_ms,
                     "compute_roofline_ms": compute_ms,
                     "x_memory_roofline": t / memory_ms if memory_ms else None,
                     "bound": "memory" if memory_ms >= compute_ms else "compute"})
    return {"shape": list(shape), "runs": runs, "stages": rows, "stages_ms": total, "measured_ms": whole,
            "counters_ms": counters, "coverage": counters / whole if whole else None, "operators": len(found["ops"]),
            "unmapped_ms": unmapped * scale, "reorders_placed_ms": placed * scale, "stage_names": bool(stages),
            "top_ops": sorted(found["ops"], key=lambda o: o["ms"], reverse=True)[:10]}


def grouped(rows: list[dict]) -> list[dict]:
    """The stages with the body's blocks summed into one row (the CLI's table; JSON keeps every block)."""
    out: dict[str, dict] = {}
    for r in rows:
        g = group(r["stage"])
        if g not in out:
            out[g] = {**r, "stage": g}
            continue
        o = out[g]
        for k in ("ms", "share", "macs", "bytes", "memory_roofline_ms", "compute_roofline_ms"):
            o[k] += r[k]
        o["x_memory_roofline"] = o["ms"] / o["memory_roofline_ms"] if o["memory_roofline_ms"] else None
        o["gflops"] = 2 * o["macs"] / o["ms"] / 1e6 if o["ms"] else None
        o["gbytes_per_s"] = o["bytes"] / o["ms"] / 1e6 if o["ms"] else None
    return list(out.values())


def shares_only(found: dict) -> dict:
    """A profile without its milliseconds (an emulator's: each stage's share of the modelled cycles is the NPU's,
    the time is not)."""
    if found.get("note"):
        return found
    return {"note": "shares of the emulated NPU's modelled cycles; no milliseconds",
            "shares": {r["stage"]: r["share"] for r in found["stages"]}}
