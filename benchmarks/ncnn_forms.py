"""Which deploy form ncnn runs fastest: the reference checkpoint exported to ncnn in each shift form (slice, dwconv,
fold), with and without conv-before-upsample and skip-as-conv, every one verified, then timed in turn at one LR size
(median of --runs after a warm-up). The forms measured fastest are ncnn's autotuning candidates
(``exporters/ncnn/build.py: candidate_forms``).

    python benchmarks/ncnn_forms.py [--size 180x320] [--runs 7] [--precision fp32] [--compute cpu] [--out FILE.md]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from _output import emit  # benchmarks/ is on sys.path when a script here is run

FORMS = ("slice", "slice+conv_before_upsample", "dwconv", "dwconv+conv_before_upsample", "fold",
         "fold+conv_before_upsample", "dwconv+skip_as_conv", "dwconv+conv_before_upsample+skip_as_conv",
         "fold+conv_before_upsample+skip_as_conv")


def main(argv=None) -> int:
    from scnet_deploy.doctor import machine, machine_line
    from scnet_deploy.errors import ScnetDeployError
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.build_options import OnnxOptions
    from scnet_deploy.model.forms import DeployOptions
    from scnet_deploy.options import RuntimeOptions
    from scnet_deploy.pipeline import reference_checkpoint
    from scnet_deploy.runtime import open_model
    from scnet_deploy.timing import in_turn

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="180x320")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--compute", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--out")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    runners, manifests, layers, failed = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in args.forms.split(","):
            out = Path(tmp) / form
            options = ExportOptions(output=out, format="ncnn", precision=args.precision, compute=args.compute,
                                    onnx=OnnxOptions().with_form(DeployOptions.from_name(form)))
            try:
                manifests[form] = export(reference_checkpoint(), options).manifest
            except ScnetDeployError as exc:
                failed[form] = str(exc).splitlines()[0][:160]
                continue
            layers[form] = sum(1 for line in (out / "model.ncnn.param").read_text().splitlines()[2:] if line)
            runners[form] = open_model(out, RuntimeOptions(threads=args.threads))
        try:
            timings = in_turn({f: r.infer for f, r in runners.items()}, x, args.runs, warmup=1, drop_above=None)
        finally:
            for r in runners.values():
                r.close()
    best = min(t["median_ms"] for t in timings.values() if "median_ms" in t)
    lines = [f"Machine: {machine_line(machine())}. SCNet-T x4 reference in ncnn {args.compute} {args.precision}, "
             f"LR {h}x{w} -> {4 * h}x{4 * w}; every form timed in turn, median of {args.runs} runs after a warm-up "
             "(`python benchmarks/ncnn_forms.py "
             f"--size {args.size} --runs {args.runs} --precision {args.precision} --compute {args.compute}`).", "",
             "| form | ncnn layers | max abs diff vs PyTorch | median ms | vs fastest |", "|---|---|---|---|---|"]
    for form, t in sorted(timings.items(), key=lambda kv: kv[1].get("median_ms", float("inf"))):
        m = manifests[form]
        lines.append(f"| {form} | {layers[form]} | {m['verification']['max_abs_diff']:.2g} | {t['median_ms']:.1f} | "
                     f"{t['median_ms'] / best:.2f}x |")
    lines += [f"| {form} | - | failed: {why} | - | - |" for form, why in failed.items()]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
