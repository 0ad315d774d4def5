"""Test devices for ``--on``: a real OpenSSH server on a loopback port (keys and host key made per run, stopped
afterwards) and a torch-free environment as the device's Python (this checkout with ``[openvino,ncnn,video,qnn]``, no
export extra), built once per checkout and cached under ~/.cache/scnet-deploy-tests."""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_venv() -> Path:
    """A virtual environment with scnet-deploy installed from this checkout without its export extra (so without
    PyTorch): ``SCNET_DEPLOY_DEVICE_VENV`` names one, else it is built once and reused while pyproject.toml is
    unchanged."""
    if os.environ.get("SCNET_DEPLOY_DEVICE_VENV"):
        return Path(os.environ["SCNET_DEPLOY_DEVICE_VENV"])
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + str(REPO).encode()).hexdigest()[:12]
    venv = Path.home() / ".cache" / "scnet-deploy-tests" / f"device-{key}"
    ready = venv / ".ready"
    if not ready.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", f"{REPO}[openvino,ncnn,video,qnn]"],
                              capture_output=True, text=True, timeout=1200)
        if proc.returncode:
            pytest.fail(f"could not build the torch-free device environment: {proc.stderr[-2000:]}")
        ready.write_text("ok")
    return venv


@dataclass
class SshServer:
    config: Path  # ssh -F file: Host "device" -> this server, with its key and known_hosts
    port: int
    directory: Path

    def url(self, host: str = "device") -> str:
        return f"ssh://{host}"


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(directory: Path, chroot: str | None = None, force_command: str | None = None):
    """Yield an ``SshServer`` on a free loopback port (its sessions inside ``chroot`` where given: another
    architecture's userland, run through binfmt_misc; every command through ``force_command`` where given: a
    hostile device, tests/hostile_device.py); stopped afterwards."""
    if not Path(SSHD).exists() or not shutil.which("ssh"):
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    _keygen(directory / "host_key")
    _keygen(directory / "client_key")
    shutil.copy(directory / "client_key.pub", directory / "authorized_keys")
    port = free_port()
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    (directory / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {directory}/host_key
PidFile {directory}/sshd.pid
AuthorizedKeysFile {directory}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
PermitRootLogin yes
""" + (f"ChrootDirectory {chroot}\n" if chroot else "") + (f"ForceCommand {force_command}\n" if force_command else ""))
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {(directory / 'host_key.pub').read_text()}")
    (directory / "ssh_config").write_text(f"""Host device
  HostName 127.0.0.1
  Port {port}
  User {user}
  IdentityFile {directory}/client_key
  IdentitiesOnly yes
  UserKnownHostsFile {directory}/known_hosts
  StrictHostKeyChecking yes
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    log = open(directory / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(directory / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start: {(directory / 'sshd.log').read_text()[-500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    try:
        yield SshServer(directory / "ssh_config", port, directory)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
