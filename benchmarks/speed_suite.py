"""The speed suite: SCNet-T x4 at 180x320 -> 720x1280 and 540x960 -> 2160x3840, every baseline and every engine
this machine can build and run, measured in one run, with the FP32 roofline measured in the same run.

    python benchmarks/speed_suite.py [--checkpoint CKPT] [--sizes 180x320,540x960] [--runs 10,3]
                                     [--calib-data DIR] [--budget 0.1] [--out FILE.md] [--json FILE.json]

Rows: the official-form PyTorch eager model (the baseline every ratio uses); the naive ONNX export of the official
form (TorchScript exporter, not simplified: what one gets by hand) in ONNX Runtime; every backend/precision that
`scnet-deploy export` builds, each exported with ``--optimize latency`` (candidate forms built, verified and timed at
the first size; the fastest kept). Columns: median latency (after one warm-up run), ratio vs official eager, drift vs
FP32 PyTorch (Set5 x4 PSNR-Y where ../shared has it, else the scikit-image validation photographs), and for FP32 the
ratio to the roofline: the official model's MACs x 2 / the FP32 GEMM rate measured here (torch.matmul, 2 threads...
whatever torch uses, the best of 2048^3 and 4096^3). Tiling for cache: each engine is also timed on exact tiles
(halo = receptive radius) of 128 and 256 LR px, and in split execution (its graph cut at the body's output, the body
whole, the x4 tail on tiles of 64 and 128 LR px with the tail's radius as halo: ``exporters/split.py``); the best
of each is shown, marked where it is faster than the whole image.

Memory roofline, beside the compute one: the feature maps the network's memory-moving ops write (convolutions, the
shift, the resizes; activations and adds fuse into them), each written once and read once, at the engine's precision
(4 bytes f32, 2 bf16/fp16, 1 int8: what an engine that kept every map at its precision would move), divided by this
machine's copy bandwidth measured in the same run (numpy copy of 256 MB, bytes read + written); the x4 tail alone
(maps above the input size) is shown apart. Throughput: each engine at the first size with several requests in flight
(``bench --mode throughput``: OpenVINO's async queue at its optimal number of requests, compiled with its throughput
hint), images/s and its ratio to one image at a time.
"""

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _output import emit  # benchmarks/ is on sys.path when a script here is run
from shift_forms import naive_export  # the same naive export as the shift-forms table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
ENGINES = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "fp16"),
           ("openvino", "int8"), ("tensorrt", "fp16"), ("coreml", "fp16")]
TILES = (128, 256)
SPLIT_TILES = (64, 128)


def gemm_gflops() -> dict:
    """FP32 matrix-product rate of this machine, measured now (median of 5 after 2 warm-ups, best size)."""
    rates = {}
    for n in (2048, 4096):
        a, b = torch.rand(n, n), torch.rand(n, n)
        for _ in range(2):
            a @ b
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        rates[n] = 2 * n ** 3 / statistics.median(times) / 1e9
    return {"gflops": max(rates.values()), "by_size": rates, "threads": torch.get_num_threads()}


def copy_gbytes_per_s() -> float:
    """Memory bandwidth of a plain copy, measured now: 2 x 256 MB (read + write) / median of 5 copies."""
    a = np.ones(64 * 2**20, np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t0)
    return 2 * a.nbytes / statistics.median(times) / 1e9


BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


def memory_roofline_ms(elements: dict, precision: str, gbytes_per_s: float, part: str | None = None) -> float:
    """ms to write and read once the map ``elements`` ({'lr', 'hr'}: ``complexity.map_elements``) at ``precision``;
    ``part`` 'hr': the tail alone."""
    count = elements[part] if part else elements["lr"] + elements["hr"]
    return 2 * count * BYTES[precision] / gbytes_per_s / 1e6


def time_ms(infer, x: np.ndarray, runs: int) -> float:
    from scnet_deploy.autotune import median_ms

    return median_ms(infer, x, runs, warmup=1)


def drift_table(ckpt: Path, artifacts: dict, out_dir: Path) -> tuple[str, dict]:
    from scnet_deploy.pipeline import _default_datasets
    from scnet_deploy.validate import ValidateOptions, validate

    datasets = (SHARED / "Set5",)
    name = "Set5 x4"
    if not datasets[0].exists():
        datasets = tuple(_default_datasets(out_dir))
        name = "the pipeline's validation content (worst content type)"
    result = validate([ckpt, *artifacts.values()], ValidateOptions(datasets, 4))
    by_path = {m["path"]: m for m in result["models"]}
    return name, {label: by_path[str(p)]["drift_db"] for label, p in artifacts.items()}


def main(argv=None) -> int:
    from scnet_deploy.build_options import CalibOptions
    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.bench import BenchOptions, time_throughput
    from scnet_deploy.model.complexity import macs_per_lr_pixel, map_elements
    from scnet_deploy.doctor import machine
    from scnet_deploy.errors import ScnetDeployError
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.build_options import TuneOptions
    from scnet_deploy.exporters.onnxruntime.runtime import OrtRunner
    from scnet_deploy.exporters.registry import backend_for_format
    from scnet_deploy.exporters.runner import TiledRunner
    from scnet_deploy.exporters.split import SplitRunner
    from scnet_deploy.exporters.torch_runner import TorchRunner
    from scnet_deploy.options import RuntimeOptions
    from scnet_deploy.pipeline import REFERENCE
    from scnet_deploy.model.rewrites import DeployOptions, to_deploy_form
    from scnet_deploy.runtime import open_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(REFERENCE))
    p.add_argument("--sizes", default="180x320,540x960")
    p.add_argument("--runs", default="10,3", help="timed runs per size")
    p.add_argument("--calib-data", default=str(SHARED / "BSD68") if (SHARED / "BSD68").exists() else None)
    p.add_argument("--calib-count", type=int, default=32)
    p.add_argument("--budget", type=float, default=0.1)
    p.add_argument("--engines", default=",".join(f"{f}-{q}" for f, q in ENGINES))
    p.add_argument("--out")
    p.add_argument("--json")
    args = p.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    runs = [int(r) for r in args.runs.split(",")]
    ckpt_path = Path(args.checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    t_start = time.perf_counter()
    gemm = gemm_gflops()
    macs_official = macs_per_lr_pixel(ckpt.model)
    fewest = to_deploy_form(ckpt.model, DeployOptions("dwconv", conv_before_upsample=True))
    macs_min = macs_per_lr_pixel(fewest)
    bandwidth = copy_gbytes_per_s()
    elements = {f"{h}x{w}": map_elements(fewest, h, w) for h, w in sizes}
    rows = []  # {label, precision, form, ms: {size: ms}, tiled / split: {size: {tile, ms, all}}, note}
    calib = CalibOptions(Path(args.calib_data) if args.calib_data else None, count=args.calib_count)
    wanted = [tuple(e.split("-")) for e in args.engines.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        artifacts, notes = {}, {}
        for fmt, precision in wanted:
            label = f"{fmt} {precision}"
            reason = backend_for_format(fmt).check(precision)  # as the pipeline plans: what this machine lacks
            if reason:
                notes[label] = f"not built: {reason}"
                continue
            print(f"exporting {label} (autotuned)", file=sys.stderr, flush=True)
            try:
                r = export(ckpt_path, ExportOptions(output=tmp / label.replace(" ", "_"), format=fmt,
                                                    precision=precision, calib=calib,
                                                    budget_db=args.budget if precision == "int8" else None,
                                                    tune=TuneOptions("latency", size=sizes[0], runs=5)))
            except ScnetDeployError as exc:
                notes[label] = f"not built: {str(exc).splitlines()[0][:160]}"
                continue
            tuned = r.manifest["autotune"]
            if r.manifest["verification"].get("passed") is None:
                reason = next(c.get("not_timed", "") for c in tuned["candidates"].values())
                notes[label] = "built, not run here: " + reason.split(". ")[0]
                continue
            artifacts[label] = r.directory
            cands = ", ".join(f"{n} {c['median_ms']:.0f}" for n, c in tuned["candidates"].items()
                              if c.get("median_ms") is not None)
            tile = (f", tiles of {tuned['tile']} px" if tuned.get("tile") else
                    f", split, tail on tiles of {tuned['split']} px" if tuned.get("split") else ", whole images")
            notes[label] = f"form {tuned['chosen']}{tile} (tried at {sizes[0][0]}x{sizes[0][1]}: {cands} ms)"
        drift_name, drifts = drift_table(ckpt_path, artifacts, tmp) if artifacts else ("-", {})
        naive = tmp / "naive.onnx"
        naive_export(ckpt.model, naive)

        def runners():
            yield "pytorch official eager", "fp32", lambda: TorchRunner(ckpt.model, "official eager")
            yield "naive ONNX export in ONNX Runtime", "fp32", lambda: OrtRunner(naive, RuntimeOptions(cuda=False))
            for label, path in artifacts.items():
                yield label, label.split()[1], lambda path=path: open_model(path, RuntimeOptions(cuda=False))

        for label, precision, make in runners():
            row = {"label": label, "precision": precision, "ms": {}, "tiled": {}, "split": {},
                   "drift_db": drifts.get(label), "note": notes.get(label, ""), "throughput": None}
            for size, n in zip(sizes, runs):
                print(f"timing {label} at {size[0]}x{size[1]}", file=sys.stderr, flush=True)
                x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
                with make() as runner:
                    row["ms"][f"{size[0]}x{size[1]}"] = time_ms(runner.infer, x, n)
                    if label in artifacts:
                        spec = ckpt.spec
                        tiled = {t: time_ms(TiledRunner(runner, t, spec.receptive_radius, spec.scale).infer, x, n)
                                 for t in TILES if t < max(size)}
                        split = {t: time_ms(SplitRunner(runner, t, spec.to_dict()).infer, x, n)
                                 for t in SPLIT_TILES if t < max(size)} if runner.parts() is not None else {}
                        for kind, ways in (("tiled", tiled), ("split", split)):
                            if ways:
                                best = min(ways, key=ways.get)
                                row[kind][f"{size[0]}x{size[1]}"] = {"tile": best, "ms": ways[best], "all": ways}
                gc.collect()
            if label in artifacts:  # several requests in flight, at the first size
                print(f"throughput {label}", file=sys.stderr, flush=True)
                first = f"{sizes[0][0]}x{sizes[0][1]}"
                with open_model(artifacts[label], RuntimeOptions(cuda=False).for_throughput()) as runner:
                    row["throughput"] = time_throughput(runner, sizes[0], BenchOptions(runs=runs[0]), ckpt.spec.scale,
                                                        latency={"images_per_s": 1e3 / row["ms"][first]})
            rows.append(row)
        for label, note in notes.items():
            if label not in artifacts:
                rows.append({"label": label, "precision": label.split()[1], "ms": {}, "tiled": {}, "split": {},
                             "drift_db": None, "note": note})
    info = machine()
    elapsed = time.perf_counter() - t_start
    lines = [f"SCNet-T x4 ({ckpt_path.name}), {info['cpu']['model']}, {info['cpu']['cores']} cores "
             f"({platform.machine()}), torch {torch.__version__}; suite time {elapsed:.0f} s.",
             f"FP32 GEMM rate measured in this run: {gemm['gflops']:.0f} GFLOP/s (torch.matmul, {gemm['threads']} "
             f"threads). MACs per LR pixel: {macs_official:,.0f} (official form), {macs_min:,.0f} (conv before "
             "upsample, the fewest of the exact forms).",
             "FP32 roofline = official MACs x 2 / GEMM rate: " + ", ".join(
                 f"{h}x{w}: {macs_official * h * w * 2 / gemm['gflops'] / 1e6:.0f} ms" for h, w in sizes)
             + "; with the fewest-MAC form: " + ", ".join(
                 f"{macs_min * h * w * 2 / gemm['gflops'] / 1e6:.0f} ms" for h, w in sizes) + ".",
             f"Copy bandwidth measured in this run: {bandwidth:.1f} GB/s (numpy, 256 MB). Memory roofline = the maps "
             "written once and read once at the engine's precision / that bandwidth: " + "; ".join(
                 f"{key}: " + ", ".join(f"{q} {memory_roofline_ms(e, q, bandwidth):.0f} ms (tail "
                                        f"{memory_roofline_ms(e, q, bandwidth, 'hr'):.0f})" for q in BYTES)
                 for key, e in elements.items()) + ".",
             f"Drift: PSNR-Y vs FP32 PyTorch on {drift_name}. Median of {args.runs} runs per size after a warm-up.", ""]
    head = "| engine | drift dB |"
    rule = "|---|---|"
    for h, w in sizes:
        head += (f" {h}x{w} -> {h * 4}x{w * 4} ms | x eager | x roofline (FP32) | x memory roofline | best exact "
                 "tiling ms (tile) | best split ms (tail tile) |")
        rule += "---|---|---|---|---|---|"
    lines += [head + f" in flight at {sizes[0][0]}x{sizes[0][1]}: images/s (requests), x one at a time | notes |",
              rule + "---|---|"]
    eager = rows[0]["ms"]
    naive_ms = rows[1]["ms"]
    for row in rows:
        d = row["drift_db"]
        cells = [row["label"], "ref" if row["label"].startswith("pytorch") else ("-" if d is None else f"{d:+.3f}")]
        for h, w in sizes:
            key = f"{h}x{w}"
            ms = row["ms"].get(key)
            if ms is None:
                cells += ["-", "-", "-", "-", "-", "-"]
                continue
            roof = macs_official * h * w * 2 / gemm["gflops"] / 1e6
            tiled, split = row["tiled"].get(key), row["split"].get(key)
            memory = memory_roofline_ms(elements[key], row["precision"], bandwidth)
            cells += [f"{ms:.0f}", f"{eager[key] / ms:.1f}x",
                      f"{ms / roof:.2f}x" if row["precision"] == "fp32" else "", f"{ms / memory:.1f}x",
                      *[(f"{way['ms']:.0f} ({way['tile']})" + (" faster" if way["ms"] < ms else "")) if way else ""
                        for way in (tiled, split)]]
        t = row.get("throughput")
        cells.append(f"{t['images_per_s']:.2f} ({t['inflight']}), {t['vs_latency']:.2f}x" if t else "")
        lines.append("| " + " | ".join(cells) + f" | {row['note']} |")
    lines.append("")
    for h, w in sizes:
        key = f"{h}x{w}"
        ok = [r for r in rows[2:] if r["ms"].get(key) and r["drift_db"] is not None and r["drift_db"] >= -0.1]
        if ok:
            best = min(ok, key=lambda r: r["ms"][key])
            lines.append(f"- {key}: best engine within 0.1 dB: {best['label']} {best['ms'][key]:.0f} ms = "
                         f"{eager[key] / best['ms'][key]:.1f}x official eager, "
                         f"{naive_ms[key] / best['ms'][key]:.1f}x the naive export.")
        fp32 = [r for r in rows[2:] if r["ms"].get(key) and r["precision"] == "fp32"]
        if fp32:
            best = min(fp32, key=lambda r: r["ms"][key])
            roof = macs_official * h * w * 2 / gemm["gflops"] / 1e6
            lines.append(f"- {key}: best FP32 engine: {best['label']} {best['ms'][key]:.0f} ms = "
                         f"{best['ms'][key] / roof:.2f}x the FP32 roofline ({roof:.0f} ms).")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "gemm": gemm, "macs_per_lr_pixel": {
            "official": macs_official, "fewest": macs_min}, "copy_gbytes_per_s": bandwidth, "map_elements": elements,
            "sizes": [list(s) for s in sizes], "runs": runs,
            "rows": rows, "seconds": elapsed}, indent=2, default=str))
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
