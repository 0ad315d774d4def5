"""What each step of the quantization-aware recipe is worth, measured in PyTorch with ModelOpt's fake quantization
(``scnet-deploy qat``'s scheme: int8 symmetric per-tensor activations, per-channel weights, residual adds float;
every learned convolution but the first quantized unless a row says otherwise) against each checkpoint's own FP32 forward, on the export's
INT8 hold-out (worst image's share of pixels 4+ levels off, per content type; the gate allows 0.1%).

Rows: the reference calibrated (max) on photo patches or on half generated content; channel-equalized
(``calibration/equalization.py``) at several migration strengths, its scales from half generated or photo-only
patches; the last convolution kept float too; each block's ``conv2`` output or residual stream quantized too (what
ONNX Runtime's fused INT8 graphs would need); only the convolutions at the output resolution quantized (``qat``'s
default, ``--quantize hr``), and with the last upsampling stage's first convolution too; ranges as ``qat`` sets them
(the 99.99th percentile over half generated patches) for both; activations at 10 and 12 bits
(how far 8 bits are from the gate); and each quantization-aware checkpoint given with ``--qat`` at the ranges it
carries.

    python benchmarks/qat_recipe.py [--qat CKPT ...] [--out FILE.md]
"""

import argparse
import sys
from pathlib import Path

from _output import emit  # benchmarks/ is on sys.path when a script here is run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
CONTENT = ("photo", "line-art", "text", "flat-colours", "textures")


def main(argv=None) -> int:
    import numpy as np
    import torch

    from scnet_deploy.build_options import CalibOptions
    from scnet_deploy.calibration import qat_training
    from scnet_deploy.calibration.data import holdout_set
    from scnet_deploy.calibration.equalization import equalize
    from scnet_deploy.gate import visible_share
    from scnet_deploy.imaging.images import to_u8_hwc
    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.model.rewrites import replace_shift
    from scnet_deploy.pipeline import REFERENCE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(REFERENCE))
    p.add_argument("--qat", nargs="*", default=[])
    p.add_argument("--out")
    args = p.parse_args(argv)
    if not (DATA / "BSD68" / "HR").is_dir():
        print(f"skipped: {DATA} is absent (BSD68 and SunHays80 HR give the patches)")
        return 0
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ck = load_checkpoint(Path(args.checkpoint))
    photos, generated, _ = qat_training.training_images([DATA / "BSD68" / "HR", DATA / "SunHays80" / "HR"],
                                                        ck.spec.scale)
    batches = {share: [qat_training.sample(photos, generated, rng, 16, 32, share)
                       for _ in range(qat_training.CALIBRATION_BATCHES)]
               for share in (0.0, 0.5)}
    holdout = holdout_set(CalibOptions(), ck.spec.scale)
    inputs = [(h, torch.from_numpy(h.lr.transpose(2, 0, 1)[None].astype(np.float32) / 255)) for h in holdout]

    def run(model, x):
        with torch.no_grad():
            return to_u8_hwc(model(x)[0].numpy())

    def measure(model, float_convs=("conv_first",), ranges_share=0.0, ranges=None, also=None,
                bits=8, percentile=False) -> list[float]:
        import modelopt.torch.quantization as mtq

        reference = {h.name: run(model, x) for h, x in inputs}
        student = replace_shift(model, "dwconv").eval()
        config = qat_training._config(float_convs)  # the scheme qat trains, its float convolutions as asked
        for entry in config["quant_cfg"]:  # activations at ``bits`` (a diagnostic: how many the gate needs)
            if entry.get("quantizer_name") == "*input_quantizer":
                entry["cfg"] = {**entry["cfg"], "num_bits": bits}
        if also == "conv2 outputs":
            config["quant_cfg"].append({"quantizer_name": "body.*.conv2.output_quantizer",
                                        "cfg": {"axis": None, "num_bits": 8}})
        with torch.no_grad(), qat_training._quiet():
            mtq.quantize(student, config, lambda m: [m(x) for x in batches[ranges_share]])
        if percentile:  # qat's ranges: the 99.99th percentile over half generated patches
            qat_training.percentile_ranges(student, batches[0.5])
        if also == "residual stream":
            qat_training.quantize_residual_streams(student)
        if ranges is not None:  # the ranges the checkpoint carries, not a new calibration
            for name, module in student.named_modules():
                if name in ranges.inputs:
                    module.input_quantizer.amax = torch.tensor(ranges.inputs[name])
                if name in ranges.weights:
                    module.weight_quantizer.amax = torch.from_numpy(ranges.weights[name]).view(-1, 1, 1, 1)
        worst = dict.fromkeys(CONTENT, 0.0)
        for h, x in inputs:
            worst[h.content] = max(worst[h.content], visible_share(run(student, x), reference[h.name], 4))
        return [worst[c] for c in CONTENT]

    reference = ck.model.eval()
    rows = [("reference, ranges from photo patches", measure(reference)),
            ("reference, ranges from half generated patches", measure(reference, ranges_share=0.5))]
    for alpha in (0.5, 0.75, 1.0):
        rows.append((f"equalized (a {alpha:g}, scales from half generated), ranges from photos",
                     measure(equalize(reference, batches[0.5], alpha))))
    rows.append(("equalized (a 0.75, scales from photos only)", measure(equalize(reference, batches[0.0], 0.75))))
    rows.append(("equalized (a 0.75), conv_last float too",
                 measure(equalize(reference, batches[0.5], 0.75), ("conv_first", "conv_last"))))
    for also in ("conv2 outputs", "residual stream"):
        rows.append((f"equalized (a 0.75), each block's {also} quantized too",
                     measure(equalize(reference, batches[0.5], 0.75), also=also)))
    hr = qat_training.float_convs_of(reference, "hr")
    rows.append(("equalized (a 0.75), only the two output-resolution convolutions quantized (`--quantize hr`)",
                 measure(equalize(reference, batches[0.5], 0.75), hr)))
    last_first = next(n for n, m in reference.named_modules()
                      if isinstance(m, torch.nn.Conv2d) and n.startswith(f"upconv{reference.num_stages}."))
    rows.append((f"equalized (a 0.75), `--quantize hr` and `{last_first}`",
                 measure(equalize(reference, batches[0.5], 0.75), tuple(n for n in hr if n != last_first))))
    for label, floats in (("every convolution but the first", ("conv_first",)), ("`--quantize hr`", hr)):
        rows.append((f"equalized (a 0.75), {label}, ranges the 99.99th percentile of half generated patches (qat's)",
                     measure(equalize(reference, batches[0.5], 0.75), floats, percentile=True)))
    for bits in (10, 12):
        rows.append((f"equalized (a 0.75), activations at {bits} bits, ranges from half generated patches",
                     measure(equalize(reference, batches[0.5], 0.75), ranges_share=0.5, bits=bits)))
    for path in args.qat:
        qat = load_checkpoint(Path(path))
        info = qat.quant.info
        label = (f"{Path(path).name}: `--quantize {info.get('quantize', 'all')}`, {info.get('steps')} steps, lr "
                 f"{info.get('lr')}, {'equalized' if info.get('equalization') else 'not equalized'}, its own ranges")
        float_convs = tuple(info.get("float_convs", ["conv_first"]))
        rows.append((label, measure(qat.model.eval(), float_convs, ranges=qat.quant)))
    lines = [f"SCNet-T x{ck.spec.scale} `{Path(args.checkpoint).name}`, INT8 fake quantization (ModelOpt) of every "
             "learned convolution but the first unless the row says otherwise, "
             f"export hold-out ({len(holdout)} images), worst image's share of pixels 4+ levels off the checkpoint's "
             "own FP32 (gate 0.1%).", "",
             "| variant | " + " | ".join(CONTENT) + " |", "|---|" + "---|" * len(CONTENT)]
    lines += [f"| {label} | " + " | ".join(f"{100 * v:.2f}%" for v in shares) + " |" for label, shares in rows]
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
