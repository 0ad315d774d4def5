"""FP32, post-training INT8 (calibrated) and quantization-aware INT8 (the ranges of ``scnet-deploy qat``) per CPU
backend, all measured in one run: the accuracy gate's figures per content type of the pipeline's validation (worst
image's share of pixels 4+ levels off FP32 PyTorch, mean PSNR-Y drift), Set5 x4 drift against FP32 PyTorch, and the
median ms at 180x320 -> x4.

Each INT8 engine is exported twice: all-INT8 (``--no-budget``, so the table shows what quantization alone does) and
with the default gate (the budget loop keeps the most sensitive convolutions in float until every content type of the
hold-out passes, or the export is refused: its row says which and why). Every INT8 export keeps an engine slower than
FP32 here (``--keep-slower-int8``) so that the table can show it; the speed rule's verdict is in its column.

    python benchmarks/qat_int8.py [--checkpoint REF] [--qat REF_QAT] [--runs 10] [--out FILE.md]
"""

import argparse
import sys
import tempfile
from pathlib import Path

from _output import emit  # benchmarks/ is on sys.path when a script here is run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def main(argv=None) -> int:
    from scnet_deploy.bench import BenchOptions, bench
    from scnet_deploy.errors import ScnetDeployError
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.pipeline import REFERENCE, REFERENCE_QAT, PipelineOptions, _default_datasets
    from scnet_deploy.validate import ValidateOptions, validate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(REFERENCE))
    p.add_argument("--qat", default=str(REFERENCE_QAT))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out")
    args = p.parse_args(argv)
    ckpt, qat = Path(args.checkpoint), Path(args.qat)
    calib = PipelineOptions().calib
    jobs = [("fp32", ckpt, "fp32", {})]
    for label, source in (("PTQ int8", ckpt), ("QAT int8", qat)):
        jobs += [(f"{label}, all-INT8", source, "int8", {"budget_db": None}),
                 (f"{label}, gated", source, "int8", {})]
    rows, artifacts = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for backend, fmt in (("ONNX Runtime", "onnx"), ("OpenVINO", "openvino")):
            for label, source, precision, extra in jobs:
                name = f"{backend} {label}"
                print(f"export {name}", file=sys.stderr, flush=True)
                out = tmp / name.replace(" ", "_").replace(",", "")
                try:
                    r = export(source, ExportOptions(output=out, format=fmt, precision=precision, calib=calib,
                                                     keep_slower_int8=True, **extra))
                except ScnetDeployError as exc:
                    rows[name] = {"refused": str(exc).split(";")[0]}
                    continue
                artifacts[name] = r.directory
                i, s = r.manifest.get("int8") or {}, r.manifest.get("int8_speed") or {}
                q = i.get("quantization", {})
                rows[name] = {"convs": f"{q.get('quantized_convs', '-')}/{q.get('convolutions', '-')}",
                              "float": len(i.get("float_layers", [])) if i else "-",
                              "speed": "-" if not s else f"{s['speedup']:.2f}x FP32" if s.get("timed") else "not timed"}
        folders = [*_default_datasets(tmp / "validation"), SHARED / "Set5"]
        print("validate", file=sys.stderr, flush=True)
        v = validate([ckpt, *artifacts.values()], ValidateOptions(tuple(f for f in folders if f.exists()), 4,
                                                                 budget_db=0.1, reference=ckpt))
        print("bench", file=sys.stderr, flush=True)
        timing = bench(list(artifacts.values()), BenchOptions(shapes=((180, 320),), runs=args.runs))
    by_path = {m["path"]: m for m in v["models"]}
    ms = {m["path"]: m["shapes"][0]["median_ms"] for m in timing["models"] if not m.get("baseline")}
    contents = [d["name"] for d in v["datasets"] if d["name"] != "Set5"]
    info = load_checkpoint(qat).quant.info if qat.exists() else {}
    cpu = timing["machine"]["cpu"]
    lines = [f"{ckpt.name} (FP32) and {qat.name} ({info.get('steps')} steps of `scnet-deploy qat`, "
             f"{info.get('seconds')} s); drift and visible share against FP32 PyTorch of {ckpt.name}; visible: the "
             f"worst image's share of pixels 4+ levels off (gate 0.1%); {cpu['model']}, {cpu['cores']} cores.", "",
             "| engine | convs int8 | kept float | " + " | ".join(f"{c} visible / drift" for c in contents)
             + " | gate | Set5 x4 drift dB | 180x320 ms | speed rule |", "|---|" + "---|" * (len(contents) + 6)]
    for name, row in rows.items():
        if "refused" in row:
            lines.append(f"| {name} | refused: {row['refused']} |" + " |" * (len(contents) + 5))
            continue
        m = by_path[str(artifacts[name])]
        gate = m.get("gate") or {}
        cells = []
        for c in contents:
            g = gate.get(c, {})
            cells.append(f"{100 * g.get('visible_share', float('nan')):.2f}% / {m['by_dataset'][c]['drift_db']:+.3f}")
        passed = "pass" if gate and all(g.get("passed") for g in gate.values()) else "fail"
        lines.append(f"| {name} | {row['convs']} | {row['float']} | {' | '.join(cells)} | {passed} | "
                     f"{m['by_dataset']['Set5']['drift_db']:+.3f} | {ms.get(str(artifacts[name]), float('nan')):.1f} "
                     f"| {row['speed']} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
