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


def cli(*args, **kw):
    """The CLI in a fresh interpreter, as a user runs it."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "scnet_deploy", *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kw)


def one_line_error(proc) -> str:
    """The one ``error:`` line of a run that failed as a user's mistake (exit 2, no traceback, nothing else)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
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
