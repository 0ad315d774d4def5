"""One writer per output: an exclusive lock beside the output, taken without waiting.

Two exports to the same ``--output`` at the same time would clear each other's temporaries (each removes what a
killed run left behind); with the lock the second one stops at once with a message instead. The lock is an
``flock`` on a hidden file beside the output, released by the kernel if the process dies, and removed when the
holder is done (with the inode check that makes removing a lock file safe).
"""

import contextlib
import os
from pathlib import Path

from .errors import ScnetDeployError


class Busy(ScnetDeployError):
    """Another process is writing the same output."""


@contextlib.contextmanager
def exclusive(output: Path, what: str):
    """Hold the lock of ``output`` for the duration, or raise ``Busy`` naming the holder."""
    import fcntl

    output = Path(output)
    path = output.parent / f".{output.name}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only folder, a path into /proc or through a file
            raise ScnetDeployError(f"cannot write to '{output.parent}' ({exc.strerror}): {what} writes '{output.name}' "
                                   "there; choose a writable --output.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Busy(f"another {what} (pid {holder}) is writing '{output}' now; wait for it to finish or choose "
                       "another --output.") from None
        try:  # the file may have been removed by the previous holder after we opened it: lock the one at the path
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
