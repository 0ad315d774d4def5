"""The ``qat`` verb: a checkpoint fine-tuned with fake INT8 quantization, written as a checkpoint that carries its
quantizer ranges (``model/quant_ranges.py``); ``export --int8`` from it quantizes with those ranges instead of
calibrating. The training itself: ``calibration/qat_training.py``.

Rerunning the same command continues where it stopped (its state file beside the output, ``OUT.qat-state.pt``,
removed when the checkpoint is written); the same options and seed give the same checkpoint.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import callable_verb
from .errors import ScnetDeployError
from .options import option
from .progress import Progress, reporter

QUANTIZE_CHOICES = ("hr", "all")  # calibration/qat_training.py: quantized_convs


@dataclass(frozen=True)
class QatOptions:
    output: Path
    data: tuple[Path, ...] = field(default=())  # image folders (HR): LR patches are cut from their bicubic x1/scale
    steps: int = option(100, "Optimizer steps (0: equalize and take the ranges, no fine-tuning).")
    batch: int = option(16, "LR patches per step.")
    lr: float = option(5e-5, "Adam's learning rate (cosine decay to a tenth of it).")
    patch: int = option(32, "LR patch side.")
    seed: int = option(0, "Seed of the patch sampling and the initialisation: same seed, same checkpoint.")
    content_share: float = option(0.25, "Share of each batch cut from generated line art, text, flat colours and "
                                  "textures.")
    save_every: int = option(25, "Save the resumable state every this many steps.")
    quantized_residual: bool = option(False, "Quantize the residual stream where each block reads it (the fused "
                                      "INT8 graph some runtimes need to be fast; costs accuracy: docs/features.md); "
                                      "off: the adds stay float.")
    quantize: str = option("hr", "Which convolutions get int8: hr, the two that write output-resolution features (the "
                           "last upsampling stage's last and conv_hr: much of the work at x4, within the accuracy "
                           "gate); all, every one but the first (faster, over the gate on line art and text: "
                           "docs/features.md).")
    equalize: bool = option(True, "Equalize channels before quantizing (the same function, each channel's share "
                            "of its activation's int8 range evened out: docs/features.md); off: the checkpoint's "
                            "channels as they are.")

    @property
    def state_path(self) -> Path:
        return Path(f"{self.output}.qat-state.pt")

    def identity(self, teacher_sha256: str, data_sha256: str) -> str:
        """What a saved state must match to be resumed: the teacher, the data and every option but ``save_every``."""
        fields = {k: v for k, v in self.__dict__.items() if k not in ("output", "save_every")}
        record = json.dumps({**fields, "data": [str(d) for d in self.data], "teacher": teacher_sha256,
                             "data_sha256": data_sha256}, sort_keys=True, default=str)
        return hashlib.sha256(record.encode()).hexdigest()

    def check(self) -> "QatOptions":
        if not self.data:
            raise ScnetDeployError("qat needs images to cut patches from: pass --data DIR (HR images; several "
                                   "folders may follow).")
        for folder in self.data:
            if not Path(folder).is_dir():
                raise ScnetDeployError(f"--data '{folder}' is not a folder; pass folders of images (HR).")
        for name, value, low in (("--steps", self.steps, 0), ("--batch", self.batch, 1), ("--patch", self.patch, 8),
                                 ("--save-every", self.save_every, 1)):
            if not isinstance(value, int) or value < low:
                raise ScnetDeployError(f"{name} must be an integer >= {low}, got {value}.")
        if not (0 < self.lr < 1):
            raise ScnetDeployError(f"--lr must be in (0, 1), got {self.lr}; e.g. --lr 1e-4.")
        if not (0 <= self.content_share <= 1):
            raise ScnetDeployError(f"--content-share must be from 0 to 1, got {self.content_share}.")
        if self.quantize not in QUANTIZE_CHOICES:
            raise ScnetDeployError(f"--quantize {self.quantize!r} is not a choice; use one of "
                                   f"{', '.join(QUANTIZE_CHOICES)}.")
        if Path(self.output).suffix.lower() != ".safetensors":
            raise ScnetDeployError(f"-o '{self.output}': qat writes a .safetensors checkpoint; name it *.safetensors.")
        return self


def qat(checkpoint: str | Path, options: QatOptions, progress=None) -> dict:
    """Fine-tune ``checkpoint`` with fake INT8 quantization, distilled from its FP32 self; writes
    ``options.output`` and returns its record (path, hash, ranges, steps, seconds)."""
    from .errors import require_export_stack

    require_export_stack("qat (it trains with PyTorch)")
    options.check()
    import importlib.util

    if importlib.util.find_spec("modelopt") is None or importlib.util.find_spec("huggingface_hub") is None:
        raise ScnetDeployError("qat needs NVIDIA ModelOpt, which is not installed: pip install "
                               "'nvidia-modelopt[torch]>=0.47' huggingface_hub (the qat extra of this package).")
    from safetensors.torch import save_file

    from scnet_deploy.calibration.qat_training import fine_tune
    from .manifest import sha256_of
    from .model.checkpoint import load_checkpoint
    from .model.quant_ranges import METADATA_KEY

    say = reporter(progress)
    ckpt = load_checkpoint(checkpoint)
    ckpt.require_finite("fine-tune")
    if ckpt.quant is not None:
        raise ScnetDeployError(f"'{checkpoint}' is already quantization-aware ({ckpt.quant.summary()}); fine-tune "
                               "the FP32 checkpoint it came from.")
    say(Progress(f"qat: {checkpoint}, {options.steps} steps"))
    weights, ranges = fine_tune(ckpt, options, say)
    out = Path(options.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    tensors = {**weights, **{k: torch.from_numpy(v.copy()) for k, v in ranges.to_tensors().items()}}
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: json.dumps(ranges.info)})
    from .imaging.images import _umask

    tmp.chmod(0o666 & ~_umask())  # a checkpoint like any other file the user writes (safetensors makes it 0600)
    tmp.replace(out)
    options.state_path.unlink(missing_ok=True)
    return {"checkpoint": str(out), "sha256": sha256_of(out), "quantization_aware": ranges.info,
            "quantized_convs": len(ranges.inputs), "summary": ranges.summary()}


callable_verb(__name__)
