"""Which activation quantizer of an OpenVINO INT8 engine costs its drift? Each one bypassed alone.

The reference SCNet-T x4 in one deploy form is quantized all-INT8 with the export's NNCF settings (image path in
float); then each activation FakeQuantize is removed alone (its consumers read the float value) and the hold-out
drift measured again (mean PSNR-Y vs the FP32 engine of the same graph, the INT8 budget's measure). The table lists
the quantizers whose removal wins back most. ``--relu-before-shift``: the residual blocks' ReLU moved before the shift
first (exact: a zero-filled shift commutes with ReLU), so the shift's input quantizer is unsigned.

    python benchmarks/ov_int8_quantizers.py [--form dwconv+conv_before_upsample] [--relu-before-shift] [--top 12]
                                            [--out FILE.md]
"""

import argparse
import sys
import time

from _output import emit  # benchmarks/ is on sys.path when a script here is run
from ov_int8_tail import to_ir

from scnet_deploy.gate import AccuracyGate

def relu_before_shift(model):
    """``model`` with each residual block as conv1 -> ReLU -> shift -> conv2 (exact)."""
    import copy

    from torch import nn

    from scnet_deploy.model.network import ResidualBlockShift

    model = copy.deepcopy(model)
    for block in model.modules():
        if isinstance(block, ResidualBlockShift):
            block.shift, block.relu = nn.Sequential(nn.ReLU(), block.shift), nn.Identity()
    return model.eval()


def main(argv=None) -> int:
    import tempfile
    from pathlib import Path

    import torch

    from scnet_deploy.calibration.budget import int8_data
    from scnet_deploy.build_options import CalibOptions
    from scnet_deploy.calibration.openvino_int8 import _ov_infer, fake_quantize_range, quantize_ir, \
        without_quantizers
    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.doctor import machine, machine_line
    from scnet_deploy.exporters.openvino.runtime import compile_config
    from scnet_deploy.exporters.openvino.options import CompileOptions
    from scnet_deploy.pipeline import reference_checkpoint
    from scnet_deploy.model.rewrites import DeployOptions, to_deploy_form

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--form", default="dwconv+conv_before_upsample")
    p.add_argument("--relu-before-shift", action="store_true")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out")
    args = p.parse_args(argv)
    ckpt = load_checkpoint(reference_checkpoint())
    module = to_deploy_form(ckpt.model, DeployOptions.from_name(args.form))
    if args.relu_before_shift:
        module = relu_before_shift(module)
    probe = torch.rand(1, 3, 29, 31)
    with torch.no_grad():
        exact = float((module(probe) - ckpt.model(probe)).abs().max())
    data = int8_data(CalibOptions(count=16), ckpt.spec.scale)
    config = compile_config("f32", CompileOptions())
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = to_ir(module, Path(tmp) / "model.onnx")
    quantized = quantize_ir(fp32, data, AccuracyGate(None), config).model
    baseline = data.baseline(_ov_infer(fp32, config))
    base = baseline.measure(_ov_infer(quantized, config))
    activations = [op for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize"
                   and op.input(0).get_source_output().get_node().get_type_name() != "Constant"]
    t0 = time.perf_counter()
    rows = []
    for fq in activations:
        drift = baseline.measure(_ov_infer(without_quantizers(quantized, [fq.get_friendly_name()]), config))["mean_db"]
        source = fq.input(0).get_source_output().get_node()
        consumers = sorted({t.get_node().get_type_name() for t in fq.output(0).get_target_inputs()})
        rows.append((drift - base["mean_db"], fq.get_friendly_name(), source.get_type_name(), consumers,
                     fake_quantize_range(fq)))
    form = args.form + (" with ReLU before each block's shift" if args.relu_before_shift else "")
    lines = [f"Machine: {machine_line(machine())}. SCNet-T x4 reference, form {form} (max abs diff to the reference "
             f"{exact:.1e}), OpenVINO INT8 all-INT8 (NNCF, the export's settings): hold-out mean drift "
             f"{base['mean_db']:+.3f} dB (" + ", ".join(f"{c} {d:+.3f}" for c, d in base["by_content"].items())
             + f"). Each of its {len(activations)} activation quantizers removed alone "
             f"({time.perf_counter() - t0:.0f} s), the drift won back, largest first:", "",
             "| won back dB | quantizer | reads | feeds | range |", "|---|---|---|---|---|"]
    for gain, name, source, consumers, (lo, hi) in sorted(rows, reverse=True)[:args.top]:
        lines.append(f"| {gain:+.3f} | {name} | {source} | {', '.join(consumers)} | [{lo:.2f}, {hi:.2f}] |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
