"""Core ML: an ML Program (``model.mlpackage``) converted from the deploy-form module via ``torch.export``.

``torch.jit.trace`` conversion breaks under numpy 2.x for shapes computed from tensors; ``torch.export`` does not.
Flexible input shapes as a range (RangeDim; may not run on the Neural Engine) or as enumerated sizes (which do).
Prediction needs macOS: elsewhere the artifact is built and its MIL program checked (op list, bilinear
half-pixel semantics), and the runner says so plainly.
"""

import collections
import contextlib
import io
import logging
import platform
import warnings
from pathlib import Path

import numpy as np
import torch

from scnet_deploy.errors import ExportError
from scnet_deploy.exporters.coreml.options import Build
from scnet_deploy.exporters.coreml.runtime import PACKAGE, can_predict, load
from scnet_deploy.manifest import INPUT_NAME, OUTPUT_NAME

EXPECTED_OPS = {"const", "conv", "conv_transpose", "relu", "leaky_relu", "add", "upsample_bilinear", "depth_to_space", "pixel_shuffle",
                "cast", "pad", "slice_by_index", "concat", "mul", "constexpr_affine_dequantize",
                "constexpr_blockwise_shift_scale"}


def _quiet():
    # coremltools warns about untested torch versions and missing macOS-only libraries, and draws progress bars.
    warnings.simplefilter("ignore")
    logging.getLogger("coremltools").setLevel(logging.ERROR)


def export_program(module: torch.nn.Module, sizes, channels: int):
    from torch.export import Dim

    (h0, w0), (h1, w1), (h2, w2) = sizes.min, sizes.opt, sizes.max
    dims = {2: Dim("height", min=max(h0, 2), max=h2), 3: Dim("width", min=max(w0, 2), max=w2)}
    example = torch.rand(1, channels, max(h1, 2), max(w1, 2))
    return torch.export.export(module, (example,), dynamic_shapes={"x": dims}).run_decompositions({})


def input_type(options, sizes, channels: int):
    import coremltools as ct

    if options.shapes == "range":
        (h0, w0), (h1, w1), (h2, w2) = sizes.min, sizes.opt, sizes.max
        shape = ct.Shape((1, channels, ct.RangeDim(h0, h2, h1), ct.RangeDim(w0, w2, w1)))
    elif options.shapes == "enumerated":
        shapes = [(1, channels, h, w) for h, w in options.enumerated]
        shape = ct.EnumeratedShapes(shapes=shapes, default=shapes[0])
    else:
        raise ExportError(f"Core ML shapes {options.shapes!r} is unknown; choose range or enumerated.")
    return ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)


def check_program(mlmodel) -> dict:
    """What Linux can check of the converted program: its op list and the upsample semantics."""
    ops = mlmodel._mil_program.functions["main"].operations
    histogram = dict(sorted(collections.Counter(op.op_type for op in ops).items()))
    unexpected = sorted(set(histogram) - EXPECTED_OPS)
    if unexpected:
        raise ExportError(f"the Core ML program has unexpected ops {unexpected}; the conversion changed the model.")
    upsamples = []
    for op in ops:
        if op.op_type == "upsample_bilinear":
            align = bool(op.inputs["align_corners"].val)
            half = op.inputs["half_pixel_centers"].val if "half_pixel_centers" in op.inputs else not align
            upsamples.append({"align_corners": align, "half_pixel_centers": bool(half)})
            if align or not half:
                raise ExportError("the Core ML bilinear upsample is not half-pixel (align_corners=False) as in "
                                  "PyTorch; the converted model would differ.")
    weights = {}
    for op in ops:
        if op.op_type == "conv":
            producer = op.inputs["weight"].op
            weights[op.name] = producer.op_type if producer is not None else "const"
    return {"ops": histogram, "upsample_bilinear": upsamples,
            "quantized_convs": sum(v.startswith("constexpr_") for v in weights.values()), "convs": len(weights)}


def quantize_weights(mlmodel):
    """8-bit symmetric per-channel weights for every conv: threshold 0, or the small 1x1 convs would be skipped."""
    import coremltools.optimize as cto

    config = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0))
    return cto.coreml.linear_quantize_weights(mlmodel, config)


def build(ctx, workdir: Path) -> dict:
    with warnings.catch_warnings():
        _quiet()
        import coremltools as ct

        options, sizes, precision = ctx.options.backend("coreml", Build()), ctx.options.sizes, ctx.options.precision
        channels = ctx.checkpoint.spec.num_in_ch
        target = getattr(ct.target, options.deployment_target, None)
        if target is None:
            raise ExportError(f"Core ML deployment target {options.deployment_target!r} is unknown; use e.g. iOS16, "
                              "iOS17, iOS18.")
        if options.shapes == "enumerated":
            sizes_used = options.enumerated
            if not sizes_used:
                raise ExportError("enumerated Core ML shapes need at least one size.")
            sizes = type(sizes)(min=tuple(min(s) for s in zip(*sizes_used)), opt=tuple(sizes_used[0]),
                                max=tuple(max(s) for s in zip(*sizes_used)))
        program = export_program(ctx.deploy_module(), sizes, channels)
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bars; errors still raise
            mlmodel = ct.convert(program, inputs=[input_type(options, sizes, channels)],
                                 outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)], convert_to="mlprogram",
                                 compute_precision=ct.precision.FLOAT32 if precision == "fp32"
                                 else ct.precision.FLOAT16,
                                 minimum_deployment_target=target, skip_model_load=not can_predict())
        int8 = None
        if precision == "int8":
            ctx.checkpoint.require_finite("quantize")
            with contextlib.redirect_stderr(io.StringIO()):
                mlmodel = quantize_weights(mlmodel)
            int8 = {"weights": "int8 symmetric per-channel (linear_quantize_weights, weight_threshold=0)",
                    "activations": "float16: activation quantization calibrates by running the model, which "
                                   "coremltools can do on macOS only" + ("" if can_predict() else "; not done here")}
        program_check = check_program(mlmodel)
        if int8 is not None and program_check["quantized_convs"] != program_check["convs"]:
            raise ExportError(f"only {program_check['quantized_convs']} of {program_check['convs']} convolutions got "
                              "8-bit weights; the Core ML INT8 model would not be what was asked.")
        mlmodel.short_description = f"SCNet x{ctx.checkpoint.spec.scale} super-resolution (scnet-deploy)"
        mlmodel.save(str(workdir / PACKAGE))
    size_range = sizes
    section = {"deployment_target": options.deployment_target, "shapes": options.shapes,
               "enumerated": [list(s) for s in options.enumerated] if options.shapes == "enumerated" else None,
               "compute_precision": "float32" if precision == "fp32" else "float16",
               "coremltools": ct.__version__, "program": program_check}
    fields = {"files": [PACKAGE], "size_range": size_range.to_dict(), "coreml": section}
    if int8 is not None:
        fields["int8"] = int8  # weight-only: the session measures its drift where the engine runs (macOS)
    return fields


def verification_runner(workdir: Path, fields: dict, precision: str):
    if not can_predict():
        return None, f"Core ML prediction needs macOS; built on {platform.system()}, MIL program checked"
    return load(workdir, {"precision": precision, **fields}), None

