"""TensorRT's own export options (``Build``): its workspace, timing cache and profile's batch. No import of
tensorrt here: the CLI reads these to make its options."""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from scnet_deploy.options import option


@dataclass(frozen=True)
class Build:
    workspace_mb: int = option(1024, "TensorRT workspace limit, MiB.", flag="--workspace")
    timing_cache: Path | None = option(None, "TensorRT timing cache file to reuse and update.", cli=Optional[Path])
    max_batch: int = option(1, "TensorRT profile's largest batch.")
