"""The QNN backend's own export options (``Build``): the SoC a context is compiled for and the one LR size it takes.
No import of the provider here: the CLI reads these to make its options."""

from dataclasses import dataclass
from functools import partial

from scnet_deploy.options import option, parse_size, size_text

DEFAULT_SOC = "SM8650"  # Snapdragon 8 Gen 3 (HTP v75): the phones SR apps target most in 2026
DEFAULT_SIZE = (64, 64)


@dataclass(frozen=True)
class Build:
    soc: str = option(DEFAULT_SOC, "QNN: the Snapdragon SoC the context is compiled for, by chip name (e.g. SM8650, "
                      "SM8750, SC8380XP for Snapdragon X Elite); `scnet-deploy doctor` lists those the provider "
                      "accepts.", flag="--soc")
    size: tuple[int, int] = option(DEFAULT_SIZE, "QNN: the one LR size HxW the context takes (HTP graphs are static; "
                                   "larger inputs run in exact tiles of it). Export at your frame size to run each "
                                   "frame once.", flag="--htp-size", cli=str,
                                   parse=partial(parse_size, flag="--htp-size"), show=size_text)
