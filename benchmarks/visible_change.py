"""What each reduced-precision engine changes that a user can see: per content type and image, the PSNR-Y drift from
FP32 PyTorch (what papers report), the FP32 output's own PSNR-Y against ground truth (how near-lossless the
reference already is), and the share of pixels whose 8-bit value moves by 2, 4 or 8+ levels from FP32's 8-bit output
(any channel), with the largest move. The evidence for the accuracy gate's defaults (scnet_deploy/gate.py).

    python benchmarks/visible_change.py --out benchmarks/results/visible_change.md

Engines: the shipped reference SCNet-T x4 exported here (default form, no autotuning) to OpenVINO f32, bf16 (where
the CPU has it), INT8 (its hold-out budget loop as export runs it) and ONNX Runtime INT8; content: the pipeline's
default validation images (none of them used by calibration or the INT8 hold-out).
"""

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

LEVELS = (2, 4, 8)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def measure(engines: dict[str, Path], reference: Path, datasets: list[Path], scale: int) -> list[dict]:
    from scnet_deploy.gate import visible_share
    from scnet_deploy.imaging.datasets import load_dataset
    from scnet_deploy.imaging.images import to_float_chw, to_u8_hwc
    from scnet_deploy.imaging.metrics import SSIM_WINDOW, psnr_y
    from scnet_deploy.runtime import open_model

    pairs = {d.name: list(load_dataset(d, scale).scorable(scale, SSIM_WINDOW)) for d in datasets}
    with open_model(reference) as ref:
        fp32 = {(c, p.name): to_u8_hwc(ref.infer(to_float_chw(p.lr))) for c, ps in pairs.items() for p in ps}
    rows = []
    for label, path in engines.items():
        with open_model(path) as engine:
            for content, ps in pairs.items():
                for p in ps:
                    out, ref_u8 = to_u8_hwc(engine.infer(to_float_chw(p.lr))), fp32[(content, p.name)]
                    moved = np.abs(out.astype(np.int16) - ref_u8.astype(np.int16))[scale:-scale, scale:-scale]
                    ref_psnr = psnr_y(ref_u8, p.hr, scale)
                    rows.append({"engine": label, "content": content, "image": p.name, "fp32_psnr_y": ref_psnr,
                                 "drift_db": psnr_y(out, p.hr, scale) - ref_psnr, "max_levels": int(moved.max()),
                                 **{f"share_{n}": visible_share(out, ref_u8, scale, n) for n in LEVELS}})
    return rows


def export_engines(out: Path) -> dict[str, Path]:
    from scnet_deploy.exporters.registry import get_backend
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.pipeline import reference_checkpoint

    wanted = [("openvino f32", "openvino", "fp32"), ("openvino bf16", "openvino", "bf16"),
              ("openvino int8", "openvino", "int8"), ("onnxruntime int8", "onnx", "int8")]
    engines = {}
    for label, fmt, precision in wanted:
        backend = get_backend("onnxruntime" if fmt == "onnx" else fmt)
        if backend.check(precision):
            print(f"skipped {label}: {backend.check(precision)}")
            continue
        engines[label] = export(reference_checkpoint(), ExportOptions(output=out / label.replace(" ", "-"),
                                                                      format=fmt, precision=precision)).directory
    return engines


def table(rows: list[dict]) -> list[str]:
    lines = ["| engine | content | image | FP32 PSNR-Y vs GT | drift dB | max levels | 2+ levels | 4+ levels | 8+ levels |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['content']} | {r['image']} | {r['fp32_psnr_y']:.2f} | {r['drift_db']:+.3f} | "
                     f"{r['max_levels']} | " + " | ".join(f"{100 * r[f'share_{n}']:.3f}%" for n in LEVELS) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    args = p.parse_args()
    from scnet_deploy.pipeline import _default_datasets, reference_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        engines = export_engines(Path(tmp) / "engines")
        rows = measure(engines, reference_checkpoint(), _default_datasets(Path(tmp)), 4)
    text = [f"# Visible change per engine and content ({cpu_name()}, {__import__('os').cpu_count()} CPUs)", "",
            "`python benchmarks/visible_change.py --out " + str(args.out) + "`", "", *table(rows), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
