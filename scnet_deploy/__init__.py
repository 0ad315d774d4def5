"""scnet-deploy: export, profile and validate SCNet super-resolution models on edge runtimes.

Public API here: ``load_checkpoint``, ``info``, ``export``; the other verbs are one function each in their module
(``bench.bench``, ``validate.validate``, ``upscale.upscale``, ``pipeline.pipeline``). Importing the package needs no
PyTorch (a device runs artifacts without it); the names that do (checkpoints, the model) are imported when first
used.
"""

import importlib
import sys

from ._version import __version__  # noqa: E402 (one home for the version: _version.py)

# No network from our verbs but the ssh a user asks for. OpenVINO sends a telemetry event when it is imported (and
# NNCF when it quantizes) through the openvino_telemetry package, and offers no environment switch (its documented
# opt-out, `opt_in_out --opt_out`, writes a consent file for every program of the user). Both fall back to their own
# no-op stub when that package cannot be imported, so in this process it cannot be.
sys.modules.setdefault("openvino_telemetry", None)

from .errors import ScnetDeployError  # noqa: E402
from .export import ExportOptions, ExportResult, export  # noqa: E402
from .info import info  # noqa: E402

_LAZY = {"ArchSpec": "model.arch", "detect_arch": "model.arch", "Checkpoint": "model.checkpoint",
         "load_checkpoint": "model.checkpoint", "SCNet": "model.network", "SCNetConfig": "model.network"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'scnet_deploy' has no attribute {name!r}")


__all__ = ["ArchSpec", "Checkpoint", "ExportOptions", "ExportResult", "SCNet", "SCNetConfig", "ScnetDeployError",
           "detect_arch", "export", "info", "load_checkpoint", "__version__"]
