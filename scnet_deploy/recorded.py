"""Outputs computed elsewhere, scored here: ``validate`` takes ``RecordedOutputs`` beside checkpoints and artifacts.

A device's run of an artifact (``devices/``) comes back as one: the artifact it ran, the device it ran on, and an
output per input sent, keyed by the input's bytes. Its runner replays them, so validate scores a device's engine
exactly as it scores one here, and each row says which device and artifact it is.
"""

from pathlib import Path

import numpy as np

from scnet_deploy.exporters.runner import Runner, array_key

from .errors import ScnetDeployError
from .manifest import read_manifest


class RecordedOutputs:
    """An artifact's outputs computed on ``device``, opened by ``validate`` like a model: its runner replays them for
    exactly the inputs that were sent (keyed by their bytes); ``ran`` is the device's run record (name, backend)."""

    def __init__(self, artifact: Path, device: str, outputs: dict[str, np.ndarray], ran: dict) -> None:
        self.artifact, self.device, self.outputs, self.ran = Path(artifact), device, outputs, ran

    def __fspath__(self) -> str:  # its manifest is the artifact's (reference lookup, kind)
        return str(self.artifact)

    def __str__(self) -> str:
        return f"{self.artifact} @ {self.device}"

    def open_runner(self) -> "ReplayRunner":
        return ReplayRunner(self)


class ReplayRunner(Runner):
    """Recorded outputs as a runner: ``infer`` returns what the device computed for that exact input."""

    holds_outputs = True  # tiling.run_within asks for whole images: the device tiled where it had to

    def __init__(self, source: RecordedOutputs) -> None:
        manifest = read_manifest(source.artifact)
        engine = source.ran.get("name", "").split(": ", 1)[-1]
        super().__init__(manifest.get("precision", "fp32"), name=f"{source.artifact.name} @ {source.device}: {engine}")
        self.declare(manifest)
        self.backend = source.ran.get("backend", manifest.get("backend", "?"))
        self.source = source

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        outs = []
        for image in lr:
            key = array_key(image)
            if key not in self.source.outputs:
                raise ScnetDeployError(f"{self.name}: no output from {self.source.device} for an input of shape "
                                       f"{image.shape} (only the inputs sent there can be scored).")
            outs.append(self.source.outputs[key])
        return np.stack(outs)
