"""The INT8 frontier by whole convolutions, as the export's budget loop walks it: how far from the accuracy gate each
step is, and what it costs in speed.

    python benchmarks/int8_frontier.py --out benchmarks/results/int8_frontier.md [--float-parts bf16]

The shipped reference SCNet-T x4 in the default form, quantized by the export's own quantizers (ONNX Runtime QDQ,
OpenVINO NNCF with known ranges fixed) with the 0, 1, 2, 4, ... and all but one of its most sensitive convolutions
kept in float (weights and inputs), in the export's ranking (ONNX Runtime: the error each adds; OpenVINO: its
measured first pick, then the error each adds). For each step: the accuracy gate's measures on the export's
hold-out (per content type: the worst image's share of pixels 4+ levels off the FP32 engine, the mean PSNR-Y drift
where FP32 is not near-lossless) and the median ms at LR 180x320 on this machine, against the same backend's FP32
engine (OpenVINO's float parts in f32, or bf16 with ``--float-parts bf16`` where the CPU has it).
"""

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from scnet_deploy.gate import AccuracyGate

def steps(n: int) -> list[int]:
    """0, 1, 2, 4, ... below ``n - 1``, then ``n - 1``: the budget loop's prefixes."""
    found, k = [0], 1
    while k < n - 1:
        found.append(k)
        k *= 2
    return found + [n - 1]


def summary(drift: dict, budget_db: float) -> dict:
    from scnet_deploy.calibration.budget import gate_by_content

    verdicts = gate_by_content(drift, AccuracyGate(budget_db))
    worst = max(verdicts.values(), key=lambda v: v["visible_share"])
    return {"verdicts": verdicts, "worst_visible": worst["visible_share"], "worst_content": worst["content"],
            "passed": all(v["passed"] for v in verdicts.values())}


def onnxruntime_frontier(fp32_dir: Path, data, budget_db: float, x: np.ndarray, tmp: Path) -> tuple[float, list]:
    from scnet_deploy.calibration.onnxruntime_int8 import onnx_infer
    from scnet_deploy.calibration.onnxruntime_int8 import layer_sensitivity, quantize_onnx
    from scnet_deploy.timing import median_ms

    fp32 = fp32_dir / "model.onnx"
    baseline = data.baseline(onnx_infer(fp32))

    def quantized(exclude) -> Path:
        path = tmp / f"ort_int8_{len(exclude)}.onnx"
        quantize_onnx(fp32, path, data.calib, "minmax", tuple(exclude))
        return path

    all_int8 = quantized(())
    ranking = [name for name, _ in layer_sensitivity(fp32, all_int8, data.calib.arrays[:4])]
    rows = []
    for k in steps(len(ranking)):
        path = all_int8 if k == 0 else quantized(ranking[:k])
        s = summary(baseline.measure(onnx_infer(path)), budget_db)
        s["ms"] = median_ms(onnx_infer(path), x, 5, warmup=1)
        rows.append((k, len(ranking), s))
    return median_ms(onnx_infer(fp32), x, 5, warmup=1), rows


def openvino_frontier(fp32_dir: Path, data, budget_db: float, x: np.ndarray, float_parts: str) -> tuple[float, list]:
    import openvino as ov

    from scnet_deploy.calibration.openvino_int8 import _ov_infer, quantize_with_float, ranking
    from scnet_deploy.exporters.openvino.runtime import compile_config
    from scnet_deploy.exporters.openvino.options import CompileOptions
    from scnet_deploy.timing import median_ms

    model = ov.Core().read_model(str(fp32_dir / "model.xml"))
    config = compile_config("f32", CompileOptions())
    run_config = compile_config(float_parts, CompileOptions())
    baseline = data.baseline(_ov_infer(model, config))
    all_int8, _ = quantize_with_float(model, data.calib)
    order = list(ranking(model, all_int8, data.calib.arrays[:4], baseline, run_config, None, AccuracyGate(budget_db)))
    rows = []
    for k in steps(len(order)):
        m = all_int8 if k == 0 else quantize_with_float(model, data.calib, tuple(order[:k]))[0]
        s = summary(baseline.measure(_ov_infer(m, run_config)), budget_db)
        s["ms"] = median_ms(_ov_infer(m, run_config), x, 5, warmup=1)
        rows.append((k, len(order), s))
    return median_ms(_ov_infer(model, config), x, 5, warmup=1), rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--float-parts", default="f32", choices=["f32", "bf16"])
    p.add_argument("--budget", type=float, default=0.1)
    args = p.parse_args()

    from scnet_deploy.calibration.budget import int8_data
    from scnet_deploy.build_options import CalibOptions
    from scnet_deploy.doctor import machine, machine_line
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.pipeline import reference_checkpoint

    x = np.random.default_rng(0).random((1, 3, 180, 320), dtype=np.float32)
    data = int8_data(CalibOptions(), 4)
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("onnx", "openvino"):
            fp32_dir = export(reference_checkpoint(), ExportOptions(output=Path(tmp) / backend,
                                                                    format=backend)).directory
            tables[backend] = (onnxruntime_frontier(fp32_dir, data, args.budget, x, Path(tmp)) if backend == "onnx"
                               else openvino_frontier(fp32_dir, data, args.budget, x, args.float_parts))

    contents = sorted(tables["onnx"][1][0][2]["verdicts"])
    head = ("| convolutions in float | ms | vs FP32 | worst visible | " + " | ".join(f"{c}: visible / dB"
                                                                                    for c in contents) + " | gate |")
    rule = "|---" * (5 + len(contents)) + "|"
    lines = [f"# INT8 by whole convolutions kept in float ({machine_line(machine())}, {os.cpu_count()} CPUs)", "",
             f"`python benchmarks/int8_frontier.py --out {args.out}"
             + (f" --float-parts {args.float_parts}`" if args.float_parts != "f32" else "`")
             + f"; LR 180x320 -> 720x1280; OpenVINO float parts in {args.float_parts}; the gate: 0.1% visible, "
             f"{args.budget} dB drift per content type.", ""]
    for backend, (fp32_ms, rows) in tables.items():
        lines += [f"## {'ONNX Runtime' if backend == 'onnx' else 'OpenVINO'} (FP32 engine {fp32_ms:.1f} ms)", "",
                  head, rule]
        for k, n, s in rows:
            by = s["verdicts"]
            lines.append(f"| {k} of {n} | {s['ms']:.1f} | {fp32_ms / s['ms']:.2f}x | {100 * s['worst_visible']:.2f}% "
                         f"({s['worst_content']}) | "
                         + " | ".join(f"{100 * by[c]['visible_share']:.2f}% / "
                                      + ("-" if by[c]["drift_db"] is None else f"{by[c]['drift_db']:+.3f}")
                                      for c in contents)
                         + f" | {'pass' if s['passed'] else 'fail'} |")
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
