"""SCNet in its reference form: the official Aitical/SCNet semantics and parameter names, bit for bit.

Official state dicts (``conv_first``, ``body.N.conv1/conv2``, ``upconvK.up_layer.I``, ``conv_hr``, ``conv_last``)
load into this module with ``strict=True``. Two upsamplers exist in the official code: the default bilinear
"shift-MLP" (``mlp``) and PixelShuffle (``pixelshuffle``); x4 and x8 chain two or three x2 stages.
"""

from dataclasses import dataclass

import torch
from torch import nn

from .shift import Shift8
from .stages import stage_scales

UPSAMPLERS = ("mlp", "pixelshuffle")
SCALES = (2, 3, 4, 8)


class ResidualBlockShift(nn.Module):
    """conv1 -> shift -> ReLU -> conv2, plus identity."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 1)
        self.relu = nn.ReLU()
        self.shift = Shift8(num_feat // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.shift(self.conv1(x))))


class UpShiftMLP(nn.Module):
    """Bilinear upsample, conv, LeakyReLU(0.02), shift, conv (the official default upsampler)."""

    def __init__(self, dim: int, scale: int) -> None:
        super().__init__()
        self.up_layer = nn.Sequential(
            nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False),
            nn.Conv2d(dim, dim, 1),
            nn.LeakyReLU(0.02),
            Shift8(dim // 8),
            nn.Conv2d(dim, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_layer(x)


class UpShiftPixelShuffle(nn.Module):
    """Conv, LeakyReLU(0.02), shift, conv to dim*s*s channels, PixelShuffle."""

    def __init__(self, dim: int, scale: int) -> None:
        super().__init__()
        self.up_layer = nn.Sequential(
            nn.Conv2d(dim, dim, 1),
            nn.LeakyReLU(0.02),
            Shift8(dim // 8),
            nn.Conv2d(dim, dim * scale * scale, 1),
            nn.PixelShuffle(scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_layer(x)


@dataclass(frozen=True)
class SCNetConfig:
    num_feat: int = 64
    num_block: int = 16
    scale: int = 4
    upsampler: str = "mlp"
    num_in_ch: int = 3
    num_out_ch: int = 3


class SCNet(nn.Module):
    """SCNet (arXiv 2307.16140). ``forward`` takes NCHW float in [0, 1] and returns the x``scale`` image."""

    def __init__(self, config: SCNetConfig = SCNetConfig()) -> None:
        super().__init__()
        self.config = config
        nf = config.num_feat
        self.scale = config.scale
        self.conv_first = nn.Conv2d(config.num_in_ch, nf, 1)
        self.body = nn.Sequential(*[ResidualBlockShift(nf) for _ in range(config.num_block)])
        up = UpShiftMLP if config.upsampler == "mlp" else UpShiftPixelShuffle
        for k, s in enumerate(stage_scales(config.scale), start=1):
            setattr(self, f"upconv{k}", up(nf, s))
        self.num_stages = len(stage_scales(config.scale))
        self.conv_hr = nn.Conv2d(nf, nf, 1)
        self.conv_last = nn.Conv2d(nf, config.num_out_ch, 1)
        self.lrelu = nn.LeakyReLU(0.1)
        # The image-space skip (F.interpolate in the official code; a module here so rewrites can replace it).
        self.skip = nn.Upsample(scale_factor=config.scale, mode="bilinear", align_corners=False)

    def upconvs(self) -> list[nn.Module]:
        return [getattr(self, f"upconv{k}") for k in range(1, self.num_stages + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.lrelu(self.conv_first(x)))
        for upconv in self.upconvs():
            out = self.lrelu(upconv(out))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + self.skip(x)
