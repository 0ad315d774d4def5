"""scnet_deploy/model/training.py: a few steps on tiny data, resumable, weights in the official layout."""

import json

import numpy as np
import torch
from PIL import Image

from scnet_deploy.model.checkpoint import load_checkpoint
from scnet_deploy.model.network import SCNet, SCNetConfig
from scnet_deploy.model.training import init_weights, train, TrainOptions


def test_train_resume_and_load(tmp_path):
    data = tmp_path / "data"
    (tmp_path / "eval" / "HR").mkdir(parents=True)
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "eval" / "HR" / "e.png")
    opts = TrainOptions(data=[str(data)], out=str(tmp_path / "run"), eval=str(tmp_path / "eval"), num_feat=8,
                        num_block=1, steps=4, batch=2, patch=8, save_every=2, eval_every=2)
    train(opts)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["step"] == 4
    longer = TrainOptions(**{**opts.__dict__, "steps": 6})
    final = train(longer)
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=False)["step"] == 6
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6] and all(r["set5_psnr_y"] > 0 for r in log)
    ckpt = load_checkpoint(final)  # official parameter names, strict load
    assert (ckpt.spec.num_feat, ckpt.spec.num_block, ckpt.spec.scale) == (8, 1, 4)


def test_init_scales_residual_branches():
    model = SCNet(SCNetConfig(16, 2, 4))
    init_weights(model)
    conv1 = model.body[0].conv1.weight.std().item()
    assert model.body[0].conv2.weight.std().item() < 0.3 * conv1 and model.conv_last.bias.abs().max() == 0
