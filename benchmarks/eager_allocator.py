"""What the official eager baseline's time owes to the memory allocator: ``python benchmarks/eager_allocator.py
[--engine DIR ...] [--out FILE]``.

Every "x official eager" ratio in this project divides by PyTorch eager as a plain ``python`` runs it on Linux:
glibc malloc, which hands each large freed block back to the system (blocks over its mmap threshold), so the next
op's 236 MB feature map (64 channels at 720p) is faulted in page by page again. This times the same official model
(the reference checkpoint, LR 180x320 -> 720x1280 and 90x160) in fresh processes under each allocator, in rounds
(each configuration once per round) so a slow spell of the machine hits all alike, and reports the median, the page
faults per run and the peak RSS; ``--engine`` adds exported engines (they manage their own memory) as a control,
under glibc only (OpenVINO aborts in a process with a preloaded allocator).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _output import emit  # noqa: E402

LIBRARIES = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
KEEP_FREED = {"MALLOC_MMAP_THRESHOLD_": str(2**31 - 1), "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def configurations() -> dict[str, dict]:
    """{label: extra environment} for glibc as is, glibc keeping freed memory, and the preloadable allocators
    installed here (Debian: libjemalloc2, libtcmalloc-minimal4)."""
    import ctypes.util

    configs = {"glibc malloc (default)": {},
               "glibc malloc keeping freed memory (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_)": KEEP_FREED}
    for name, soname in LIBRARIES.items():
        found = next((p for p in (f"/lib/{platform.machine()}-linux-gnu/{soname}", f"/usr/lib/{soname}")
                      if Path(p).exists()), None) or ctypes.util.find_library(name)
        if found:
            configs[f"{name} (LD_PRELOAD={Path(found).name})"] = {"LD_PRELOAD": found}
    return configs


def child(models: list[str], shapes: list[tuple[int, int]], runs: int) -> dict:
    """In this process: each model at each shape, one warm-up then ``runs`` timed runs."""
    import resource
    import time

    import numpy as np

    from scnet_deploy.pipeline import reference_checkpoint
    from scnet_deploy.runtime import open_model

    out = {}
    for model in models:
        path = reference_checkpoint() if model == "official" else Path(model)
        with open_model(path) as runner:
            for h, w in shapes:
                x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
                runner.infer(x)
                times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                for _ in range(runs):
                    t0 = time.perf_counter()
                    runner.infer(x)
                    times.append((time.perf_counter() - t0) * 1e3)
                faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / runs
                out[f"{model}@{h}x{w}"] = {"times_ms": times, "faults_per_run": faults}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", action="append", default=[], help="an exported engine directory (control)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shapes = [(180, 320), (90, 160)]
    if args.child:
        print(json.dumps(child(json.loads(args.child), shapes, args.runs)))
        return 0
    from scnet_deploy.doctor import machine, machine_line

    models = ["official", *args.engine]
    configs = configurations()
    results = {label: [] for label in configs}
    for _ in range(args.rounds):
        for label, env in configs.items():
            # engines only under glibc: OpenVINO aborts in a process with a preloaded allocator ("munmap_chunk():
            # invalid pointer", the block freed by another allocator than the one that made it)
            asked = models if "LD_PRELOAD" not in env else ["official"]
            run = subprocess.run([sys.executable, __file__, "--child", json.dumps(asked), "--runs", str(args.runs)],
                                 env={**os.environ, **env}, capture_output=True, text=True, check=True)
            results[label].append(json.loads(run.stdout.strip().splitlines()[-1]))
    base = "glibc malloc (default)"
    lines = [f"Machine: {machine_line(machine())}. Command: `python benchmarks/eager_allocator.py "
             + " ".join(f"--engine {e}" for e in args.engine) + f"` ({args.rounds} rounds, {args.runs} timed runs "
             "after one warm-up per process and shape; median over all rounds).", "",
             "| model | LR | allocator | median ms | x glibc default | page faults per run | peak RSS MB (process) |",
             "|---|---|---|---|---|---|---|"]
    medians = {}
    for key in results[base][0]:
        if key == "peak_rss_mb":
            continue
        model, shape = key.split("@")
        for label, rounds in results.items():
            if key not in rounds[0]:
                continue
            ms = statistics.median(t for r in rounds for t in r[key]["times_ms"])
            medians[(key, label)] = ms
            faults = statistics.median(r[key]["faults_per_run"] for r in rounds)
            rss = max(r["peak_rss_mb"] for r in rounds)
            name = "PyTorch official eager" if model == "official" else Path(model).name
            lines.append(f"| {name} | {shape} | {label} | {ms:.0f} | {medians[(key, base)] / ms:.2f}x | "
                         f"{faults:.0f} | {rss:.0f} |")
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
