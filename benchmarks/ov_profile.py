"""Where an OpenVINO artifact spends its time: per-layer profile (PERF_COUNT) of one inference, top layers first.

    python benchmarks/ov_profile.py ARTIFACT_DIR [--size 180x320] [--hint f32|bf16] [--top 15] [--out FILE.md]
"""

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

from _output import emit  # benchmarks/ is on sys.path when a script here is run


def main(argv=None) -> int:
    import openvino as ov

    from scnet_deploy.manifest import read_manifest

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact")
    p.add_argument("--size", default="180x320")
    p.add_argument("--hint", help="INFERENCE_PRECISION_HINT (default: the one the artifact was verified with)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out")
    args = p.parse_args(argv)
    directory = Path(args.artifact)
    manifest = read_manifest(directory)
    config = dict(manifest.get("openvino", {}).get("compile_config", {}))
    if args.hint:
        config["INFERENCE_PRECISION_HINT"] = args.hint
    config["PERF_COUNT"] = True
    h, w = (int(v) for v in args.size.split("x"))
    request = ov.Core().compile_model(str(directory / "model.xml"), "CPU", config).create_infer_request()
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    for _ in range(3):
        request.infer({0: x})
    layers = sorted(request.profiling_info, key=lambda i: -i.real_time.total_seconds())
    total = sum(i.real_time.total_seconds() for i in layers) * 1e3
    by_type = collections.Counter()
    for i in layers:
        by_type[f"{i.node_type} ({i.exec_type})"] += i.real_time.total_seconds() * 1e3
    lines = [f"{directory} ({manifest.get('precision')}, form {manifest.get('form')}), LR {h}x{w}, "
             f"{config.get('INFERENCE_PRECISION_HINT')}: {total:.1f} ms summed over layers", "",
             "| layer type (kernel) | ms | share |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {v / total:.0%} |" for k, v in by_type.most_common(args.top)]
    lines += ["", "| layer | type (kernel) | ms |", "|---|---|---|"]
    lines += [f"| {i.node_name[:60]} | {i.node_type} ({i.exec_type}) | {i.real_time.total_seconds() * 1e3:.1f} |"
              for i in layers[:args.top]]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
