"""exporters/registry.py and exporters/runner.py: the backend registry and its one-line missing-dependency errors,
the Runner contract (verification rules, size ranges), and that import and --help need only the core."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_model
from scnet_deploy.errors import VerificationError
from scnet_deploy.exporters import registry
from scnet_deploy.exporters.runner import InputOutOfRange, Runner, SizeRange, verify_runner
from scnet_deploy.exporters.torch_runner import TorchRunner


class _Constant(Runner):
    backend = "fake"

    def __init__(self, value, **kw):
        super().__init__(**kw)
        self.value = value

    def _infer(self, lr):
        return np.full((lr.shape[0], 3, lr.shape[2] * 4, lr.shape[3] * 4), self.value, np.float32)


def test_registry_names_and_duplicates():
    assert registry.format_names() == ["coreml", "ncnn", "onnx", "openvino", "qnn", "tensorrt"]
    assert {b.name for b in registry.backends()} == {"onnxruntime", "openvino", "tensorrt", "coreml", "ncnn", "qnn"}
    with pytest.raises(ValueError, match="twice"):
        registry.register(registry.get_backend("openvino"))
    with pytest.raises(registry.ScnetDeployError, match="choose one of"):
        registry.backend_for_format("tflite")


def test_missing_dependency_says_the_exact_pip_install():
    fake = registry.Backend("fake", "fake", "nowhere", "no_such_module_xyz", "no-such-dist", "pip install no-such-dist",
                            ("fp32",), "test")
    assert not fake.available() and fake.version() is None
    with pytest.raises(registry.BackendUnavailable, match="Fix: pip install no-such-dist"):
        fake.runtime()


def test_import_and_help_need_only_the_core():
    code = ("import sys, scnet_deploy, scnet_deploy.cli, scnet_deploy.exporters.registry; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(scnet_deploy.cli.app, ['export', '--help']); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('openvino', 'coremltools', 'tensorrt', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_verification_rules_per_precision():
    model = tiny_model(4)
    with pytest.raises(VerificationError, match="max abs diff"):
        verify_runner(_Constant(0.0), model, [(1, 8, 8)], "fp32")
    with pytest.raises(VerificationError, match="PSNR vs FP32"):
        verify_runner(_Constant(float("nan"), precision="bf16"), model, [(1, 8, 8)], "bf16")
    report = verify_runner(TorchRunner(model), model, [(1, 8, 8), (2, 5, 7)], "fp32")
    assert report["passed"] and report["max_abs_diff"] == 0.0
    # INT8: an exact engine still fails when its hold-out drift is over budget; passes with the budget met
    x = [np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)]
    record = {"budget_db": 0.1, "drift_db": -0.3, "worst_image": {"name": "a", "drift_db": -0.5}}
    with pytest.raises(VerificationError, match="the accuracy gate on the hold-out: at most 0.1 dB PSNR-Y drift"):
        verify_runner(TorchRunner(model), model, [], "int8", inputs=x, int8={**record, "within_budget": False})
    ok = verify_runner(TorchRunner(model), model, [], "int8", inputs=x, int8={**record, "within_budget": True})
    assert ok["passed"] and ok["holdout_mean_drift_db"] == -0.3


def test_size_range_is_enforced_with_a_clear_message():
    runner = _Constant(0.5, size_range=SizeRange((16, 16), (32, 32), (64, 64)), name="engine")
    assert runner.infer(np.zeros((1, 3, 16, 64), np.float32)).shape == (1, 3, 64, 256)
    with pytest.raises(InputOutOfRange, match="outside the range this engine was built for"):
        runner.infer(np.zeros((1, 3, 65, 20), np.float32))
    assert SizeRange.from_dict(runner.size_range.to_dict()) == runner.size_range
