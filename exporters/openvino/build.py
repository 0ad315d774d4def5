"""OpenVINO, the build side: the IR converted from the verified ONNX; FP32 or FP16-compressed weights, or INT8."""

from pathlib import Path

from scnet_deploy.errors import ExportError
from scnet_deploy.exporters.openvino.runtime import BIN, XML, OpenVINORunner, compile_config, cpu_capabilities, load
from scnet_deploy.exporters.openvino.options import Build, CompileOptions
from scnet_deploy.options import CPU_FORMS

def candidate_forms(precision: str) -> tuple[str, ...]:
    """The forms ever measured fastest on a CPU (``options.CPU_FORMS``; this backend compiles for the CPU), in every
    precision. INT8 no longer adds fold+conv_before_upsample: it won pipeline runs only while the dwconv forms' budget
    loops did not converge; since their first float layer is measured, their INT8 engines within budget are
    1.25-1.6x faster than it (benchmarks/results/ov_int8_forms.md, benchmark_app in fresh processes)."""
    del precision
    return CPU_FORMS


def build(ctx, workdir: Path) -> dict:
    import openvino as ov

    hub = ctx.onnx()
    precision = ctx.options.precision
    model = ctx.from_onnx("openvino", lambda path: ov.convert_model(str(path))).clone()  # converted once per form
    compress = precision == "fp16"
    options = CompileOptions(ctx.options.backend("openvino", Build()).inference_precision)
    int8 = None
    if precision == "int8" and ctx.checkpoint.quant is not None:  # a quantization-aware checkpoint: its ranges
        from scnet_deploy.calibration.openvino_int8 import quantize_ir_from_ranges

        quantized = quantize_ir_from_ranges(hub["path"], model, ctx.checkpoint.quant, ctx.int8_data(),
                                            ctx.options.gate(), compile_config("f32", options),
                                            speed_limit=ctx.speed_limit, first_try=ctx.first_try)
    elif precision == "int8":
        from scnet_deploy.calibration.openvino_int8 import quantize_ir

        quantized = quantize_ir(model, ctx.int8_data(), ctx.options.gate(), compile_config("f32", options),
                                speed_limit=ctx.speed_limit, first_try=ctx.first_try)
    if precision == "int8":
        if quantized.abandoned is not None:  # its speed limit stopped the budget loop: nothing written
            return {"abandoned": quantized.abandoned}
        model, int8 = quantized.model, quantized.section.to_dict()
    try:
        ov.save_model(model, str(workdir / XML), compress_to_fp16=compress)
    except RuntimeError as exc:  # OpenVINO reports a failed write as its stream's state ("basic_ios::clear")
        import shutil

        free = shutil.disk_usage(workdir).free
        raise ExportError(f"OpenVINO could not write the IR into '{workdir.parent}' ({str(exc).splitlines()[0][:80]}; "
                          f"{free / 2**20:.0f} MB free there); free space or choose another --output.") from None
    with OpenVINORunner(workdir / XML, precision, options) as runner:  # what the CPU plugin makes of the hint
        section = {"device": "CPU", "weights": "fp16" if compress else "fp32", "compile_config": runner.config,
                   "effective_inference_precision": runner.effective, "capabilities": cpu_capabilities()}
    fields = {"files": [XML, BIN], "onnx": {k: v for k, v in hub["section"].items() if k != "verification"},
              "openvino": section}
    if int8 is not None:
        fields["int8"] = int8
    return fields


def verification_runner(workdir: Path, fields: dict, precision: str):
    return load(workdir, {"precision": precision, **fields}), None

