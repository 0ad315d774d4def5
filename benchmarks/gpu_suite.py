"""The speed suite on an NVIDIA GPU: SCNet-T x4 at 180x320 -> 720x1280 and 540x960 -> 2160x3840 in PyTorch CUDA,
eager and compiled, in every exact deploy form and in FP32 / TF32 / FP16 / BF16, measured in one run; ONNX Runtime's
CUDA provider and TensorRT where they import (the rows say when they do not).

    python benchmarks/gpu_suite.py [--checkpoint CKPT] [--sizes 180x320,540x960] [--runs 20] [--out FILE.md]
                                   [--json FILE.json] [--compile FORMS] [--device cuda]

Rows: eager in each form and dtype; the best eager forms in channels_last; torch.compile (``--compile-mode``,
default reduce-overhead, i.e. with CUDA graphs) and a hand-captured CUDA graph replay (``--graphs``) of the official
form and the best forms: at 720p the model is launch-bound on a big GPU, so one launch per inference matters.

Latency: CUDA events around each forward (input already on the GPU, output left there), median of ``--runs`` after 3
warm-ups. Drift of reduced precisions: PSNR of the output against the FP32 output of the official form on a real
photograph (scikit-image's astronaut, downscaled x4 with the MATLAB bicubic). Roofline for FP32: official MACs x 2 /
the FP32 (no TF32) GEMM rate measured in the same run. The JSON is written after every row, so a run cut short still
leaves what it measured.
"""

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMS = ("dwconv", "dwconv+conv_before_upsample", "slice+conv_before_upsample", "fold+conv_before_upsample",
         "fold")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, x, runs: int, device) -> float:
    with torch.inference_mode():
        for _ in range(3):
            fn(x)
        sync(device)
        times = []
        for _ in range(runs):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn(x)
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def gemm_tflops(device, dtype, n: int = 8192) -> float:
    a, b = torch.rand(n, n, device=device, dtype=dtype), torch.rand(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda _: a @ b, None, 10, device)
    return 2 * n ** 3 / (ms / 1e3) / 1e12


def captured(module, x: torch.Tensor):
    """``module`` on inputs shaped like ``x`` as a replayed CUDA graph (one launch per inference)."""
    static_in = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            module(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_out = module(static_in)

    def run(inp):
        static_in.copy_(inp)
        graph.replay()
        return static_out

    return run


def photo_lr(device) -> torch.Tensor:
    from skimage import data

    from scnet_deploy.imaging.resize import imresize

    hr = data.astronaut()[:512, :512].astype(np.float64) / 255.0
    lr = np.clip(imresize(hr, 0.25), 0, 1).astype(np.float32)
    return torch.from_numpy(lr).permute(2, 0, 1)[None].to(device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2).item()
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def main(argv=None) -> int:
    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.model.complexity import macs_per_lr_pixel
    from scnet_deploy.pipeline import REFERENCE
    from scnet_deploy.model.rewrites import DeployOptions, to_deploy_form

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(REFERENCE))
    p.add_argument("--sizes", default="180x320,540x960")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtypes", default=",".join(DTYPES), help="dtypes of the eager rows")
    p.add_argument("--compile", default="official:fp32,best:fp32,best:fp16",
                   help="form:dtype pairs to torch.compile; 'best' = the fastest eager form of that dtype")
    p.add_argument("--compile-mode", default="reduce-overhead", help="torch.compile mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--graphs", default="official:fp32,best:fp32,best:fp16",
                   help="form:dtype pairs replayed as a captured CUDA graph (launch overhead removed)")
    p.add_argument("--out")
    p.add_argument("--json")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    ckpt = load_checkpoint(args.checkpoint)
    official = ckpt.model.eval()
    macs = macs_per_lr_pixel(official)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "sizes": [list(s) for s in sizes], "runs": args.runs, "rows": [],
              "macs_per_lr_pixel": macs, "notes": []}
    result["gemm_tflops"] = {k: gemm_tflops(device, d, 8192 if device.type == "cuda" else 512)
                             for k, d in DTYPES.items()}

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))

    save()
    photo = photo_lr(device)
    with torch.inference_mode():
        ref_photo = copy.deepcopy(official).to(device)(photo).float()

    def measure(label, module, dtype_name, tf32=False, compiled=False, channels_last=False, graph=False):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        dtype = DTYPES[dtype_name]
        layout = torch.channels_last if channels_last else torch.contiguous_format
        module = copy.deepcopy(module).to(device=device, dtype=dtype, memory_format=layout).eval()
        if compiled:  # a fresh dynamo cache: every row compiles the same forward code, which would hit the recompile
            torch._dynamo.reset()  # limit and silently fall back to eager
        fn = torch.compile(module, mode=args.compile_mode, dynamic=False) if compiled else module
        row = {"label": label + (" channels_last" if channels_last else "") + (" CUDA graph" if graph else ""),
               "precision": dtype_name + ("/tf32" if tf32 else ""),
               "compiled": args.compile_mode if compiled else "", "ms": {}}
        t0 = time.perf_counter()
        with torch.inference_mode():
            row["psnr_vs_fp32_db"] = psnr(fn(photo.to(dtype).contiguous(memory_format=layout)), ref_photo)
        row["first_call_s"] = time.perf_counter() - t0
        for h, w in sizes:
            x = torch.rand(1, 3, h, w, device=device, dtype=dtype).contiguous(memory_format=layout)
            run = captured(module, x) if graph else fn
            row["ms"][f"{h}x{w}"] = time_ms(run, x, args.runs, device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        result["rows"].append(row)
        save()
        print(json.dumps(row), flush=True)
        return row

    warm = copy.deepcopy(official).to(device)  # clocks up before the baseline row: a cold GPU reads slow
    x = torch.rand(1, 3, *sizes[0], device=device)
    deadline = time.perf_counter() + 3
    with torch.inference_mode():
        while time.perf_counter() < deadline:
            warm(x)
    sync(device)
    measure("pytorch official eager", official, "fp32")
    eager = {}
    for dtype_name in args.dtypes.split(","):
        for form in FORMS:
            module = to_deploy_form(official, DeployOptions.from_name(form))
            eager[(form, dtype_name)] = measure(f"pytorch {form}", module, dtype_name)
    measure("pytorch official eager", official, "fp32", tf32=True)
    key = f"{sizes[0][0]}x{sizes[0][1]}"

    def best(dtype_name):
        return min((f for f, d in eager if d == dtype_name), key=lambda f: eager[(f, dtype_name)]["ms"][key])

    for dtype_name in [d for d in ("fp32", "fp16") if d in args.dtypes.split(",")]:
        measure(f"pytorch {best(dtype_name)}", to_deploy_form(official, DeployOptions.from_name(best(dtype_name))), dtype_name,
                channels_last=True)
    for pair in args.compile.split(","):
        form, dtype_name = pair.split(":")
        if form == "best":
            form = best(dtype_name)
        module = official if form == "official" else to_deploy_form(official, DeployOptions.from_name(form))
        try:
            measure(f"pytorch {form} compiled", module, dtype_name, compiled=True)
        except Exception as exc:  # inductor needs a compiler toolchain; say so and go on
            result["notes"].append(f"torch.compile {form} {dtype_name}: {type(exc).__name__}: {exc}"[:300])
            save()
    for pair in args.graphs.split(",") if args.graphs and device.type == "cuda" else []:
        form, dtype_name = pair.split(":")
        form = best(dtype_name) if form == "best" else form
        module = official if form == "official" else to_deploy_form(official, DeployOptions.from_name(form))
        try:
            measure(f"pytorch {form}", module, dtype_name, graph=True)
        except Exception as exc:
            result["notes"].append(f"CUDA graph {form} {dtype_name}: {type(exc).__name__}: {exc}"[:300])
            save()
    for name in ("onnxruntime", "tensorrt"):
        try:
            mod = __import__(name)
            providers = mod.get_available_providers() if name == "onnxruntime" else []
            result["notes"].append(f"{name} {mod.__version__} imports" + (f"; providers {providers}" if providers
                                                                          else ""))
        except ImportError as exc:
            result["notes"].append(f"{name} does not import: {exc}")
    save()
    lines = table(result)
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


def table(result: dict) -> list[str]:
    sizes = [tuple(s) for s in result["sizes"]]
    g = result["gemm_tflops"]
    lines = [f"{result['device']}, torch {result['torch']}; GEMM measured in this run: FP32 {g['fp32']:.1f}, "
             f"FP16 {g['fp16']:.0f}, BF16 {g['bf16']:.0f} TFLOP/s. Median of {result['runs']} runs (CUDA events).",
             "FP32 roofline = official MACs x 2 / FP32 GEMM rate: " + ", ".join(
                 f"{h}x{w}: {result['macs_per_lr_pixel'] * h * w * 2 / g['fp32'] / 1e9:.2f} ms" for h, w in sizes) + ".",
             "", "| model | precision | compiled | PSNR vs FP32 dB | " + " | ".join(
                 f"{h}x{w} -> {4 * h}x{4 * w} ms | x eager" for h, w in sizes) + " |",
             "|---|---|---|---|" + "---|---|" * len(sizes)]
    base = result["rows"][0]["ms"]
    for r in result["rows"]:
        compiled = r["compiled"] if isinstance(r["compiled"], str) else ("default" if r["compiled"] else "")
        cells = [r["label"], r["precision"], compiled, f"{r['psnr_vs_fp32_db']:.1f}"]
        for h, w in sizes:
            k = f"{h}x{w}"
            cells += [f"{r['ms'][k]:.2f}", f"{base[k] / r['ms'][k]:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {n}" for n in result["notes"]]
    return lines


if __name__ == "__main__":
    sys.exit(main())
