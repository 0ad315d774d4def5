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
