"""scnet-deploy: export, profile and validate SCNet super-resolution models on edge runtimes.

Public API here: ``load_checkpoint``, ``info``, ``export``; the other verbs are one function each in their module
(``bench.bench``, ``validate.validate``, ``upscale.upscale``, ``pipeline.pipeline``). Importing the package needs no
PyTorch (a device runs artifacts without it); the names that do (checkpoints, the model) are imported when first
used.
"""

import importlib
import sys
import types

from ._version import __version__  # noqa: E402 (one home for the version: _version.py)

from .errors import ScnetDeployError  # noqa: E402

# Imported when first used: a device imports the runtime side of a backend, whose parent package is this one, and
# must not load the export (build) code with it (tests/test_layout.py).
_LAZY = {"ExportOptions": "export", "ExportResult": "export", "export": "export", "info": "info",
         "ArchSpec": "model.arch", "detect_arch": "model.arch", "Checkpoint": "model.checkpoint",
         "load_checkpoint": "model.checkpoint", "SCNet": "model.network", "SCNetConfig": "model.network"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'scnet_deploy' has no attribute {name!r}")


class _VerbModule(types.ModuleType):
    """A verb's module that is also its verb: ``scnet_deploy.export`` is the module once it has been imported (Python
    binds a submodule to its package's attribute), and ``scnet_deploy.export(ckpt, options)`` must still export."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def callable_verb(module_name: str) -> None:
    """Make the module ``module_name`` (``scnet_deploy.export``, ``scnet_deploy.info``) callable as its verb."""
    sys.modules[module_name].__class__ = _VerbModule


__all__ = ["ArchSpec", "Checkpoint", "ExportOptions", "ExportResult", "SCNet", "SCNetConfig", "ScnetDeployError",
           "detect_arch", "export", "info", "load_checkpoint", "__version__"]
