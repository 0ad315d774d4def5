"""Which FP16 converter makes TensorRT's mixed-precision graph: the measurement behind ``exporters/onnx_float16.py``.

For the reference checkpoint (SCNet-T x4) the verified FP32 ONNX graph (dwconv form) is converted by each candidate;
each graph then runs in ONNX Runtime on the CPU (TensorRT cannot be installed here) on Set5's standard x4 LR images
and is scored against the FP32 graph: PSNR of the output vs FP32 (RGB, [0, 1]), its max abs diff, and the PSNR-Y
drift vs HR (BasicSR/MATLAB protocol). Also: conversion time, Casts added, nodes left in FP32, Resize precision.
ModelOpt AutoCast (NVIDIA's recommendation) is measured where ``modelopt`` imports; its ONNX extra pins onnx 1.21 and
onnxruntime-gpu 1.24, so here it was run from a side directory (``pip install --no-deps --target DIR
nvidia-modelopt onnx-graphsurgeon polygraphy nvidia-ml-py omegaconf antlr4-python3-runtime pulp cppimport lief``,
then ``PYTHONPATH=DIR``).

    python benchmarks/fp16_converters.py [--out benchmarks/results/fp16_converters.md]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _output import emit  # benchmarks/ is on sys.path when a script here is run

ROOT = Path(__file__).resolve().parents[1]
SET5 = ROOT.parent / "shared" / "datasets" / "Set5"
WEIGHTS = ROOT / "scnet_deploy" / "weights" / "scnet_t_x4_reference.safetensors"


def _ours(model):
    from scnet_deploy.exporters.onnx_float16 import probe_inputs, to_float16

    return to_float16(model, probe_inputs())[0]


def _converter_defaults(model):
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(model, keep_io_types=True)


def _modelopt(path):
    import modelopt.onnx.autocast as autocast

    return autocast.convert_to_mixed_precision(str(path), low_precision_type="fp16", keep_io_types=True)


def _describe(model) -> tuple[int, int, str]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(model.graph.output)}
    casts = sum(n.op_type == "Cast" for n in model.graph.node)
    fp32 = sum(types.get(n.output[0]) == onnx.TensorProto.FLOAT for n in model.graph.node
               if n.op_type not in ("Cast", "Constant"))
    resizes = ", ".join(sorted({"fp16" if types.get(n.output[0]) == onnx.TensorProto.FLOAT16 else "fp32"
                                for n in model.graph.node if n.op_type == "Resize"}))
    return casts, fp32, resizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import onnx
    import onnxruntime as ort

    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.doctor import cpu_info
    from scnet_deploy.exporters.onnx_graph import OnnxOptions, build_onnx
    from scnet_deploy.imaging.images import mod_crop, read_rgb_u8, to_float_chw, to_u8_hwc
    from scnet_deploy.imaging.metrics import psnr_ssim_y

    if not SET5.exists():
        print(f"{SET5} is absent (the project's shared data)", file=sys.stderr)
        return 2
    names = sorted(p.stem for p in (SET5 / "HR").glob("*.png"))
    pairs = [(read_rgb_u8(SET5 / "LR_bicubic" / "X4" / f"{n}x4.png"), mod_crop(read_rgb_u8(SET5 / "HR" / f"{n}.png"), 4))
             for n in names]
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        build_onnx(load_checkpoint(WEIGHTS).model, OnnxOptions(shift="dwconv"), fp32_path)
        fp32 = onnx.load(str(fp32_path))
        candidates = [("scnet-deploy: onnxconverter-common + image path FP32, Resize FP16", lambda: _ours(fp32)),
                      ("onnxconverter-common defaults (keep_io_types)", lambda: _converter_defaults(fp32))]
        try:
            import modelopt.onnx.autocast  # noqa: F401

            candidates.append(("ModelOpt AutoCast (keep_io_types)", lambda: _modelopt(fp32_path)))
        except ImportError as e:
            print(f"ModelOpt AutoCast not measured: {e}", file=sys.stderr)

        def session(model):
            so = ort.SessionOptions()
            so.log_severity_level = 3
            return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

        net = load_checkpoint(WEIGHTS).model.eval()

        def torch_fp16():  # not a converter: every layer in FP16, image path included, arithmetic too
            import torch

            half = net.half()

            def infer(x):
                with torch.no_grad():
                    return half(torch.from_numpy(x).half()).float().numpy()
            return infer

        reference = session(fp32)
        outputs32 = [reference.run(None, {"lr": to_float_chw(lr)[None]})[0][0] for lr, _ in pairs]
        psnr32 = [psnr_ssim_y(to_u8_hwc(o), hr, crop=4)[0] for o, (_, hr) in zip(outputs32, pairs)]
        rows = []
        candidates.append(("bound: PyTorch with every layer in FP16 (CPU), image path included", None))
        for label, convert in candidates:
            t0 = time.perf_counter()
            if convert is None:
                infer, model = torch_fp16(), None
            else:
                model = convert()
                run = session(model)
                infer = lambda x, run=run: run.run(None, {"lr": x})[0]  # noqa: E731
            seconds = time.perf_counter() - t0
            outs = [infer(to_float_chw(lr)[None])[0] for lr, _ in pairs]
            vs32 = [10 * np.log10(1.0 / np.mean((np.clip(o, 0, 1) - np.clip(r, 0, 1)) ** 2))
                    for o, r in zip(outs, outputs32)]
            diff = max(float(np.abs(o - r).max()) for o, r in zip(outs, outputs32))
            drift = np.mean([psnr_ssim_y(to_u8_hwc(o), hr, crop=4)[0] - p
                             for o, (_, hr), p in zip(outs, pairs, psnr32)])
            casts, fp32_nodes, resizes = _describe(model) if model is not None else ("-", 0, "fp16")
            rows.append(f"| {label} | {np.mean(vs32):.2f} | {min(vs32):.2f} | {diff:.2e} | {drift:+.4f} | "
                        f"{casts} | {fp32_nodes} | {resizes} | {'-' if model is None else f'{seconds:.2f}'} |")
    cpu = cpu_info()
    lines = ["# FP16 converters for the strongly typed TensorRT graph", "",
             f"SCNet-T x4 (shipped reference weights), dwconv form, Set5 x4 standard LR; every graph run in ONNX "
             f"Runtime {ort.__version__} on the CPU ({cpu['model']}, {cpu['cores']} cores; TensorRT cannot be "
             "installed here), scored against the FP32 graph's output. Command: `python benchmarks/fp16_converters.py`.",
             "", "| converter | PSNR vs FP32, mean (dB) | worst image (dB) | max abs diff | PSNR-Y drift vs FP32 (dB) "
             "| Casts | FP32 nodes | Resize | convert (s) |", "|---|---|---|---|---|---|---|---|---|", *rows, "",
             "In ONNX Runtime on this CPU the three converted graphs give the same outputs to four digits, far closer "
             "to FP32 than PyTorch's FP16 arithmetic (last row): ONNX Runtime is not a faithful FP16 emulation, so "
             "accuracy cannot tell the converters apart here, and TensorRT's FP16 kernels may drift more than the "
             "first three rows; the last row, every layer and every operation in FP16, is the pessimistic bound. What differs is where TensorRT runs each layer (Casts, FP32 nodes, Resize), "
             "and what each converter needs installed."]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
