"""Core ML, the runtime side: an ML Program (``model.mlpackage``); prediction needs macOS, and the runner says so
plainly elsewhere."""

import platform
from pathlib import Path

import numpy as np

from scnet_deploy.exporters.registry import BackendUnavailable
from scnet_deploy.exporters.runner import Runner, SizeRange
from scnet_deploy.manifest import INPUT_NAME, OUTPUT_NAME
from scnet_deploy.options import RuntimeOptions

PACKAGE = "model.mlpackage"


def can_predict() -> bool:
    return platform.system() == "Darwin"


class CoreMLRunner(Runner):
    profile_note = "Core ML gives no per-layer timing outside Xcode's Instruments"
    backend = "coreml"

    def __init__(self, package: Path, precision: str, size_range: SizeRange) -> None:
        if not can_predict():
            raise BackendUnavailable(f"Core ML prediction needs macOS; this is {platform.system()}. The artifact "
                                     f"'{package}' is built and checked: copy it to a Mac or an Apple device to run it.")
        import coremltools as ct

        self.model = ct.models.MLModel(str(package))
        super().__init__(precision, size_range, name="coreml")

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        return np.concatenate([self.model.predict({INPUT_NAME: x[None]})[OUTPUT_NAME] for x in lr]).astype(np.float32)


def check(precision: str) -> str | None:
    return None  # converts anywhere coremltools installs; predictions (and so verification) need macOS


def load(directory: Path, manifest: dict, runtime: RuntimeOptions = RuntimeOptions()) -> Runner:
    return CoreMLRunner(Path(directory) / PACKAGE, manifest.get("precision", "fp32"),
                        SizeRange.from_dict(manifest.get("size_range"))).declare(manifest)

