"""What native libraries write to the process's stderr (file descriptor 2, below Python's ``sys.stderr``): captured,
both to keep it off the user's terminal and to read what they say (ncnn's Vulkan devices, QNN's option checks)."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def captured_stderr(fds: tuple[int, ...] = (2,)):
    """Everything written to file descriptor 2 (and the others of ``fds``: 1, where a library prints its notices
    to stdout) inside the block; ``text[0]`` holds it once the block ends."""
    import sys

    with tempfile.TemporaryFile(mode="w+", errors="replace") as sink:
        sys.stdout.flush()
        saved = {fd: os.dup(fd) for fd in fds}
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        text = [""]
        try:
            yield text
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            text[0] = sink.read()
