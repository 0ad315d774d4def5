"""scnet_deploy/model/network.py: the reference model reproduces the official implementation's outputs from the .pth
alone."""

import numpy as np
import pytest
import torch

from conftest import FIXTURES, need, official_cases
from scnet_deploy.model.checkpoint import load_checkpoint
from scnet_deploy.model.network import SCNet, SCNetConfig


CASES = official_cases()


@pytest.mark.skipif(not CASES, reason=f"{FIXTURES} is absent (the project's shared fixtures)")
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_official_fixture_reproduced_within_1e5(case):
    ckpt = load_checkpoint(need(FIXTURES / f"{case['name']}.pth"))
    spec = ckpt.spec
    assert (spec.num_feat, spec.num_block, spec.scale) == (case["nf"], case["nb"], case["scale"])
    assert spec.upsampler == ("pixelshuffle" if case["ps"] else "mlp")
    assert spec.params == case["params"]
    assert ckpt.param_key == case["state_dict_key"]
    x = torch.from_numpy(np.load(FIXTURES / f"{case['name']}.input.npy"))
    expected = np.load(FIXTURES / f"{case['name']}.output.npy")
    with torch.no_grad():
        out = ckpt.model(x).numpy()
    assert out.shape == tuple(case["output_shape"])
    assert np.abs(out - expected).max() <= 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("upsampler", ["mlp", "pixelshuffle"])
def test_output_shape_and_official_parameter_names(scale, upsampler):
    model = SCNet(SCNetConfig(16, 2, scale, upsampler)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 5, 7)).shape == (1, 3, 5 * scale, 7 * scale)
    names = set(model.state_dict())
    assert {"conv_first.weight", "body.1.conv2.bias", "conv_hr.weight", "conv_last.bias"} <= names
    first_up = "upconv1.up_layer.1.weight" if upsampler == "mlp" else "upconv1.up_layer.0.weight"
    assert first_up in names
    stages = {2: 1, 3: 1, 4: 2, 8: 3}[scale]
    assert f"upconv{stages}.up_layer.4.weight" in names or f"upconv{stages}.up_layer.3.weight" in names
    assert not any(k.startswith(f"upconv{stages + 1}.") for k in names)
