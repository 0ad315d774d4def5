"""scnet_deploy/locks.py: two exports to one output give one artifact; two upscales into one folder never tear a file."""

import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import save_basicsr, tiny_model


def test_two_exports_to_one_output_give_one_artifact_and_a_message(tmp_path):
    ckpt = save_basicsr(tiny_model(2, "mlp", num_block=4), tmp_path / "m_x2.pth")
    procs = [subprocess.Popen([sys.executable, "-m", "scnet_deploy", "export", str(ckpt), "-o", str(tmp_path / "a")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outs)
    assert codes == [0, 2], outs
    message = next(err for code, err in outs if code == 2)
    assert "another export" in message and "is writing" in message and len(message.strip().splitlines()) == 1
    from scnet_deploy.runtime import open_model

    with open_model(tmp_path / "a") as runner:  # complete: every file matches its manifest hash
        assert runner.infer(np.zeros((1, 3, 8, 8), np.float32)).shape == (1, 3, 16, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "m_x2.pth"]  # no temporaries, no lock left


def test_two_upscales_into_one_folder_never_tear_a_file(tiny_ckpt_module, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(src / f"{i:02d}.png")
    args = [sys.executable, "-m", "scnet_deploy", "upscale", str(tiny_ckpt_module), str(src), "-o", str(tmp_path / "o")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], [p.stderr.read()[-1000:] for p in procs]
    outputs = sorted((tmp_path / "o").iterdir())
    assert [p.name for p in outputs] == [f"{i:02d}_x2.png" for i in range(12)]  # no temporaries left
    for p in outputs:
        with Image.open(p) as im:
            im.load()  # a torn file fails to decode
            assert im.size == (128, 128)
