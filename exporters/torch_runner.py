"""PyTorch as a runner: the FP32 reference of exports and validation, and the eager baselines of ``bench``. Needs the
``export`` extra (torch); every other runner does not."""

import hashlib

import numpy as np
import torch

from scnet_deploy.exporters.runner import Runner
from scnet_deploy.options import SizeRange


class TorchRunner(Runner):
    """A PyTorch module as a runner (the FP32 reference, or any form of the model)."""
    profile_note = "a PyTorch baseline: not profiled by stage"

    backend = "pytorch"

    def __init__(self, module: torch.nn.Module, name: str = "pytorch", threads: int | None = None,
                 arch: dict | None = None) -> None:
        super().__init__("fp32", SizeRange(), name, arch)
        self.module = module.eval()
        if threads:
            torch.set_num_threads(threads)

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(torch.from_numpy(lr)).numpy()


class ReferenceOutputs:
    """The PyTorch FP32 reference as ``verify_runner`` calls it (tensor in, tensor out), each output computed once
    per distinct input: a build session verifies every engine and candidate form on the same inputs, and the
    reference in the official form is the slowest model in the session."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module.eval()
        self._outputs: dict = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), str(x.dtype), hashlib.sha256(x.numpy().tobytes()).hexdigest())
        if key not in self._outputs:
            with torch.no_grad():
                self._outputs[key] = self.module(x)
        return self._outputs[key]
