"""The accuracy gate: how far an engine may move from the FP32 reference, in one place.

One type (``AccuracyGate``: the drift budget, ``--budget``; the visible share and level, ``--max-visible`` and
``--visible-levels``), one check of what a user asked (``check``, before any work, by every verb that judges), one
comparison (``admits``), one description (``describe``, from which every help and report text is made). One
verdict: an INT8 export's budget loop on its hold-out (``calibration/budget.py``), ``validate --budget`` and the
pipeline's recommendation judge each content type (``judge``) and the worst decides.

``judge`` measures what users see (benchmarks/results/visible_change.md, README's "The accuracy gate"): a content
type passes when no image of it has more than ``VISIBLE_SHARE`` of its pixels ``VISIBLE_LEVELS`` or more 8-bit levels
away from the FP32 output (any channel; the worst image decides: a visible artefact in one image is visible), and
its mean PSNR-Y drift is within the budget over the images whose FP32 output is not already near-lossless
(``NEAR_LOSSLESS_DB`` against ground truth: there a dB drift is a ratio of errors too small to see). Where the
images are consecutive frames, the worst transition between two of them is held to the same share: pixels whose
frame-to-frame change differs from FP32's by ``VISIBLE_LEVELS`` or more (``flicker``: shimmer on static content).
"""

import math
from dataclasses import dataclass

from .errors import ScnetDeployError

DEFAULT_DRIFT_DB = 0.1  # dB of PSNR-Y an engine may lose against FP32 PyTorch unless told otherwise
# A pixel moved this many 8-bit levels (of 255) from the FP32 output, in any channel, is a visible change on an edge
# or a flat area; bf16 engines never move more than 0.03% of pixels this far, INT8 ones 1-13% (visible_change.md).
VISIBLE_LEVELS = 4
VISIBLE_SHARE = 0.001  # at most this share of an image's pixels may change visibly (0.1%)
NEAR_LOSSLESS_DB = 40.0  # an FP32 output this close to ground truth (PSNR-Y) leaves no dB drift worth gating


@dataclass(frozen=True)
class AccuracyGate:
    drift_db: float | None = DEFAULT_DRIFT_DB  # None: no gate (an explicit opt-out, recorded)
    max_visible: float = VISIBLE_SHARE  # the largest share of an image's pixels that may change visibly
    visible_levels: int = VISIBLE_LEVELS  # a pixel this many 8-bit levels off FP32 has changed visibly

    @property
    def on(self) -> bool:
        return self.drift_db is not None

    def check(self) -> "AccuracyGate":
        """What a user asked, before any work: a finite loss >= 0 dB (or None: no gate), a share in [0, 100] %, a
        level in 1..255; else one line with the fix."""
        if self.drift_db is not None and not (isinstance(self.drift_db, (int, float)) and math.isfinite(self.drift_db)
                                              and self.drift_db >= 0):
            raise ScnetDeployError(f"--budget must be a finite loss >= 0 dB, got {self.drift_db}; write e.g. --budget "
                                   f"{DEFAULT_DRIFT_DB} (or --no-budget, where a verb gates by default, for no gate: "
                                   "recorded).")
        if not (math.isfinite(self.max_visible) and 0 <= self.max_visible <= 1):
            raise ScnetDeployError(f"--max-visible must be a share of pixels from 0 to 100 %, got "
                                   f"{100 * self.max_visible:g}; write e.g. --max-visible {100 * VISIBLE_SHARE:g}.")
        if not (isinstance(self.visible_levels, int) and 1 <= self.visible_levels <= 255):
            raise ScnetDeployError(f"--visible-levels must be 1 to 255 8-bit levels, got {self.visible_levels}; "
                                   f"write e.g. --visible-levels {VISIBLE_LEVELS}.")
        return self

    @classmethod
    def from_record(cls, drift_db: float | None, record: dict | None = None) -> "AccuracyGate":
        """The gate a result recorded (``record``), at ``drift_db``; an older record without one: the defaults."""
        record = record or {}
        return cls(drift_db, record.get("visible_share", VISIBLE_SHARE), record.get("visible_levels", VISIBLE_LEVELS))

    def describe(self) -> str:
        """The gate in words, as help texts, reasons and reports give it."""
        if self.drift_db is None:
            return "off: no accuracy gate, no drift budget (--no-budget)"
        return (f"at most {self.drift_db:g} dB PSNR-Y drift and {100 * self.max_visible:g}% of an image's pixels "
                f"{self.visible_levels}+ levels off FP32, per content type, the worst deciding")

    def admits(self, drift_db: float) -> bool:
        """Whether an engine whose drift (negative: worse than FP32) is ``drift_db`` passes."""
        return self.drift_db is None or drift_db >= -self.drift_db

    def judge(self, content: str, images: list[dict]) -> "ContentVerdict":
        """One content type's verdict from its images' records: ``name``, ``drift_db`` (PSNR-Y vs FP32's),
        ``ref_psnr_y`` (the FP32 output's PSNR-Y vs ground truth), ``visible_share`` and, for consecutive frames,
        ``flicker_share`` (every frame after the first)."""
        gated = [r["drift_db"] for r in images if r["ref_psnr_y"] < NEAR_LOSSLESS_DB]
        drift = float(sum(gated) / len(gated)) if gated else None
        worst = max(images, key=lambda r: r["visible_share"])
        reasons = []
        if worst["visible_share"] > self.max_visible:
            reasons.append(f"{100 * worst['visible_share']:.2f}% of the pixels of {worst['name']} are "
                           f"{self.visible_levels}+ levels off FP32 (gate: {100 * self.max_visible:g}%)")
        moves = [r for r in images if "flicker_share" in r]
        shimmer = max(moves, key=lambda r: r["flicker_share"]) if moves else None
        if shimmer is not None and shimmer["flicker_share"] > self.max_visible:
            reasons.append(f"{100 * shimmer['flicker_share']:.2f}% of the pixels of {shimmer['name']} change from "
                           f"the frame before {self.visible_levels}+ levels differently from FP32 (flicker; gate: "
                           f"{100 * self.max_visible:g}%)")
        if drift is not None and not self.admits(drift):
            reasons.append(f"PSNR-Y drift {drift:+.3f} dB (gate: -{self.drift_db:g} dB)")
        return ContentVerdict(content, drift, len(gated), worst["visible_share"], worst["name"], not reasons,
                              f"{content}: {' and '.join(reasons)}" if reasons else "",
                              None if shimmer is None else shimmer["flicker_share"])

    def record(self) -> dict | None:
        """What the gate is, as results record it (None: no gate, ``--no-budget``)."""
        if self.drift_db is None:
            return None
        return {"drift_db": self.drift_db, "visible_levels": self.visible_levels, "visible_share": self.max_visible,
                "near_lossless_db": NEAR_LOSSLESS_DB, "aggregation": "worst content type (visible share: worst "
                "image; drift: mean over the images not near-lossless)"}


@dataclass(frozen=True)
class ContentVerdict:
    """The gate's verdict on one content type (``AccuracyGate.judge``)."""

    content: str
    drift_db: float | None  # mean PSNR-Y drift over the images that are not near-lossless; None: all of them are
    gated_images: int
    visible_share: float  # the worst image's share of pixels the gate's visible_levels+ levels off FP32
    worst_visible_image: str
    passed: bool
    reason: str  # why it failed, in one sentence ("" when it passed)
    flicker_share: float | None = None  # consecutive frames: the worst transition's flicker share; None: not frames

    def to_dict(self) -> dict:
        found = {"content": self.content, "drift_db": self.drift_db, "gated_images": self.gated_images,
                 "visible_share": self.visible_share, "worst_visible_image": self.worst_visible_image,
                 "passed": self.passed, "reason": self.reason}
        return found if self.flicker_share is None else {**found, "flicker_share": self.flicker_share}


def visible_share(out_u8, ref_u8, crop: int, levels: int = VISIBLE_LEVELS) -> float:
    """The share of pixels (``crop`` border pixels left out, as PSNR does) whose 8-bit value is ``levels`` or more
    from ``ref_u8``'s in any channel."""
    import numpy as np

    diff = np.abs(np.asarray(out_u8, np.int16) - np.asarray(ref_u8, np.int16))
    if crop:
        diff = diff[crop:-crop, crop:-crop]
    moved = diff.max(axis=2) if diff.ndim == 3 else diff
    return float((moved >= levels).mean())


def flicker(out_prev, out_now, ref_prev, ref_now, crop: int, levels: int = VISIBLE_LEVELS) -> tuple[float, float]:
    """How much an engine's frame-to-frame change differs from the reference's, between two consecutive 8-bit
    frames: (the mean difference in levels, the share of pixels whose change differs by ``levels`` or more in any
    channel). A static scene the reference renders still and the engine makes shimmer scores high on both."""
    import numpy as np

    def change(a, b):
        return np.asarray(b, np.int16) - np.asarray(a, np.int16)

    diff = np.abs(change(out_prev, out_now) - change(ref_prev, ref_now))
    if crop:
        diff = diff[crop:-crop, crop:-crop]
    moved = diff.max(axis=2) if diff.ndim == 3 else diff
    return float(diff.mean()), float((moved >= levels).mean())
