"""Build every engine this machine can build, in every precision its backend offers, from one checkpoint, and
tabulate build time, artifact size and verification against PyTorch FP32.

    python benchmarks/engines.py [--checkpoint CKPT] [--out FILE.md]

Default checkpoint: SCNet-T x4 (64 features, 16 blocks) with random weights; pass the official fixture or the
reference checkpoint for real ones. Backends whose dependency or hardware is missing are listed with the reason.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _output import emit  # benchmarks/ is on sys.path when a script here is run


def artifact_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def main(argv=None) -> int:
    import torch

    from scnet_deploy.doctor import cpu_info
    from scnet_deploy.errors import ScnetDeployError
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.exporters.registry import backends
    from scnet_deploy.model.network import SCNet, SCNetConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--out")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.checkpoint) if args.checkpoint else tmp / "scnet_t_x4_random.pth"
        if not args.checkpoint:
            torch.manual_seed(0)
            torch.save({"params": SCNet(SCNetConfig()).state_dict()}, ckpt)
        rows = []
        for backend in backends():
            for precision in backend.precisions:
                label = f"{backend.format} {precision}"
                out = tmp / label.replace(" ", "_")
                t0 = time.perf_counter()
                try:
                    m = export(ckpt, ExportOptions(output=out, format=backend.format, precision=precision)).manifest
                except ScnetDeployError as exc:
                    rows.append(f"| {backend.format} | {precision} | - | - | not built: {exc} |")
                    continue
                seconds = time.perf_counter() - t0
                v = m["verification"]
                if v.get("skipped"):
                    check = f"not run: {v['skipped']}"
                else:
                    check = (f"max abs {v['max_abs_diff']:.2e}, PSNR vs FP32 {v['min_psnr_vs_fp32_db']:.1f} dB"
                             if "min_psnr_vs_fp32_db" in v else f"max abs {v['max_abs_diff']:.2e}")
                    check += f" ({v['runtime'].split(': ')[-1]})"
                rows.append(f"| {backend.format} | {precision} | {seconds:.1f} | {artifact_bytes(out) / 1024:.0f} | "
                            f"{check} |")
    cpu = cpu_info()
    lines = [f"Engines built from {ckpt.name} on {cpu['model']} ({cpu['cores']} cores), one run; build time includes "
             "the ONNX export and verification.", "",
             "| format | precision | build s | artifact KiB | verification vs PyTorch FP32 |", "|---|---|---|---|---|",
             *rows]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
