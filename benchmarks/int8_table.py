"""Every INT8 engine of a checkpoint, with its defaults, against FP32 and bf16 on every CPU backend: mean PSNR-Y
drift vs FP32 PyTorch per content set (Set5, Set14 x4, line art, text, city: benchmarks/content_sets.py, content
no export tunes on) and latency at 180x320 -> x4, all measured in one run. INT8 engines are built twice: calibrated
on ``--calib-data`` (BSD68) and on the defaults ``pipeline`` uses (scikit-image photographs, 16 crops).

    python benchmarks/int8_table.py [--checkpoint CKPT] [--calib-data ../shared/datasets/BSD68] [--out FILE.md]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _output import emit  # benchmarks/ is on sys.path when a script here is run
from content_sets import write_eval_sets

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def _as_onnx_artifact(directory: Path, target: Path) -> Path:
    """A TensorRT artifact's Q/DQ graph as an ONNX Runtime artifact (no TensorRT here: scored in ONNX Runtime)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    target.mkdir()
    (target / "model.onnx").write_bytes((directory / "model.onnx").read_bytes())
    m = dict(manifest, backend="onnxruntime", files={"model.onnx": manifest["files"]["model.onnx"]})
    (target / "manifest.json").write_text(json.dumps(m))
    return target


def main(argv=None) -> int:
    from scnet_deploy.bench import BenchOptions, bench
    from scnet_deploy.build_options import CalibOptions
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.pipeline import REFERENCE, PipelineOptions
    from scnet_deploy.validate import ValidateOptions, validate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(REFERENCE))
    p.add_argument("--calib-data", default=str(SHARED / "BSD68"))
    p.add_argument("--calib-count", type=int, default=32)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out")
    args = p.parse_args(argv)
    ckpt = Path(args.checkpoint)
    calibrations = {"BSD68": CalibOptions(Path(args.calib_data), count=args.calib_count),
                    "pipeline defaults": CalibOptions(count=PipelineOptions(output=Path(".")).calib.count)}
    jobs = [("onnxruntime fp32", "onnx", "fp32", None), ("openvino fp32", "openvino", "fp32", None),
            ("openvino bf16", "openvino", "bf16", None)]
    jobs += [(f"{name} int8 ({source})", fmt, "int8", source) for source in calibrations
             for name, fmt in (("onnxruntime", "onnx"), ("openvino", "openvino"),
                               ("tensorrt Q/DQ in ORT", "tensorrt"))]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        artifacts, notes = {}, {}
        for label, fmt, precision, source in jobs:
            print(f"export {label}", file=sys.stderr, flush=True)
            name = label.replace(" ", "_").replace("(", "").replace(")", "").replace("/", "")
            r = export(ckpt, ExportOptions(output=tmp / name, format=fmt, precision=precision,
                                           calib=calibrations[source] if source else CalibOptions()))
            artifacts[label] = _as_onnx_artifact(r.directory, tmp / f"{name}_ort") if fmt == "tensorrt" else r.directory
            i = r.manifest.get("int8")
            if i:
                w = i["worst_image"]
                notes[label] = (f"hold-out mean {i['drift_db']:+.3f} (worst {w['drift_db']:+.3f}, {w['content']}); "
                                f"{len(i['float_layers'])} float layers, {len(i['tries'])} tries")
        folders = {"Set5": SHARED / "Set5", "Set14": SHARED / "Set14", **write_eval_sets(tmp / "eval", SHARED)}
        folders = {k: v for k, v in folders.items() if v.exists()}
        print("validate", file=sys.stderr, flush=True)
        v = validate([ckpt, *artifacts.values()], ValidateOptions(tuple(folders.values()), 4))
        print("bench", file=sys.stderr, flush=True)
        timing = bench([ckpt, *artifacts.values()], BenchOptions(shapes=((180, 320),), runs=args.runs, baselines=True))
    names = [d["name"] for d in v["datasets"]]
    cpu = timing["machine"]["cpu"]
    lines = [f"Reference {ckpt.name}; INT8 with every default (budget 0.1 dB on the content-mixed hold-out), "
             f"calibrated on {args.calib_data} ({args.calib_count} crops) or on the pipeline's defaults; drift = "
             f"mean PSNR-Y vs FP32 PyTorch per set, x4; {cpu['model']}, {cpu['cores']} cores.", "",
             "| engine | " + " | ".join(f"{n} ({d['images']})" for n, d in zip(names, v["datasets"]))
             + " | worst set | 180x320 median ms | INT8 record |",
             "|---|" + "---|" * (len(names) + 3)]
    by_path = {m["path"]: m for m in v["models"]}
    t = {m["path"]: m for m in timing["models"] if not m["baseline"]}
    for m in timing["models"]:
        if m["baseline"]:
            lines.append(f"| {m['name']} |" + " |" * len(names) + f" | {m['shapes'][0]['median_ms']:.0f} | baseline |")
    for label, path in [("pytorch fp32 (reference)", ckpt), *artifacts.items()]:
        m = by_path[str(path)]
        cells = [f"{m['by_dataset'][n]['drift_db']:+.3f}" for n in names]
        ms = t.get(str(path), {}).get("shapes", [{}])[0].get("median_ms")
        lines.append(f"| {label} | {' | '.join(cells)} | {m.get('worst_dataset', '-')} | "
                     f"{'-' if ms is None else f'{ms:.0f}'} | {notes.get(label, '')} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
