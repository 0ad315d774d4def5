"""Peak memory of the 8K x4 upscale: ``python benchmarks/upscale_8k_memory.py WORKDIR`` exports the shipped SCNet-T x4
to ONNX, writes a random 7680x4320 PNG, upscales it x4 (30720x17280) in a fresh process with ``--max-memory 512``
and prints the tiles, the output's size and that process's peak RSS (README's 8K numbers come from this output;
the slow test ``tests/test_hardening.py -k 8k`` bounds the same peak at 4 GiB)."""

import subprocess
import sys
from pathlib import Path

UPSCALE = ("import resource, sys; from scnet_deploy.upscale import upscale, UpscaleOptions; "
           "r = upscale(sys.argv[1], [sys.argv[2]], UpscaleOptions(sys.argv[3], max_memory_mb=512)); "
           "print('tiles', r[0]['tiles'], 'of', r[0]['tile'], 'LR px; peak RSS', "
           "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'KB')")


def main(argv=None) -> int:
    import numpy as np
    from PIL import Image

    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.pipeline import reference_checkpoint

    work = Path((argv or sys.argv[1:] or ["upscale-8k"])[0])
    work.mkdir(parents=True, exist_ok=True)
    artifact = export(reference_checkpoint(), ExportOptions(output=work / "engine")).directory
    image = work / "8k.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (4320, 7680, 3), dtype=np.uint8)).save(image)
    out = work / "8k_x4.png"
    subprocess.run([sys.executable, "-c", UPSCALE, str(artifact), str(image), str(out)], check=True)
    print("output", out, out.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
