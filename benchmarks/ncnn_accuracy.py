"""ncnn's accuracy on Set5 x4: the shipped reference exported to ncnn in fp32 and fp16 on each compute unit here
(the CPU, and Vulkan where ncnn sees a device), validated against ground truth and FP32 PyTorch under the accuracy
gate, with each engine's latency at one LR size beside OpenVINO f32 and ONNX Runtime fp32 of the same run.

    python benchmarks/ncnn_accuracy.py [--set5 ../shared/datasets/Set5] [--size 180x320] [--runs 5] [--out FILE.md]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from _output import emit  # benchmarks/ is on sys.path when a script here is run


def main(argv=None) -> int:
    from scnet_deploy.doctor import machine, machine_line
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.exporters.ncnn.runtime import vulkan_devices
    from scnet_deploy.pipeline import reference_checkpoint
    from scnet_deploy.runtime import open_model
    from scnet_deploy.timing import in_turn
    from scnet_deploy.validate import ValidateOptions, validate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set5", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "Set5"))
    p.add_argument("--size", default="180x320")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--budget", type=float, default=0.05)
    p.add_argument("--out")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    units = ["cpu"] + (["vulkan"] if vulkan_devices() else [])
    ref = reference_checkpoint()
    with tempfile.TemporaryDirectory() as tmp:
        engines = {}
        for unit in units:
            for precision in ("fp32", "fp16"):
                engines[f"ncnn {unit} {precision}"] = export(ref, ExportOptions(
                    output=Path(tmp) / f"ncnn-{unit}-{precision}", format="ncnn", precision=precision,
                    compute=unit)).directory
        others = export(ref, ExportOptions(output=Path(tmp) / "others", format="onnx,openvino")).artifacts
        engines["onnxruntime fp32"], engines["openvino f32"] = others["onnx"], others["openvino"]
        result = validate([ref, *engines.values()], ValidateOptions((Path(args.set5),), 4, budget_db=args.budget))
        rows = {m["path"]: m for m in result["models"]}
        x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
        runners = {name: open_model(path) for name, path in engines.items() if "vulkan" not in name}
        try:
            times = in_turn({n: r.infer for n, r in runners.items()}, x, args.runs, warmup=1, drop_above=None)
        finally:
            for r in runners.values():
                r.close()
    lines = [f"Machine: {machine_line(machine())}. Set5 x4 (MATLAB-bicubic LR), PSNR-Y/SSIM-Y on the Y channel with a "
             f"4-pixel border, drift vs FP32 PyTorch, the accuracy gate at {args.budget} dB; CPU engines timed in turn "
             f"at LR {h}x{w} -> {4 * h}x{4 * w}, median of {args.runs} runs after a warm-up (Vulkan here is lavapipe, "
             f"a software device: not timed). `python benchmarks/ncnn_accuracy.py --size {args.size} --runs "
             f"{args.runs}`.", "",
             "| engine | PSNR-Y | SSIM-Y | drift dB | visible % | max abs diff | gate | median ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, path in engines.items():
        m = rows[str(path)]
        ms = times.get(name, {}).get("median_ms")
        lines.append(f"| {name} | {m['psnr_y']:.4f} | {m['ssim_y']:.4f} | {m['drift_db']:+.4f} | "
                     f"{100 * m['visible_share']:.2f} | {m['max_abs_diff']:.2g} | "
                     f"{'pass' if m.get('within_budget') else 'fail'} | {f'{ms:.1f}' if ms else '-'} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
