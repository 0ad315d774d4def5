"""ncnn's own runtime options (``Run``): which Vulkan device. No import of ncnn here: the CLI reads these to make its
options."""

from dataclasses import dataclass
from typing import Optional

from scnet_deploy.options import option


@dataclass(frozen=True)
class Run:
    vulkan_device: int | None = option(None, "ncnn on Vulkan: the device index (`scnet-deploy doctor` lists them; "
                                       "default: ncnn's choice).", flag="--vulkan-device", cli=Optional[int])
