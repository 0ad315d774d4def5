"""How each INT8 setting does on content it was not calibrated on: the table the INT8 defaults are picked from.

For the reference checkpoint, every variant is quantized from the same FP32 graph with the same calibration folder,
then scored as mean PSNR-Y drift vs the same backend's FP32 engine per content set (Set5, Set14, line art, text,
city: benchmarks/content_sets.py), with the hold-out mean the export would gate on, and latency at 180x320 -> x4
(median, same run). OpenVINO variants: NNCF preset, activation range estimator, bias correction, SmoothQuant, the
known-range fix and the content mix in calibration; ONNX Runtime (u8 activations) and the TensorRT Q/DQ graph (s8
activations, run in ONNX Runtime): calibration method and the content mix. (NNCF's SmoothQuant was tried too: it
applies to transformer models only and changed nothing here.)

    python benchmarks/int8_variants.py [--calib-data ../shared/datasets/BSD68] [--out benchmarks/results/int8_variants.md]
"""

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from _output import emit  # benchmarks/ is on sys.path when a script here is run
from content_sets import write_eval_sets
from scnet_deploy.gate import AccuracyGate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"

OV_VARIANTS = [  # (label, settings, content_mix)
    ("before: performance, default ranges, known ranges calibrated, photos",
     {"preset": "performance", "ranges": "default", "known_ranges": False}, False),
    ("performance, default ranges, photos", {"preset": "performance", "ranges": "default"}, False),
    ("performance, minmax, photos", {"preset": "performance", "ranges": "minmax"}, False),
    ("performance, minmax, content mix", {"preset": "performance", "ranges": "minmax"}, True),
    ("performance, mean_minmax, photos", {"preset": "performance", "ranges": "mean_minmax"}, False),
    ("performance, quantile_minmax, photos", {"preset": "performance", "ranges": "quantile_minmax"}, False),
    ("performance, histogram, photos", {"preset": "performance", "ranges": "histogram"}, False),
    ("performance, minmax, photos, full bias correction",
     {"preset": "performance", "ranges": "minmax", "bias_correction": "full"}, False),
    ("mixed, minmax, photos", {"preset": "mixed", "ranges": "minmax"}, False),
    ("mixed, minmax, content mix", {"preset": "mixed", "ranges": "minmax"}, True),
]
ONNX_VARIANTS = [(method, mix) for method in ("minmax", "entropy", "percentile") for mix in (True, False)]


def scorer(sets: dict, scale: int):
    from scnet_deploy.imaging.images import to_float_chw, to_u8_hwc
    from scnet_deploy.imaging.metrics import psnr_ssim_y

    def score(infer) -> dict[str, list[float]]:
        return {name: [psnr_ssim_y(to_u8_hwc(infer(to_float_chw(p.lr)[None])[0]), p.hr, crop=scale)[0] for p in pairs]
                for name, pairs in sets.items()}

    return score


def median_ms(infer, shape=(1, 3, 180, 320), runs: int = 15) -> float:
    """Median of ``runs`` timed runs at ``shape`` after one warm-up (``scnet_deploy.timing.median_ms``)."""
    from scnet_deploy.timing import median_ms as timed

    return timed(infer, np.random.default_rng(0).random(shape, dtype=np.float32), runs, warmup=1)


SMALL = ((1, 1), (2, 1), (3, 5), (43, 96))
_PROBE = """
import sys, numpy as np, openvino as ov
request = ov.Core().compile_model(sys.argv[1], "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
for hw in sys.argv[2:]:
    h, w = map(int, hw.split("x"))
    request.infer({0: np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)})
"""


def small_inputs(model, tmp: Path) -> str:
    """Whether the engine runs on tiny inputs, each size in its own process (a crash would take this one down)."""
    import subprocess

    import openvino as ov

    xml = tmp / "probe.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    failed = []
    for h, w in SMALL:
        r = subprocess.run([sys.executable, "-c", _PROBE, str(xml), f"{h}x{w}"], capture_output=True, timeout=300)
        if r.returncode != 0:
            failed.append(f"{h}x{w} (exit {r.returncode})")
    return "ok" if not failed else "crashes: " + ", ".join(failed)


def main(argv=None) -> int:
    import openvino as ov

    from scnet_deploy.calibration.budget import Baseline, int8_data, psnr_scores
    from scnet_deploy.calibration.data import CalibOptions, calibration_set, holdout_set
    from scnet_deploy.calibration.onnxruntime_int8 import onnx_infer
    from scnet_deploy.calibration.onnxruntime_int8 import quantize_onnx
    from scnet_deploy.calibration.openvino_int8 import DEFAULT_SETTINGS, _ov_infer, quantize_ir
    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.imaging.datasets import load_dataset
    from scnet_deploy.doctor import machine
    from scnet_deploy.exporters.onnx_graph import OnnxOptions, build_onnx
    from scnet_deploy.pipeline import REFERENCE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(REFERENCE))
    p.add_argument("--calib-data", default=str(SHARED / "BSD68"))
    p.add_argument("--calib-count", type=int, default=32)
    p.add_argument("--only", choices=("openvino", "onnx"), help="one backend family's rows only")
    p.add_argument("--save-ir", help="save each OpenVINO variant's IR here as ov_<row>.xml (for benchmark_app)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    scale = ckpt.spec.scale
    calib_options = CalibOptions(Path(args.calib_data), count=args.calib_count)
    cpu = machine()["cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = {"Set5": SHARED / "Set5", "Set14": SHARED / "Set14", **write_eval_sets(tmp / "eval", SHARED)}
        sets = {name: load_dataset(folder, scale) for name, folder in folders.items() if folder.exists()}
        score = scorer(sets, scale)
        fp32_path = tmp / "fp32.onnx"
        build_onnx(ckpt.model, OnnxOptions(), fp32_path)
        names = list(sets)
        header = ["| variant | " + " | ".join(f"{n} ({len(sets[n])})" for n in names)
                  + " | worst set | hold-out mean (gate) | hold-out worst image | 180x320 ms |",
                  "|---|" + "---|" * (len(names) + 4)]
        lines = [f"Reference {Path(args.checkpoint).name} x{scale}; calibration {args.calib_data} "
                 f"({args.calib_count} crops); {cpu['model']}, {cpu['cores']} cores; mean PSNR-Y drift (dB) vs the "
                 "same backend's FP32 engine per content set (images in brackets), no budget fallback.", ""]

        def row(label, fp32_scores, infer, section, ms):
            scores = score(infer)
            drift = {n: float(np.mean(np.subtract(scores[n], fp32_scores[n]))) for n in names}
            worst = min(drift, key=drift.get)
            w = section["worst_image"]
            return (f"| {label} | " + " | ".join(f"{drift[n]:+.3f}" for n in names)
                    + f" | {worst} | {section['drift_db']:+.3f} | {w['drift_db']:+.3f} ({w['content']}) | {ms:.1f} |")

        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if args.only != "onnx":
            fp32_ir = ov.convert_model(str(fp32_path))
            fp32_infer = _ov_infer(fp32_ir, config)
            ov_fp32 = score(fp32_infer)
            lines += ["## OpenVINO (NNCF), f32 float parts", "",
                      header[0] + " small inputs (1x1, 2x1, 3x5, 43x96) |", header[1] + "---|",
                      f"| FP32 engine | " + " | ".join("+0.000" for _ in names) + f" | - | - | - | "
                      f"{median_ms(fp32_infer):.1f} | - |"]
            for label, settings, mix in OV_VARIANTS:
                print(f"openvino: {label}", file=sys.stderr, flush=True)
                data = int8_data(replace(calib_options, content_mix=mix), scale)
                quantized = quantize_ir(fp32_ir, data, AccuracyGate(None), config, {**DEFAULT_SETTINGS, **settings})
                model, section = quantized.model, quantized.section.to_dict()
                infer = _ov_infer(model, config)
                lines.append(row(label, ov_fp32, infer, section, median_ms(infer)) + f" {small_inputs(model, tmp)} |")
                if args.save_ir:
                    Path(args.save_ir).mkdir(parents=True, exist_ok=True)
                    ov.save_model(model, str(Path(args.save_ir) / f"ov_{OV_VARIANTS.index((label, settings, mix))}.xml"))
        if args.only != "openvino":
            calib = {mix: calibration_set(replace(calib_options, content_mix=mix), scale) for mix in (True, False)}
            holdout = holdout_set(calib_options, scale)
            ort_fp32_infer = onnx_infer(fp32_path)
            ort_fp32 = score(ort_fp32_infer)
            baseline = Baseline(holdout, psnr_scores(ort_fp32_infer, holdout, scale), scale)
            for backend, symmetric in (("ONNX Runtime (u8 activations)", False),
                                       ("TensorRT Q/DQ graph (s8 activations), run in ONNX Runtime", True)):
                lines += ["", f"## {backend}", "", *header]
                for method, mix in ONNX_VARIANTS:
                    print(f"{backend}: {method} mix={mix}", file=sys.stderr, flush=True)
                    path = tmp / f"q_{symmetric}_{method}_{mix}.onnx"
                    quantize_onnx(fp32_path, path, calib[mix], method, (), symmetric)
                    infer = onnx_infer(path)
                    drift = baseline.measure(infer)
                    section = {"drift_db": drift["mean_db"], "worst_image": drift["worst_image"]}
                    lines.append(row(f"{method}, {'content mix' if mix else 'photos only'}", ort_fp32, infer, section,
                                     median_ms(infer)))
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
