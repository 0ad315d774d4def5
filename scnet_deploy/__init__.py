"""scnet-deploy: export, profile and validate SCNet super-resolution models on edge runtimes.

Public API (one function per verb): ``load_checkpoint``, ``info``, ``export``.
"""

__version__ = "0.1.0"

from .arch import ArchSpec, detect_arch
from .checkpoint import Checkpoint, load_checkpoint
from .errors import ScnetDeployError
from .export import ExportOptions, ExportResult, export
from .info import info
from .model import SCNet, SCNetConfig

__all__ = ["ArchSpec", "Checkpoint", "ExportOptions", "ExportResult", "SCNet", "SCNetConfig", "ScnetDeployError",
           "detect_arch", "export", "info", "load_checkpoint", "__version__"]
