"""INT8 against FP32 and bf16 on every CPU backend: PSNR on Set5 and Set14 x4, drift vs FP32 PyTorch, latency at
180x320 -> 720x1280, all measured in one run.

    python benchmarks/int8_table.py [--checkpoint CKPT] [--calib-data ../shared/datasets/BSD68] [--out FILE.md]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _output import emit  # benchmarks/ is on sys.path when a script here is run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def main(argv=None) -> int:
    from scnet_deploy.bench import BenchOptions, bench
    from scnet_deploy.calibration.data import CalibOptions
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.pipeline import REFERENCE
    from scnet_deploy.validate import ValidateOptions, validate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(REFERENCE))
    p.add_argument("--calib-data", default=str(SHARED / "BSD68"))
    p.add_argument("--calib-count", type=int, default=32)
    p.add_argument("--budget", type=float, default=0.1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out")
    args = p.parse_args(argv)
    ckpt = Path(args.checkpoint)
    calib = CalibOptions(Path(args.calib_data), count=args.calib_count)
    jobs = [("onnxruntime fp32", "onnx", "fp32"), ("onnxruntime int8", "onnx", "int8"),
            ("openvino fp32", "openvino", "fp32"), ("openvino bf16", "openvino", "bf16"),
            ("openvino int8", "openvino", "int8"), ("tensorrt int8 Q/DQ (in ORT)", "tensorrt", "int8")]
    with tempfile.TemporaryDirectory() as tmp:
        artifacts, notes = {}, {}
        for label, fmt, precision in jobs:
            r = export(ckpt, ExportOptions(output=Path(tmp) / label.replace(" ", "_"), format=fmt, precision=precision,
                                           calib=calib, budget_db=args.budget if precision == "int8" else None))
            if fmt == "tensorrt":
                # No TensorRT here: its Q/DQ graph is scored in ONNX Runtime as an ONNX artifact.
                onnx_dir = Path(tmp) / "trt_qdq_in_ort"
                onnx_dir.mkdir()
                (onnx_dir / "model.onnx").write_bytes((r.directory / "model.onnx").read_bytes())
                m = dict(r.manifest, backend="onnxruntime", files={"model.onnx": r.manifest["files"]["model.onnx"]})
                (onnx_dir / "manifest.json").write_text(json.dumps(m))
                artifacts[label] = onnx_dir
            else:
                artifacts[label] = r.directory
            i = r.manifest.get("int8")
            notes[label] = f"{len(i['float_layers'])} float layers, held-out drift {i['drift_db']:+.3f} dB" if i else ""
        paths = list(artifacts.values())
        sets = {}
        for name in ("Set5", "Set14"):
            if (SHARED / name).exists():
                sets[name] = validate([ckpt, *paths], ValidateOptions(SHARED / name, 4))
        timing = bench([ckpt, *paths], BenchOptions(shapes=((180, 320),), runs=args.runs))
    by_path = lambda result: {m["path"]: m for m in result["models"]}  # noqa: E731
    lines = [f"Reference {ckpt.name}; calibration {args.calib_data} ({args.calib_count} crops); budget {args.budget} dB;"
             f" {timing['machine']['cpu']['model']}, {timing['machine']['cpu']['cores']} cores.", "",
             "| engine | Set5 PSNR-Y | Set5 drift dB | Set14 PSNR-Y | Set14 drift dB | 180x320 median ms | notes |",
             "|---|---|---|---|---|---|---|"]
    t = by_path(timing)
    for m in timing["models"]:
        if m["baseline"]:
            lines.append(f"| {m['name']} | | | | | {m['shapes'][0]['median_ms']:.0f} | baseline |")
    entries = [("pytorch fp32 (reference)", str(ckpt))] + [(k, str(v)) for k, v in artifacts.items()]
    for label, path in entries:
        cells = []
        for name in ("Set5", "Set14"):
            m = by_path(sets[name]).get(path) if name in sets else None
            cells += [f"{m['psnr_y']:.2f}", f"{m['drift_db']:+.3f}"] if m else ["-", "-"]
        ms = t[path]["shapes"][0]["median_ms"] if path in t and not t[path]["baseline"] else None
        lines.append(f"| {label} | {' | '.join(cells)} | {'-' if ms is None else f'{ms:.0f}'} | {notes.get(label, '')} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
