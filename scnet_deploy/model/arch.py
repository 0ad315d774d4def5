"""ArchSpec: everything about an SCNet that its state dict tells, detected once and read by every consumer."""

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import ArchitectureError
from .network import SCALES, SCNet, SCNetConfig, stage_scales

_BODY_KEY = re.compile(r"^body\.(\d+)\.conv1\.weight$")
_SCALE_IN_NAME = re.compile(r"(?:^|[^a-z0-9])x([2348])(?:[^0-9]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class ArchSpec:
    num_feat: int
    num_block: int
    scale: int
    upsampler: str  # "mlp" (official default, bilinear shift-MLP) or "pixelshuffle"
    num_in_ch: int
    num_out_ch: int
    params: int
    scale_source: str  # "weights", "argument" or "file name": how the scale was told

    @property
    def config(self) -> SCNetConfig:
        return SCNetConfig(self.num_feat, self.num_block, self.scale, self.upsampler, self.num_in_ch, self.num_out_ch)

    @property
    def min_input_size(self) -> int:
        # Every op (1x1 conv, 3x3 shift with zero pad, bilinear resize) is defined on a 1x1 image.
        return 1

    @property
    def receptive_radius(self) -> int:
        """LR pixels on each side that can influence an output pixel (a safe tiling halo).

        Each body shift reaches one LR pixel; each upsampler stage reaches at most one more (its shift acts at a
        finer grid, its bilinear resize reads one neighbour); the final bilinear skip reads one neighbour.
        """
        return self.num_block + 2 * len(stage_scales(self.scale)) + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["receptive_radius"] = self.receptive_radius
        d["min_input_size"] = self.min_input_size
        return d


def _shape(sd: dict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ArchitectureError(f"not an SCNet state dict: key '{key}' is missing; keys found start with "
                                f"{sorted(sd)[:5]}. Pass a checkpoint of the official SCNet (BasicSR) architecture.")
    return tuple(sd[key].shape)


def scale_from_filename(path: str | Path) -> int | None:
    match = _SCALE_IN_NAME.search(Path(path).stem)
    return int(match.group(1)) if match else None


def detect_arch(sd: dict[str, torch.Tensor], scale: int | None = None, filename: str | Path | None = None) -> ArchSpec:
    """Detect the architecture from the state dict; ``scale`` or ``filename`` only settle what weights cannot."""
    nf, num_in_ch = _shape(sd, "conv_first.weight")[:2]
    num_out_ch = _shape(sd, "conv_last.weight")[0]
    if num_in_ch != num_out_ch:
        raise ArchitectureError(f"conv_first takes {num_in_ch} channels but conv_last gives {num_out_ch}; SCNet adds "
                                "the upsampled input to its output, so they must match. The checkpoint is not SCNet.")
    if nf % 8:
        raise ArchitectureError(f"num_feat is {nf}, but SCNet's shift splits channels into 8 groups: num_feat must "
                                "be a multiple of 8. This checkpoint is not a valid SCNet.")
    blocks = sorted(int(m.group(1)) for k in sd if (m := _BODY_KEY.match(k)))
    if blocks != list(range(len(blocks))):
        raise ArchitectureError(f"residual blocks are not numbered 0..N-1 (found {blocks}); the checkpoint is damaged.")
    stages = 0
    while any(k.startswith(f"upconv{stages + 1}.") for k in sd):
        stages += 1
    if stages not in (1, 2, 3):
        raise ArchitectureError(f"found {stages} upsampling stages (upconv1..); SCNet has 1 (x2/x3), 2 (x4) or 3 (x8).")
    if "upconv1.up_layer.0.weight" in sd:
        upsampler = "pixelshuffle"
        ratio = _shape(sd, "upconv1.up_layer.3.weight")[0] // nf
        weight_scale = {4: 2, 9: 3}.get(ratio)
        if weight_scale is None:
            raise ArchitectureError(f"upconv1 expands {nf} to {ratio * nf} channels; a PixelShuffle SCNet expands by "
                                    "4 (x2) or 9 (x3).")
        weight_scale = {1: weight_scale, 2: 4, 3: 8}[stages]
    else:
        upsampler = "mlp"
        weight_scale = {1: None, 2: 4, 3: 8}[stages]

    name_scale = scale_from_filename(filename) if filename is not None else None
    if weight_scale is not None:
        if scale is not None and scale != weight_scale:
            raise ArchitectureError(f"--scale {scale} was asked, but the weights are of a x{weight_scale} model. "
                                    f"Drop --scale or pass --scale {weight_scale}.")
        final, source = weight_scale, "weights"
    elif scale is not None:
        if scale not in (2, 3):
            raise ArchitectureError(f"--scale {scale} was asked, but a one-stage shift-MLP SCNet is x2 or x3. "
                                    "Pass --scale 2 or --scale 3.")
        final, source = scale, "argument"
    elif name_scale in (2, 3):
        final, source = name_scale, "file name"
    else:
        raise ArchitectureError("the scale of this checkpoint cannot be told: the default (shift-MLP) upsampler has the "
                                "same weights at x2 and x3 and the file name has no 'x2'/'x3'. Pass --scale 2 or "
                                "--scale 3.")
    assert final in SCALES
    params = sum(int(v.numel()) for v in sd.values())
    return ArchSpec(nf, len(blocks), final, upsampler, num_in_ch, num_out_ch, params, source)


def build_model(spec: ArchSpec) -> SCNet:
    return SCNet(spec.config)
