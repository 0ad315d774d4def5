"""The memory model against measured peak memory: the numbers behind ``scnet_deploy/memory.py``'s coefficients.

For SCNet-T x4 (the shipped reference weights) in PyTorch eager, ONNX Runtime (FP32) and OpenVINO (f32 and INT8),
each run in its own process at three LR sizes: resident memory once the model is loaded, peak resident memory after
one inference (``VmHWM``, reset after loading through ``/proc/self/clear_refs``), and the model's estimate of the difference (``memory.estimate_bytes``).

    python benchmarks/memory_model.py [--out benchmarks/results/memory_model.md]
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _output import emit  # benchmarks/ is on sys.path when a script here is run

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((180, 320), (360, 640), (540, 960))
PROBE = """
import sys, numpy as np
from pathlib import Path
from scnet_deploy.runtime import open_model

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) * 1024

with open_model(sys.argv[1]) as runner:
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS (VmHWM) restarts from the loaded model's RSS
    loaded = status("VmRSS:")
    runner.infer(np.random.default_rng(0).random((1, 3, int(sys.argv[2]), int(sys.argv[3])), dtype=np.float32))
    print(loaded, status("VmHWM:"), runner.backend)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from scnet_deploy.doctor import cpu_info
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.exporters.registry import backends
    from scnet_deploy.memory import PYTORCH_MAPS, estimate_bytes
    from scnet_deploy.pipeline import reference_checkpoint

    ckpt = reference_checkpoint()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {"PyTorch eager (checkpoint)": ckpt,
                  "ONNX Runtime FP32": export(ckpt, ExportOptions(output=Path(tmp) / "onnx")).directory,
                  "OpenVINO f32": export(ckpt, ExportOptions(output=Path(tmp) / "ov", format="openvino")).directory,
                  "OpenVINO INT8": export(ckpt, ExportOptions(output=Path(tmp) / "ov8", format="openvino",
                                                              precision="int8")).directory}
        from scnet_deploy.model.checkpoint import load_checkpoint

        arch = load_checkpoint(ckpt).spec.to_dict()
        for label, path in models.items():
            for h, w in SIZES:
                out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(h), str(w)], capture_output=True,
                                     text=True, check=True)
                loaded, peak, backend = out.stdout.split()
                measured = int(peak) - int(loaded)
                estimate = estimate_bytes(arch, backend, h, w)
                rows.append(f"| {label} | {h}x{w} | {int(loaded) / 2**20:.0f} | {int(peak) / 2**20:.0f} | "
                            f"{measured / 2**20:.0f} | {estimate / 2**20:.0f} | {estimate / measured:.2f} |")
    cpu = cpu_info()
    lines = ["# Memory model vs measured peak", "",
             f"SCNet-T x4, one image per run, each in its own process; {cpu['model']}, {cpu['cores']} cores. "
             f"Live-map coefficients: {dict(pytorch=PYTORCH_MAPS, **{b.name: b.live_maps for b in backends() if b.live_maps})}. Command: `python benchmarks/memory_model.py`.", "",
             "| model | LR | loaded RSS MB | peak RSS MB | measured (peak - loaded) MB | estimate MB | estimate / "
             "measured |", "|---|---|---|---|---|---|---|", *rows]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
