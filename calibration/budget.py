"""Accuracy-aware mixed precision: quantize, measure the PSNR drift on held-out images, and keep the most sensitive
convolutions in float (ranked by the error each adds) until the drift is within budget or nothing is left to keep.
"""

from pathlib import Path
from typing import Callable

import numpy as np

from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.images import to_u8_hwc
from scnet_deploy.metrics import psnr_ssim_y


class BudgetNotMet(ScnetDeployError):
    """Even with every layer kept in float the drift is over budget."""


def psnr_y_of(infer: Callable[[np.ndarray], np.ndarray], pairs, scale: int) -> float:
    scores = []
    for lr, hr in pairs:
        out = infer(lr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0]
        scores.append(psnr_ssim_y(to_u8_hwc(out), hr, crop=scale)[0])
    return float(np.mean(scores))


def onnx_infer(path: Path):
    from scnet_deploy.exporters.onnx_export import ort_session

    session = ort_session(path)
    return lambda x: session.run(["sr"], {"lr": x})[0]


def quantize_within_budget(quantize: Callable[[tuple[str, ...]], Path], measure: Callable[[Path], float],
                           rank: Callable[[Path], list[str]], budget_db: float | None) -> dict:
    """``quantize(exclude) -> model``, ``measure(model) -> drift dB`` (negative = worse), ``rank(model)`` -> convs,
    most sensitive first. Returns the chosen model, its drift and which layers stayed float."""
    if budget_db is not None and budget_db < 0:
        raise ScnetDeployError(f"--budget must be >= 0 dB (a loss you accept), got {budget_db}.")
    exclude: tuple[str, ...] = ()
    model = quantize(exclude)
    drift = measure(model)
    history = [{"float_layers": 0, "drift_db": drift}]
    if budget_db is not None and drift < -budget_db:
        ranking = rank(model)
        k = 1
        while drift < -budget_db:
            if k > len(ranking):
                raise BudgetNotMet(f"INT8 drift {drift:.3f} dB is over the {budget_db} dB budget even with all "
                                   f"{len(ranking)} convolutions kept in float; raise --budget or export in float.")
            exclude = tuple(ranking[:k])
            model = quantize(exclude)
            drift = measure(model)
            history.append({"float_layers": k, "drift_db": drift})
            k = len(ranking) + 1 if k == len(ranking) else min(2 * k, len(ranking))
    return {"model": model, "drift_db": drift, "float_layers": list(exclude), "budget_db": budget_db,
            "history": history}
