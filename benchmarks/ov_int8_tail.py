"""The OpenVINO INT8 engine's high-resolution tail: can its bilinear upsamples run on 8-bit data?

OpenVINO's low-precision transformations move a dequantization through an Interpolate only in ``nearest`` mode
(``InterpolateTransformation::canBeTransformed``), so every bilinear upsample of the INT8 engine runs in float
between INT8 convolutions. This script measures, on the reference SCNet-T x4 in its OpenVINO INT8 form
(fold+conv_before_upsample, all-INT8 with the export's NNCF settings, image path in float):

- ``bilinear f32``: today's engine, float parts f32;
- ``bilinear bf16``: the same IR, float parts bf16 (CPUs with AMX/AVX512-BF16);
- ``nearest+blur``: each x2 bilinear upsample as nearest x2 + edge pad + depthwise 3x3 [1,2,1]x[1,2,1]/16 (exact in
  float: half-pixel bilinear x2 is nearest x2 followed by that tent filter, the border clamp being the edge pad),
  which the transformations can run in INT8 (nearest Interpolate, Pad, GroupConvolution);

each with its hold-out drift against the FP32 engine of the same graph (mean PSNR-Y, the INT8 budget's measure),
its median latency (all timed in turn), and the per-layer profile (PERF_COUNT) summed by layer type.

    python benchmarks/ov_int8_tail.py [--size 180x320] [--runs 10] [--out FILE.md]
"""

import argparse
import collections
import sys

import numpy as np

from _output import emit  # benchmarks/ is on sys.path when a script here is run

from scnet_deploy.gate import AccuracyGate

def nearest_blur(model):
    """``model`` with each x2 bilinear upsample of its upsampler stages as nearest x2 + edge pad + a depthwise 3x3
    tent filter (exact in float)."""
    import copy

    import torch
    from torch import nn
    from torch.nn import functional as F

    from scnet_deploy.model.network import UpShiftMLP

    class NearestBlur(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            tent = torch.tensor([1.0, 2.0, 1.0]) / 4
            self.register_buffer("weight", torch.outer(tent, tent).expand(channels, 1, 3, 3).contiguous())
            self.channels = channels

        def forward(self, x):
            up = F.interpolate(x, scale_factor=2, mode="nearest")
            return F.conv2d(F.pad(up, [1, 1, 1, 1], mode="replicate"), self.weight, groups=self.channels)

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, UpShiftMLP):
            channels = next(m for m in module.up_layer if isinstance(m, nn.Conv2d)).out_channels
            for i, layer in enumerate(module.up_layer):
                if isinstance(layer, nn.Upsample) and layer.mode == "bilinear" and float(layer.scale_factor) == 2.0:
                    module.up_layer[i] = NearestBlur(channels)
    return model.eval()


def to_ir(module, path, in_ch: int = 3):
    """``module`` exported to ONNX (dynamo, simplified, saved at ``path``) and converted to an OpenVINO model."""
    import onnx
    import openvino as ov

    from scnet_deploy.exporters.onnx_graph import OnnxOptions, simplify, torch_to_onnx

    model, _ = simplify(torch_to_onnx(module, OnnxOptions(), in_ch=in_ch))
    onnx.save(model, str(path))
    return ov.convert_model(str(path))


def profile(model, config: dict, x: np.ndarray) -> dict:
    import openvino as ov

    request = ov.Core().compile_model(model, "CPU", {**config, "PERF_COUNT": True}).create_infer_request()
    for _ in range(3):
        request.infer({0: x})
    by_type = collections.Counter()
    for info in request.profiling_info:
        by_type[f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds() * 1e3
    return by_type


def main(argv=None) -> int:
    import tempfile
    from pathlib import Path

    import torch

    from scnet_deploy.calibration.budget import int8_data
    from scnet_deploy.build_options import CalibOptions
    from scnet_deploy.calibration.openvino_int8 import _ov_infer, quantize_ir
    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.doctor import machine, machine_line
    from scnet_deploy.exporters.openvino.runtime import compile_config
    from scnet_deploy.exporters.openvino.options import CompileOptions
    from scnet_deploy.pipeline import reference_checkpoint
    from scnet_deploy.model.rewrites import DeployOptions, to_deploy_form
    from scnet_deploy.timing import in_turn

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="180x320")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out")
    args = p.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    ckpt = load_checkpoint(reference_checkpoint())
    bilinear = to_deploy_form(ckpt.model, DeployOptions("fold", conv_before_upsample=True))
    blurred = nearest_blur(bilinear)
    probe = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        exact = float((blurred(probe) - bilinear(probe)).abs().max())
    data = int8_data(CalibOptions(count=16), ckpt.spec.scale)
    f32, bf16 = (compile_config(hint, CompileOptions()) for hint in ("f32", "bf16"))
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    engines, drift, layers = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, module in (("bilinear", bilinear), ("nearest+blur", blurred)):
            fp32 = to_ir(module, Path(tmp) / f"{name}.onnx")
            quantized = quantize_ir(fp32, data, AccuracyGate(None), f32)
            baseline = data.baseline(_ov_infer(fp32, f32))
            for hint, config in (("f32", f32), ("bf16", bf16)):
                if name == "nearest+blur" and hint == "bf16":
                    continue
                label = f"{name} {hint}"
                drift[label] = baseline.measure(_ov_infer(quantized.model, config))["mean_db"]
                engines[label] = _ov_infer(quantized.model, config)
                layers[label] = profile(quantized.model, config, x)
        timings = in_turn(engines, x, args.runs, warmup=2, drop_above=None)
    kinds = sorted({k for v in layers.values() for k in v}, key=lambda k: -max(v.get(k, 0) for v in layers.values()))
    kinds = [k for k in kinds if max(v.get(k, 0) for v in layers.values()) >= 0.5]
    lines = [f"Machine: {machine_line(machine())}. SCNet-T x4 reference, OpenVINO INT8 (NNCF, the export's settings, "
             f"all-INT8), LR {h}x{w} -> {4 * h}x{4 * w}; nearest+blur vs bilinear in float: max abs diff {exact:.1e}. "
             f"Median of {args.runs} runs, engines in turn; drift = hold-out mean PSNR-Y vs the FP32 engine of the "
             "same graph; per-layer ms = PERF_COUNT summed by layer type (one inference).", "",
             "| engine | median ms | drift dB | " + " | ".join(kinds) + " |",
             "|---|---|---|" + "---|" * len(kinds)]
    for label in engines:
        lines.append(f"| {label} | {timings[label]['median_ms']:.1f} | {drift[label]:+.3f} | "
                     + " | ".join(f"{layers[label].get(k, 0):.1f}" for k in kinds) + " |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
