"""INT8 for OpenVINO with NNCF: ``nncf.quantize`` on the IR, or ``nncf.quantize_with_accuracy_control`` with a
validation function that returns PSNR-Y on held-out images when a budget is given (NNCF then reverts the most
sensitive layers to float until the drop is within ``max_drop``)."""

import numpy as np

from scnet_deploy.calibration.budget import BudgetNotMet, psnr_y_of
from scnet_deploy.calibration.data import calibration_set, holdout_pairs
from scnet_deploy.calibration.int8_onnx import verification_inputs


CONV_TYPES = ("Convolution", "GroupConvolution")  # the depthwise shift is a GroupConvolution


def _lr_float(lr_u8: np.ndarray) -> np.ndarray:
    return lr_u8.transpose(2, 0, 1)[None].astype(np.float32) / 255.0


def float_convolutions(model) -> list[str]:
    """Convolutions of the quantized IR whose weights are not fake-quantized (kept in float)."""
    quantized = set()
    for op in model.get_ops():
        if op.get_type_name() not in CONV_TYPES:
            continue
        for inp in op.inputs()[1:2]:
            producer = inp.get_source_output().get_node()
            # int8 weights appear as a Constant(i8) -> Convert -> (Subtract) -> Multiply chain, or a FakeQuantize
            seen, frontier = 0, [producer]
            while frontier and seen < 6:
                node = frontier.pop()
                seen += 1
                kind = node.get_type_name()
                if kind == "FakeQuantize" or (kind == "Constant" and node.get_element_type().get_type_name() == "i8"):
                    quantized.add(op.get_friendly_name())
                    break
                frontier += [i.get_source_output().get_node() for i in node.inputs()]
    return sorted(op.get_friendly_name() for op in model.get_ops()
                  if op.get_type_name() in CONV_TYPES and op.get_friendly_name() not in quantized)


def quantize_ir(ctx, model, compile_fn):
    """Quantize the OpenVINO ``model``; ``compile_fn(model)`` -> callable infer. Returns (model, manifest section,
    with 'inputs' for verification)."""
    import logging

    import nncf

    nncf.set_log_level(logging.WARNING)  # its INFO lines would interleave with our progress display
    ctx.checkpoint.require_finite("calibrate")
    opts, scale, budget = ctx.options.calib, ctx.checkpoint.spec.scale, ctx.options.budget_db
    calib = calibration_set(opts, scale)
    pairs, holdout = holdout_pairs(opts, scale)
    fp32_psnr = psnr_y_of(compile_fn(model), pairs, scale)
    calibration = nncf.Dataset(list(calib))
    common = {"preset": nncf.QuantizationPreset.PERFORMANCE, "subset_size": len(calib)}
    if budget is None:
        quantized = nncf.quantize(model, calibration, **common)
        method = "nncf.quantize"
    else:
        def validate(compiled, items) -> float:
            request = compiled.create_infer_request()

            def infer(x):
                request.infer({0: x})
                return request.get_output_tensor(0).data.copy()

            return psnr_y_of(infer, list(items), scale)

        validation = nncf.Dataset(pairs, lambda pair: _lr_float(pair[0]))
        quantized = nncf.quantize_with_accuracy_control(
            model, calibration, validation, validation_fn=validate, max_drop=budget,
            drop_type=nncf.DropType.ABSOLUTE, **common)
        method = "nncf.quantize_with_accuracy_control"
    drift = psnr_y_of(compile_fn(quantized), pairs, scale) - fp32_psnr
    if budget is not None and drift < -budget:
        raise BudgetNotMet(f"OpenVINO INT8 drift {drift:.3f} dB is over the {budget} dB budget after NNCF's accuracy "
                           "control; raise --budget or export in float.")
    convs = [op for op in quantized.get_ops() if op.get_type_name() in CONV_TYPES]
    float_layers = float_convolutions(quantized)
    section = {"calibration": {"sources": calib.sources, "count": len(calib), "crop": opts.crop, "seed": opts.seed},
               "holdout": {"sources": holdout, "fp32_psnr_y": fp32_psnr},
               "quantization": {"method": method, "preset": "performance (symmetric)", "nncf": nncf.__version__,
                                "quantized_convs": len(convs) - len(float_layers)},
               "budget_db": budget, "drift_db": drift, "float_layers": float_layers,
               "inputs": verification_inputs(pairs)}
    return quantized, section
