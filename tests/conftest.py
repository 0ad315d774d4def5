import json
from pathlib import Path

import pytest
import torch

from scnet_deploy.model.network import SCNet, SCNetConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "official"
DATASETS = SHARED / "datasets"


def official_cases() -> list[dict]:
    manifest = FIXTURES / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else []


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the project's shared test data; see README)")
    return path


def cli(*args, timeout: float = 600, **kw):
    """The CLI in a fresh interpreter, as a user runs it."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "scnet_deploy", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def one_line_error(proc) -> str:
    """The one ``error:`` line of a run that failed as a user's mistake (exit 2, no traceback, nothing else but the
    notice that an artifact runs unsigned: tests/test_signing.py)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("warning: artifact '")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-3000:]
    return lines[0]


def tiny_model(scale: int = 2, upsampler: str = "mlp", num_feat: int = 16, num_block: int = 2,
               seed: int = 0) -> SCNet:
    """A random-weight SCNet small enough for fast tests; every weight random so every layer matters."""
    torch.manual_seed(seed)
    model = SCNet(SCNetConfig(num_feat, num_block, scale, upsampler))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def smooth_hr_folder(root: Path, count: int, size: tuple[int, int]) -> Path:
    """A DIR/HR folder of ``count`` smooth images of ``size`` (width, height), so an SR model's output is
    meaningful; the same images for the same arguments."""
    import numpy as np
    from PIL import Image

    (root / "HR").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        base = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
        Image.fromarray(base).resize(size, Image.BICUBIC).save(root / "HR" / f"img{i}.png")
    return root


def save_basicsr(model: torch.nn.Module, path: Path, key: str = "params") -> Path:
    torch.save({key: model.state_dict()}, path)
    return path


@pytest.fixture
def tiny_ckpt(tmp_path) -> Path:
    return save_basicsr(tiny_model(scale=4), tmp_path / "tiny.pth")


HOSTILE_PYTHON = "/hostile/python"  # the device's "Python": every command naming it is answered by the plan


class HostileDevice:
    """A real OpenSSH server on a loopback port whose every command goes through tests/hostile_device.py: rules set
    by each test (``answer``) reply with crafted output; anything else runs for real (mktemp, tar, rm)."""

    def __init__(self, server, plan: Path, doctor: Path) -> None:
        self.server, self.plan, self.doctor = server, plan, doctor

    def answer(self, *rules) -> None:
        """Rules [regex on the command, action, argument] (hostile_device.py), first match wins; the device's
        scnet-deploy answers doctor as this version's."""
        doctor = [f"^{HOSTILE_PYTHON} -m scnet_deploy doctor --json$", "doctor", str(self.doctor)]
        self.plan.write_text(json.dumps([list(map(str, r)) for r in rules] + [doctor]))

    def args(self, tmp_path: Path) -> list[str]:
        run_dirs = tmp_path / "device runs"
        run_dirs.mkdir(exist_ok=True)
        return ["--on", self.server.url(), "--ssh-config", str(self.server.config), "--remote-python", HOSTILE_PYTHON,
                "--remote-dir", str(run_dirs)]

    def remote(self, tmp_path: Path):
        from scnet_deploy.options import RemoteOptions

        run_dirs = tmp_path / "device runs"
        run_dirs.mkdir(exist_ok=True)
        return RemoteOptions(HOSTILE_PYTHON, ssh_config=self.server.config, remote_dir=str(run_dirs))


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    """One hostile device for the whole test session."""
    import subprocess
    import sys

    from devices import start_sshd

    d = tmp_path_factory.mktemp("hostile")
    doctor = d / "doctor.json"
    doctor.write_text(subprocess.run([sys.executable, "-m", "scnet_deploy", "doctor", "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    plan = d / "plan.json"
    servers = start_sshd(d / "sshd", force_command=f"{sys.executable} {Path(__file__).parent / 'hostile_device.py'} "
                                                   f"{plan}")
    device = HostileDevice(next(servers), plan, doctor)
    try:
        yield device
    finally:
        servers.close()


# --- models, artifacts and images shared by the test modules (one per worker: session scope; never modified) ------

@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """A tiny x4 SCNet (16 features, 2 blocks, random weights) in BasicSR format."""
    return save_basicsr(tiny_model(4, "mlp"), tmp_path_factory.mktemp("ckpt") / "tiny.pth")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny x2 SCNet and its ONNX Runtime artifact."""
    from scnet_deploy.export import ExportOptions, export

    d = tmp_path_factory.mktemp("tiny")
    ckpt = save_basicsr(tiny_model(2, "mlp", num_block=2), d / "tiny_x2.pth")
    artifact = export(ckpt, ExportOptions(output=d / "onnx")).directory
    return ckpt, artifact


@pytest.fixture(scope="session")
def tiny_ckpt_module(tmp_path_factory):
    return save_basicsr(tiny_model(2, "mlp"), tmp_path_factory.mktemp("ck") / "m_x2.pth")


@pytest.fixture(scope="session")
def fp32_onnx(tmp_path_factory):
    """The tiny x4 SCNet's verified ONNX graph (default form)."""
    from scnet_deploy.exporters.onnx_graph import OnnxOptions, build_onnx

    path = tmp_path_factory.mktemp("o") / "fp32.onnx"
    build_onnx(tiny_model(4, "mlp", num_feat=16, num_block=2), OnnxOptions(), path)
    return path


def smooth_images(folder: Path, low: int, high: int, seed: int, resample) -> Path:
    """Four smooth 96x72 images with values in [low, high] (calibration data)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(4):
        small = rng.integers(low, high + 1, (12, 16, 3)).astype(np.uint8)
        Image.fromarray(small).resize((96, 72), resample).save(folder / f"c{i}.png")
    return folder


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    """Calibration images covering the full value range."""
    from PIL import Image

    return smooth_images(tmp_path_factory.mktemp("calib"), 0, 255, 0, Image.BICUBIC)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """A DIR/HR validation folder: three smooth 32x24 images."""
    return smooth_hr_folder(tmp_path_factory.mktemp("ds"), 3, (32, 24))


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """A reference x4 checkpoint, another one, and the reference's ONNX Runtime artifact."""
    from scnet_deploy.export import ExportOptions, export

    d = tmp_path_factory.mktemp("models")
    ref = save_basicsr(tiny_model(4, seed=1), d / "ref.pth")
    other = save_basicsr(tiny_model(4, seed=2), d / "other.pth")
    artifact = export(ref, ExportOptions(output=d / "onnx")).directory
    return ref, other, artifact


@pytest.fixture(scope="session")
def second_dataset(tmp_path_factory):
    """Another content type: black strokes on white, where a model that brightens or darkens shows at once."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("lineart")
    (root / "HR").mkdir()
    for i in range(2):
        img = np.full((24, 32, 3), 255, np.uint8)
        img[4 + 3 * i:8 + 3 * i, 2:30] = 0
        img[:, 10 + i:12 + i] = 0
        Image.fromarray(img).save(root / "HR" / f"strokes{i}.png")
    return root


@pytest.fixture(scope="session")
def valid_files(tmp_path_factory):
    """Valid checkpoint and image files, as bytes, for the loaders' fuzz tests to mutate."""
    import io

    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("valid")
    model = tiny_model(4, num_feat=8, num_block=1)
    torch.save({"params": model.state_dict()}, d / "m.pth")
    save_file(model.state_dict(), str(d / "m.safetensors"))
    img = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    buf = {}
    for fmt in ("PNG", "JPEG"):
        b = io.BytesIO()
        Image.fromarray(img).save(b, format=fmt)
        buf[fmt] = b.getvalue()
    return {"pth": (d / "m.pth").read_bytes(), "safetensors": (d / "m.safetensors").read_bytes(), **buf}


def mutate(data: bytes, draw) -> bytes:
    """A hypothesis-drawn corruption of ``data``: truncated, bytes flipped, random, or spliced."""
    from hypothesis import strategies as st

    kind = draw(st.sampled_from(["truncate", "flip", "random", "splice"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "random":
        return draw(st.binary(max_size=512))
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if kind == "splice":
        data += draw(st.binary(max_size=64))
    return bytes(data)


EXTREME_FRAMES = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                  "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}


@pytest.fixture(scope="session")
def narrow(tmp_path_factory):
    """Calibration photos whose pixels lie in 60-190 only: a range calibrated on them would clip white and black."""
    from PIL import Image

    return smooth_images(tmp_path_factory.mktemp("narrow"), 60, 190, 1, Image.BILINEAR)


def frame(rgb, h=12, w=10):
    """A flat 1x3xHxW frame of colour ``rgb``."""
    import numpy as np

    return np.broadcast_to(np.asarray(rgb, np.float32)[None, :, None, None], (1, 3, h, w)).copy()


def assert_extremes_not_clipped(fp32_infer, int8_infer, tol=0.02):
    """A flat frame's output is the frame itself through the float skip: INT8 must not darken white or lift black."""
    import numpy as np

    for name, rgb in EXTREME_FRAMES.items():
        a, b = fp32_infer(frame(rgb)), int8_infer(frame(rgb))
        gap = np.abs(a.mean(axis=(0, 2, 3)) - b.mean(axis=(0, 2, 3))).max()
        assert gap < tol, f"{name} frame: INT8 output differs from FP32 by {gap:.3f} per channel"


def folder_with_a_corrupt_second_image(folder: Path) -> list[str]:
    """Six images in ``folder``, the second of them corrupt; their names."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"{i}.png" for i in range(6)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (36, 30, 3), dtype=np.uint8)).save(folder / name)
    (folder / names[1]).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return names
