"""The accuracy gate: how much PSNR-Y drift from the FP32 reference an engine may lose, in one place.

One value (``DEFAULT_DRIFT_DB``, or the user's ``--budget``), one comparison (``admits``), one description. Two
aggregations read it today: an INT8 export's budget loop gates on the mean drift over its hold-out
(``calibration/budget.py``); ``validate --budget`` and the pipeline's recommendation on the worst content type.
"""

import math
from dataclasses import dataclass

from .errors import ScnetDeployError

DEFAULT_DRIFT_DB = 0.1  # dB of PSNR-Y an engine may lose against FP32 PyTorch unless told otherwise
MEAN, WORST = "mean over the hold-out", "worst content type"  # the aggregations that read the gate


@dataclass(frozen=True)
class AccuracyGate:
    drift_db: float | None = DEFAULT_DRIFT_DB  # None: no gate (an explicit opt-out, recorded)

    def check(self) -> "AccuracyGate":
        """A finite loss >= 0 dB, or None; else one line with the fix."""
        if self.drift_db is not None and not (self.drift_db >= 0 and math.isfinite(self.drift_db)):
            raise ScnetDeployError(f"--budget must be a finite loss >= 0 dB, got {self.drift_db}; or pass "
                                   "--no-budget to export INT8 without a drift gate (recorded in the manifest).")
        return self

    def admits(self, drift_db: float) -> bool:
        """Whether an engine whose drift (negative: worse than FP32) is ``drift_db`` passes."""
        return self.drift_db is None or drift_db >= -self.drift_db

    def describe(self, aggregation: str) -> str:
        if self.drift_db is None:
            return "no drift gate (--no-budget)"
        return f"PSNR-Y drift >= -{self.drift_db:g} dB ({aggregation})"
