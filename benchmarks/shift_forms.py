"""ONNX Runtime latency of the three shift forms of SCNet-T x4, measured in one run.

    python benchmarks/shift_forms.py [--checkpoint CKPT] [--size 180x320] [--runs 10] [--threads 2] [--out FILE.md]

- naive: the official model (in-place shift) exported as-is with torch.onnx (TorchScript exporter, what one gets by
  hand), not simplified;
- slice / dwconv: scnet-deploy's exports (shift rewritten, simplified, verified).
Latency is the median of ``--runs`` timed runs after 2 warm-up runs, one LR image of ``--size``.
"""

import argparse
import collections
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _output import emit  # benchmarks/ is on sys.path when a script here is run


def naive_export(model: torch.nn.Module, path: Path) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 3, 16, 16),), str(path), input_names=["lr"], output_names=["sr"],
                          dynamic_axes={"lr": axes, "sr": axes}, opset_version=17, dynamo=False)


def time_session(path: Path, x: np.ndarray, runs: int, threads: int) -> tuple[float, list[float]]:
    from scnet_deploy.exporters.onnx_graph import ort_session

    session = ort_session(path, threads)
    for _ in range(2):
        session.run(None, {"lr": x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {"lr": x})
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main(argv=None) -> None:
    import onnx

    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.exporters.onnx_graph import OnnxOptions, build_onnx, histogram
    from scnet_deploy.model.network import SCNet, SCNetConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="default: SCNet-T x4 with random weights (latency does not depend on them)")
    p.add_argument("--size", default="180x320")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT default, all cores)")
    p.add_argument("--out", help="also write the Markdown table to this file")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint).model
    else:
        torch.manual_seed(0)
        model = SCNet(SCNetConfig()).eval()
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        naive = tmp / "naive.onnx"
        naive_export(model, naive)
        forms = [("naive (official shift, as exported)", naive)]
        for shift in ("slice", "dwconv"):
            path = tmp / f"{shift}.onnx"
            build_onnx(model, OnnxOptions(shift=shift), path)
            forms.append((f"{shift} (scnet-deploy)", path))
        for name, path in forms:
            counts = collections.Counter(histogram(onnx.load(str(path))))
            median, _ = time_session(path, x, args.runs, args.threads)
            rows.append((name, sum(counts.values()), counts.get("ScatterND", 0), counts.get("Constant", 0), median))
    base = rows[0][4]
    cpu = platform.processor() or platform.machine()
    lines = [f"ONNX Runtime CPU, SCNet-T x4, LR {h}x{w} -> {h * 4}x{w * 4}, median of {args.runs} runs, "
             f"threads={args.threads or 'default'}, {torch.get_num_threads()} cores visible, {cpu}",
             "", "| form | nodes | ScatterND | Constant | median ms | speed-up vs naive |", "|---|---|---|---|---|---|"]
    for name, nodes, scatter, const, med in rows:
        lines.append(f"| {name} | {nodes} | {scatter} | {const} | {med * 1e3:.0f} | {base / med:.2f}x |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
