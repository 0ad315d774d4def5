"""The image skip as a conv (``skip_as_conv``) against the bilinear resize, in every CPU engine and precision.

SCNet adds the bilinear x4 upsample of its 3-channel input to its output. That resize is slow for its size, probably
because the runtimes run it in the channel-blocked layout of the 64-channel maps around it (OpenVINO: 11.9 ms of its INT8 engine's 162 ms at 180x320 -> 720p in one
profile here, next to 31 ms for a 64-channel resize of the same output size). ``skip_as_conv`` computes it at the
input size: edge padding, a 3x3 conv to the 16 output phases of each channel, depth-to-space (exact; the conv stays
float in INT8 engines). This script exports the reference checkpoint in each CPU form with and without it (INT8 as
the pipeline does: 16 calibration crops, the 0.1 dB budget), and times each pair in turn.

    python benchmarks/skip_as_conv.py [--size 180x320] [--runs 10] [--out FILE.md]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from _output import emit  # benchmarks/ is on sys.path when a script here is run

ENGINES = (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "fp16"),
           ("openvino", "int8"))
BASE_FORMS = ("dwconv", "dwconv+conv_before_upsample")


def main(argv=None) -> int:
    from scnet_deploy.build_options import CalibOptions
    from scnet_deploy.doctor import machine, machine_line
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.build_options import OnnxOptions
    from scnet_deploy.model.forms import DeployOptions
    from scnet_deploy.pipeline import reference_checkpoint
    from scnet_deploy.runtime import open_model
    from scnet_deploy.timing import in_turn

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="180x320")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--engines", default=",".join(f"{f}-{q}" for f, q in ENGINES))
    p.add_argument("--out")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    lines = [f"Machine: {machine_line(machine())}. SCNet-T x4 reference, LR {h}x{w} -> {4 * h}x{4 * w}; each pair "
             f"timed in turn, median of {args.runs} runs after a warm-up; INT8 as the pipeline builds it (16 "
             "calibration crops, 0.1 dB budget), drift = its hold-out mean PSNR-Y vs FP32.", "",
             "| engine | form | resize skip ms | skip_as_conv ms | speed-up | drift dB (resize / conv) | "
             "float layers (resize / conv) |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines.split(","):
            fmt, precision = engine.split("-")
            for base in BASE_FORMS:
                runners, manifests = {}, {}
                for form in (base, f"{base}+skip_as_conv"):
                    out = Path(tmp) / f"{engine}-{form}"
                    options = ExportOptions(output=out, format=fmt, precision=precision, calib=CalibOptions(count=16),
                                            onnx=OnnxOptions().with_form(DeployOptions.from_name(form)))
                    manifests[form] = export(reference_checkpoint(), options).manifest
                    runners[form] = open_model(out)
                try:
                    timings = in_turn({f: r.infer for f, r in runners.items()}, x, args.runs, warmup=1)
                finally:
                    for r in runners.values():
                        r.close()
                a, b = (timings[f]["median_ms"] for f in runners)
                int8 = [manifests[f].get("int8") for f in runners]
                drift = " / ".join(f"{i['drift_db']:+.3f}" for i in int8) if int8[0] else ""
                floats = " / ".join(str(len(i["float_layers"])) for i in int8) if int8[0] else ""
                lines.append(f"| {fmt} {precision} | {base} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {drift} | {floats} |")
                print(lines[-1], flush=True)
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
