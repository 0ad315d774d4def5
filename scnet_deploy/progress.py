"""What every verb reports while it works: one event type, one callback shape, ``progress(event)``.

``export``, ``bench``, ``validate``, ``upscale`` and ``pipeline`` each take ``progress=None`` or a callable that
receives ``Progress`` events; the CLI draws them all with one display (``cli.display.progress_display``).
"""

from dataclasses import dataclass, replace
from typing import Callable

STEP, BUILT, SKIPPED, FAILED = "step", "built", "skipped", "failed"


@dataclass(frozen=True)
class Progress:
    """``message``: what is being done now, or (``kind`` other than ``step``) an outcome worth a line of its own;
    ``done``/``total``: items finished so far where the work is counted (images, files, runs)."""

    message: str
    kind: str = STEP
    done: int | None = None
    total: int | None = None

    def prefixed(self, prefix: str) -> "Progress":
        return replace(self, message=f"{prefix}: {self.message}")


ProgressCallback = Callable[[Progress], None]


def reporter(progress: ProgressCallback | None) -> ProgressCallback:
    """``progress`` itself, or a callback that drops events when the caller asked for none."""
    return progress or (lambda event: None)
