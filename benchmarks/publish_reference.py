"""Publish a trained checkpoint as the package's reference weights (safetensors, official parameter names) and print
the validate commands whose numbers go into the model card.

    python benchmarks/publish_reference.py runs/reference/weights.pth
"""

import sys
from pathlib import Path

from safetensors.torch import save_file

from scnet_deploy.model.checkpoint import load_checkpoint
from scnet_deploy.pipeline import REFERENCE


def main(argv=None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    ckpt = load_checkpoint(argv[0])
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in ckpt.model.state_dict().items()}
    save_file(tensors, str(REFERENCE), metadata={"arch": "SCNet", "num_feat": str(ckpt.spec.num_feat),
                                                  "num_block": str(ckpt.spec.num_block), "scale": str(ckpt.spec.scale),
                                                  "upsampler": ckpt.spec.upsampler})
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size / 1024:.0f} KiB)")
    for name in ("Set5", "Set14"):
        print(f"scnet-deploy validate {REFERENCE.relative_to(Path.cwd()) if REFERENCE.is_relative_to(Path.cwd()) else REFERENCE}"
              f" --dataset ../shared/datasets/{name} --scale 4 --method bicubic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
