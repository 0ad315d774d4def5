"""User-facing errors: printed as one line by the CLI, exit code 2, no traceback.

Anything that is not a ScnetDeployError is a bug and keeps its traceback.
"""


class ScnetDeployError(Exception):
    """A mistake the user can fix; the message says what was asked, what is possible and the fix."""


class CheckpointError(ScnetDeployError):
    """The checkpoint file cannot be read, or is not an SCNet checkpoint."""


class ArchitectureError(ScnetDeployError):
    """The state dict does not describe a valid SCNet, or the scale cannot be told."""


class ExportError(ScnetDeployError):
    """An export was asked for with options that cannot work."""


class VerificationError(ScnetDeployError):
    """An exported model does not reproduce PyTorch's output."""


class ImageError(ScnetDeployError):
    """An image file cannot be read."""


# The export stack: installed by the `export` extra, never needed to run an artifact (a device installs without it).
EXPORT_STACK = ("torch", "onnx", "onnxscript", "onnxsim", "onnxslim", "onnxconverter_common", "safetensors",
                "skimage", "nncf")
# scnet-deploy is installed from its checkout (or the wheel built there), never from the package index (README,
# Install): its extras are named that way.
EXPORT_EXTRA = "pip install -e '.[export]' in your scnet-deploy checkout (README, Install)"


class NeedsExportStack(ScnetDeployError):
    """A verb (or part of one) that needs the export stack was asked for where it is not installed."""


def needs_export_stack(what: str, module: str = "torch") -> NeedsExportStack:
    return NeedsExportStack(f"{what} needs {module} (the export stack), which is not installed here: "
                            f"{EXPORT_EXTRA}. Artifacts run without it: bench, validate, upscale, doctor.")


def require_export_stack(what: str) -> None:
    """Raise ``NeedsExportStack`` (one line, with the fix) unless PyTorch can be imported here."""
    if not has_torch():
        raise needs_export_stack(what)


def has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
