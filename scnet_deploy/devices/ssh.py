"""The transport to a device: the system OpenSSH client, so ``~/.ssh/config``, keys, agents and jump hosts work as
they do for ``ssh``; host keys are checked as ssh checks them (``BatchMode``: never a prompt, never skipped). No
local shell is involved (argument lists), and every word of a remote command is quoted for the remote shell.

What comes back passes the door: a command's output is capped, a file is fetched by name (``cat``) into a new
local file with a cap, never unpacked; stderr is kept as its last 64 KB and shown without control characters.
Device URLs are strict (``parse_device``).
"""

import contextlib
import re
import shlex
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .. import door
from ..door import UntrustedInput, clean_text
from ..errors import ScnetDeployError
from ..options import RemoteOptions

RUN_DIR_TEMPLATE = "scnet-deploy." + "X" * 6  # mktemp's template: it replaces the trailing X's with random characters
RUN_DIR = re.compile(r"/[^\x00-\x1f\x7f]{0,4000}/scnet-deploy\.[A-Za-z0-9]{6}")  # what mktemp may answer
# What a command may print (doctor --json: a few KB), and how much of its stderr is kept for a message
MAX_REPLY_BYTES = 1 * 2**20
STDERR_KEEP = 64 * 2**10


@contextlib.contextmanager
def _killed_unless_done(proc: subprocess.Popen):
    """The ssh process is killed if the block ends by an exception (a refusal, Ctrl-C), and its pipe closed."""
    try:
        yield
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()


class _Tail:
    """The last ``STDERR_KEEP`` bytes of a stream, read in a thread until it ends (a device's stderr: kept for
    its message, never held whole)."""

    def __init__(self, stream) -> None:
        self._data = b""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read(65536):
                self._data = (self._data + chunk)[-STDERR_KEEP:]

    def value(self) -> bytes:
        self._thread.join(timeout=30)
        return self._data


class RemoteError(ScnetDeployError):
    """The device could not be reached, or could not do what was asked."""


class DeviceTimeout(RemoteError):
    """The device did not finish within the run's deadline (it hung, or dripped its answer)."""


# Every run on the devices can be cut short at once (Ctrl-C with several devices at work in threads)
CANCEL = threading.Event()
CLEANUP_S = 30  # removing a run directory: its own deadline, never cancelled


class _Watchdog:
    """Kills an ssh process at the deadline, or when every run is cancelled (``CANCEL``), unless it ends first."""

    def __init__(self, proc: subprocess.Popen, deadline: float, cancellable: bool) -> None:
        self.proc, self.deadline, self.cancellable, self.fired = proc, deadline, cancellable, None
        threading.Thread(target=self._watch, daemon=True, name="ssh-deadline").start()

    def _watch(self) -> None:
        while self.proc.poll() is None:
            if time.monotonic() >= self.deadline:
                self.fired = "deadline"
            elif self.cancellable and CANCEL.is_set():
                self.fired = "cancelled"
            if self.fired:
                with contextlib.suppress(OSError):
                    self.proc.kill()
                return
            time.sleep(0.05)


@dataclass(frozen=True)
class Device:
    url: str
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def label(self) -> str:
        return self.url.removeprefix("ssh://")


# What ssh names are made of: DNS names, IPv4, ~/.ssh/config aliases (letters, digits, '.', '-', '_'), IPv6 in [].
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def parse_device(url: str) -> Device:
    """``ssh://[user@]host[:port]``; anything else is refused in one line: user and host limited to the characters
    of DNS names, IP addresses and ssh config aliases (no spaces, quotes, ';', '$', control characters), a port in
    1-65535."""
    shown = clean_text(repr(url))
    form = "expected ssh://[user@]host[:port], or local for this machine"
    if door._CONTROLS.search(url) or any(c.isspace() for c in url):
        raise ScnetDeployError(f"--on {shown}: a device URL has no spaces or control characters; {form}.")
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ScnetDeployError(f"--on {shown}: {form}.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ScnetDeployError(f"--on {shown}: {form} (no path; the run directory is --remote-dir).")
    if parts.password is not None:
        raise ScnetDeployError(f"--on {shown}: no password in the URL; ssh uses your keys or agent.")
    netloc_host = parts.netloc.rpartition("@")[2]
    host = netloc_host[:netloc_host.index("]") + 1] if netloc_host.startswith("[") else netloc_host.partition(":")[0]
    if host.startswith("-") or not _HOST.fullmatch(host):
        raise ScnetDeployError(f"--on {shown}: the host may hold letters, digits, '.', '-' and '_' (an IPv6 address "
                               "in []), and cannot start with '-'; use an alias from ~/.ssh/config for anything else.")
    if parts.username is not None and not _USER.fullmatch(parts.username):
        raise ScnetDeployError(f"--on {shown}: the user may hold letters, digits, '.', '-' and '_'; set other user "
                               "names in ~/.ssh/config.")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port is not None and not 1 <= port <= 65535 or netloc_host.endswith(":"):
        raise ScnetDeployError(f"--on {shown}: the port is not a number in 1-65535.")
    return Device(url, host.strip("[]"), parts.username, port)


# What ssh itself says when it exits 255 (a remote command may exit 255 too: then it is that command's failure).
SSH_FAILURES = ("ssh:", "connection", "host key", "permission denied", "could not resolve", "broken pipe",
                "kex_exchange", "timed out", "closed by remote host")


def _from_ssh(stderr: str) -> bool:
    return any(s in stderr.lower() for s in SSH_FAILURES)


def last_line(data: bytes, default: str) -> str:
    lines = [clean_text(line).strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [default])[-1]


class Connection:
    """One device, reached with the system ssh client."""

    def __init__(self, device: Device, options: RemoteOptions, deadline_s: float | None = None) -> None:
        """``deadline_s``: how long the whole run on this device may take (every command of it together)."""
        self.device, self.options = device, options
        self.started = time.monotonic()
        self.deadline_s = deadline_s or options.device_timeout_s or DEFAULT_DEADLINE_S
        self._cleanup = False  # removing the run directory: its own short deadline

    def _deadline(self) -> float:
        if self._cleanup:
            return time.monotonic() + CLEANUP_S
        return self.started + self.deadline_s

    def argv(self, command: list[str]) -> list[str]:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.options.connect_timeout_s}",
                "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"]
        if self.options.ssh_config:
            argv += ["-F", str(self.options.ssh_config)]
        if self.device.port:
            argv += ["-p", str(self.device.port)]
        if self.device.user:
            argv += ["-l", self.device.user]
        return argv + ["--", self.device.host, shlex.join(command)]

    def scnet(self, *args: str) -> list[str]:
        """The device's scnet-deploy with ``args``."""
        if self.options.remote_python:
            return [self.options.remote_python, "-m", "scnet_deploy", *args]
        return ["scnet-deploy", *args]

    def check(self, returncode: int, stderr: bytes, doing: str, watchdog: "_Watchdog | None" = None) -> None:
        if watchdog is not None and watchdog.fired == "deadline":
            took = time.monotonic() - self.started
            raise DeviceTimeout(f"{self.device.label}: no answer within its deadline ({took:.0f} s of "
                                f"{self.deadline_s:.0f} s, while {doing}); it hangs or is too slow. If it needs "
                                "longer, pass --device-timeout SECONDS.")
        if watchdog is not None and watchdog.fired == "cancelled":
            raise RemoteError(f"{self.device.label}: stopped (interrupted while {doing}).")
        if returncode == 0:
            return
        label, line = self.device.label, last_line(stderr, f"exit status {returncode}")
        text = stderr.decode(errors="replace")
        if returncode == 255 and _from_ssh(text):
            raise RemoteError(f"ssh {label}: {line} (while {doing}); check that `ssh {label}` works (keys, the "
                              "host key in known_hosts, the network). Nothing was written here.")
        if "No space left on device" in text:
            raise RemoteError(f"{label} ran out of disk space while {doing} ({line}); free space there or pass "
                              "--remote-dir on a larger disk. Nothing was written here.")
        if returncode in (126, 127):
            what = self.options.remote_python or "scnet-deploy"
            raise RemoteError(f"{label}: cannot run {what} ({line}) while {doing}; install scnet-deploy there "
                              "(--provision does: a wheel of this checkout, with the device's Python) or name its "
                              "Python with --remote-python.")
        if returncode > 128 or "uncaught target signal" in text:
            raise RemoteError(f"{label}: the process on the device died while {doing} ({line}, exit {returncode}); "
                              "run the same verb there by hand to see why.")
        raise RemoteError(f"{label} ({doing}): {line.removeprefix('error:').strip()}")

    def _start(self, command: list[str], stdin=subprocess.DEVNULL,
               stdout=subprocess.PIPE) -> tuple[subprocess.Popen, "_Tail", "_Watchdog"]:
        # its own session: the terminal's Ctrl-C reaches this process alone, which ends the ssh processes itself
        # (a run's commands at once, the removal of its run directory only after it is done)
        proc = subprocess.Popen(self.argv(command), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                start_new_session=True)
        return proc, _Tail(proc.stderr), _Watchdog(proc, self._deadline(), cancellable=not self._cleanup)

    def _refuse(self, proc: subprocess.Popen, exc: UntrustedInput, doing: str) -> None:
        proc.kill()
        proc.wait()
        raise RemoteError(f"{self.device.label} ({doing}): {exc} Nothing it sent was kept.") from None

    def run(self, command: list[str], doing: str, max_bytes: int = MAX_REPLY_BYTES) -> str:
        """Run ``command`` on the device; its output (at most ``max_bytes``, else refused), as text."""
        proc, err, watchdog = self._start(command)
        with _killed_unless_done(proc):
            out = proc.stdout.read(max_bytes + 1)
            if len(out) > max_bytes:
                self._refuse(proc, UntrustedInput(f"more than {max_bytes} bytes of output; refused."), doing)
            returncode = proc.wait()
        self.check(returncode, err.value(), doing, watchdog)
        return out.decode(errors="replace")

    def put(self, run_dir: str, files: dict[str, Path], doing: str) -> None:
        """Copy local files or folders into ``run_dir`` under the given names (a tar stream over the connection;
        made here, unpacked there)."""
        proc, err, watchdog = self._start(["tar", "-x", "-f", "-", "-C", run_dir], stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL)
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                for name, path in files.items():
                    tar.add(str(path), arcname=name)
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the device stopped reading: its exit status and message say why
        finally:
            returncode = proc.wait()
        self.check(returncode, err.value(), doing, watchdog)

    def fetch(self, run_dir: str, name: str, into: Path, max_bytes: int, doing: str) -> Path:
        """Fetch the one file ``run_dir/name`` into the new local file ``into/name``: its bytes only (never an
        archive, never a link), at most ``max_bytes``. Returns the local path."""
        destination = Path(into) / name
        proc, err, watchdog = self._start(["cat", "--", f"{run_dir}/{name}"])
        with _killed_unless_done(proc):
            try:
                door.receive(proc.stdout, destination, max_bytes, name)
            except UntrustedInput as exc:
                self._refuse(proc, exc, doing)
            returncode = proc.wait()
        try:
            self.check(returncode, err.value(), doing, watchdog)
        except RemoteError:
            destination.unlink(missing_ok=True)
            raise
        return destination

    @contextlib.contextmanager
    def run_directory(self):
        """A fresh directory on the device, removed afterwards however the run ends: a second Ctrl-C does not cut
        the removal short (``interrupts.deferred``), and a run killed outright (SIGKILL, a lost connection) leaves a
        lease file that the next run to the device reads: it removes the directories whose lease has run out."""
        from ..interrupts import deferred

        # $1: --remote-dir, passed as an argument so the shell never parses it; empty: the device's $TMPDIR or /tmp;
        # "--": a --remote-dir that starts with '-' is a path to mktemp, not an option; $2: the lease, in seconds
        made = self.run(["sh", "-c", MAKE_RUN_DIR, "sh", self.options.remote_dir or "",
                         str(int(self.deadline_s) + LEASE_MARGIN_S)], "making a run directory").strip()
        if not RUN_DIR.fullmatch(made):
            raise RemoteError(f"{self.device.label}: mktemp gave {clean_text(repr(made))[:120]}, not a new directory "
                              "of ours (an absolute path ending in scnet-deploy. and six random characters).")
        try:
            yield made
        finally:
            self._cleanup = True
            with deferred():
                for _ in range(2):  # once more after a refused connection (a busy sshd); else its lease
                    try:
                        self.run(["sh", "-c", REMOVE_RUN_DIR, "sh", made], "removing the run directory")
                        break
                    except (RemoteError, OSError):
                        time.sleep(0.5)
            self._cleanup = False


# The run directory removed, again while something still writes into it (a copy cut short: the device's tar may
# still be unpacking what reached it), for up to 3 s
REMOVE_RUN_DIR = ('for i in 1 2 3 4 5 6 7 8 9 10; do rm -rf -- "$1" 2>/dev/null; [ -e "$1" ] || exit 0; sleep 0.3; '
                  'done; exit 1')

# How long a run may take on a device unless told (--device-timeout) or derived from what was asked (remote.py)
DEFAULT_DEADLINE_S = 600
LEASE_MARGIN_S = 120  # a run directory outlives its run's deadline by this much before another run removes it
# The run directory and its lease (the device's clock + $2 seconds); first, the directories of runs whose lease ran
# out (killed outright): removed. A directory without a lease (an older version's) is left alone.
MAKE_RUN_DIR = (
    'base="${1:-${TMPDIR:-/tmp}}"; now=$(date +%s); '
    'for d in "$base"/' + RUN_DIR_TEMPLATE.replace("X", "?") + '; do '
    '[ -f "$d/lease" ] && [ ! -L "$d" ] || continue; t=$(head -c 20 "$d/lease"); '
    'case "$t" in ""|*[!0-9]*) continue;; esac; [ "$t" -lt "$now" ] && rm -rf -- "$d"; done; '
    'd=$(mktemp -d -- "$base/' + RUN_DIR_TEMPLATE + '") && echo $((now + $2)) > "$d/lease" && echo "$d"')
