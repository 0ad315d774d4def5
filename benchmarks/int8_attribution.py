"""Where OpenVINO INT8's visible error comes from, and what keeping each part in float costs: the frontier.

    python benchmarks/int8_attribution.py --out benchmarks/results/int8_attribution.md

The shipped reference SCNet-T x4 in the default form, quantized all-INT8 by the export's own quantizer
(``calibration.openvino_int8.quantize_ir``, no budget loop, known ranges fixed). Its activation quantizers
(FakeQuantize ops) are grouped by what they feed: the 1x1 convolutions, the depthwise shift, the adds, the bilinear
resizes, anything else. Each group is then removed alone (its consumers read float values), and greedily, the group
that lowers the worst content type's visible share most first: for each step, the accuracy gate's measures on the
export's hold-out (per content type: the worst image's share of pixels 4+ levels off FP32, the mean PSNR-Y drift)
and the median ms at LR 180x320 on this machine, float parts in f32 (``--float-parts bf16`` where the CPU has it).
Then the weights: from the last step (every activation in float), the convolution whose int8 weights, put back in
float, lower the worst visible share most is found by halving, step by step, until the gate passes (or
``--weights`` steps). Finally the single quantizer whose removal wins back most line-art visible share is found by halving.
"""

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from scnet_deploy.gate import AccuracyGate

def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def groups_of(model) -> dict[str, list[str]]:
    """Activation FakeQuantize ops by what they feed."""
    kinds = {"Convolution": "1x1 conv inputs", "GroupConvolution": "shift (depthwise) inputs", "Add": "add inputs",
             "Interpolate": "resize inputs"}
    groups: dict[str, list[str]] = {}
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize" or op.input(0).get_source_output().get_node().get_type_name() == \
                "Constant":
            continue
        consumers = {t.get_node().get_type_name() for t in op.output(0).get_target_inputs()}
        kind = next((kinds[c] for c in consumers if c in kinds), "other")
        groups.setdefault(kind, []).append(op.get_friendly_name())
    return groups


def int8_weight_convs(model) -> list[str]:
    """The convolutions whose weights are stored in int8 (NNCF compresses them: an i8 Constant, Convert, Multiply)."""
    found = []
    for op in model.get_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            chain, node = [], op.input(1).get_source_output().get_node()
            while len(chain) < 4:
                chain.append(node)
                if not node.get_input_size():
                    break
                node = node.input(0).get_source_output().get_node()
            if any(n.get_type_name() == "Constant" and n.get_element_type().get_type_name() == "i8" for n in chain):
                found.append(op.get_friendly_name())
    return found


def with_float_weights(model, fp32, names):
    """A copy of ``model`` whose convolutions ``names`` read the FP32 model's weights again."""
    import openvino as ov

    source = {op.get_friendly_name(): op for op in fp32.get_ops()}
    clone = model.clone()
    for op in [o for o in clone.get_ops() if o.get_friendly_name() in set(names)]:
        weights = source[op.get_friendly_name()].input(1).get_source_output().get_node()
        while weights.get_type_name() == "Convert":  # fp16-compressed IR: Constant(f16) -> Convert
            weights = weights.input(0).get_source_output().get_node()
        if weights.get_type_name() != "Constant":
            raise SystemExit(f"{op.get_friendly_name()}: the FP32 model's weights are not a constant")
        value = ov.opset13.constant(weights.get_data().astype("float32"))
        op.input(1).replace_source_output(value.output(0))
    clone.validate_nodes_and_infer_types()
    return clone


def summary(drift: dict, budget_db: float) -> dict:
    from scnet_deploy.calibration.budget import gate_by_content

    verdicts = gate_by_content(drift, AccuracyGate(budget_db))
    worst = max(verdicts.values(), key=lambda v: v["visible_share"])
    return {"verdicts": verdicts, "worst_visible": worst["visible_share"], "worst_content": worst["content"],
            "passed": all(v["passed"] for v in verdicts.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--float-parts", default="f32", choices=["f32", "bf16"])
    p.add_argument("--budget", type=float, default=0.1)
    p.add_argument("--weights", type=int, default=8, help="at most this many convolutions' weights in float")
    args = p.parse_args()

    import openvino as ov

    from scnet_deploy.calibration.budget import costliest, int8_data
    from scnet_deploy.build_options import CalibOptions
    from scnet_deploy.calibration.openvino_int8 import _ov_infer, quantize_ir, without_quantizers
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.exporters.openvino.runtime import compile_config
    from scnet_deploy.exporters.openvino.options import CompileOptions
    from scnet_deploy.pipeline import reference_checkpoint
    from scnet_deploy.timing import median_ms

    x = np.random.default_rng(0).random((1, 3, 180, 320), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir = export(reference_checkpoint(), ExportOptions(output=Path(tmp) / "fp32", format="openvino")).directory
        model = ov.Core().read_model(str(fp32_dir / "model.xml"))
        data = int8_data(CalibOptions(count=16), 4)
        config = compile_config("f32", CompileOptions())
        run_config = compile_config(args.float_parts, CompileOptions())
        baseline = data.baseline(_ov_infer(model, config))
        int8 = quantize_ir(model, data, AccuracyGate(None), config).model
        groups = groups_of(int8)

        def step(m) -> dict:
            s = summary(baseline.measure(_ov_infer(m, run_config)), args.budget)
            s["ms"] = median_ms(_ov_infer(m, run_config), x, 5, warmup=1)
            return s

        fp32_ms = median_ms(_ov_infer(model, config), x, 5, warmup=1)
        float_parts_ms = median_ms(_ov_infer(model, run_config), x, 5, warmup=1)  # no INT8 at all
        alone = {name: step(without_quantizers(int8, names)) for name, names in groups.items()}
        frontier, kept, current = [("all-INT8", step(int8))], [], int8
        left = dict(groups)
        while left:
            scores = {n: summary(baseline.measure(_ov_infer(without_quantizers(current, left[n]), run_config)),
                                 args.budget)["worst_visible"] for n in left}
            best = min(scores, key=scores.get)
            current = without_quantizers(current, left.pop(best))
            kept.append(best)
            frontier.append((" + ".join(kept) + " in float", step(current)))

        weights = int8_weight_convs(current)
        total_weights, float_weights = len(weights), []

        def worst_with(model, names) -> float:
            return summary(baseline.measure(_ov_infer(with_float_weights(model, model_fp32, names), run_config)),
                           args.budget)["worst_visible"]

        model_fp32 = model
        while weights and not frontier[-1][1]["passed"] and len(float_weights) < args.weights:
            chosen = costliest(weights, lambda group: -worst_with(current, group))
            weights.remove(chosen)
            float_weights.append(chosen)
            current = with_float_weights(current, model_fp32, [chosen])
            frontier.append((f"every activation + the weights of {len(float_weights)} of {total_weights} "
                             f"convolutions in float (the last: `{chosen}`)", step(current)))

        line_art = [i for i, h in enumerate(data.holdout) if h.content == "line-art"]

        def won_back(names) -> float:
            d = baseline.measure(_ov_infer(without_quantizers(int8, names), run_config))
            return -max(d["per_image"][i]["visible_share"] for i in line_art)

        every = [n for names in groups.values() for n in names]
        costliest_fq = costliest(every, won_back)
        costliest_alone = summary(baseline.measure(_ov_infer(without_quantizers(int8, [costliest_fq]), run_config)),
                                  args.budget)

    def cells(s: dict) -> str:
        by = s["verdicts"]
        return (f"{s['ms']:.1f} | {fp32_ms / s['ms']:.2f}x | {100 * s['worst_visible']:.2f}% ({s['worst_content']}) | "
                + " | ".join(f"{100 * by[c]['visible_share']:.2f}% / "
                             + ("-" if by[c]["drift_db"] is None else f"{by[c]['drift_db']:+.3f}") for c in contents)
                + f" | {'pass' if s['passed'] else 'fail'} |")

    contents = sorted(frontier[0][1]["verdicts"])
    head = ("| engine | ms | vs FP32 | worst visible | " + " | ".join(f"{c}: visible / dB" for c in contents)
            + " | gate |")
    rule = "|---" * (5 + len(contents)) + "|"
    lines = [f"# OpenVINO INT8: where the visible error comes from ({cpu_name()}, {os.cpu_count()} CPUs)", "",
             f"`python benchmarks/int8_attribution.py --out {args.out}" +
             (f" --float-parts {args.float_parts}`" if args.float_parts != "f32" else "`") +
             f"; float parts in {args.float_parts}; LR 180x320 -> 720x1280; FP32 engine {fp32_ms:.1f} ms, the "
             f"same engine in {args.float_parts} without INT8 {float_parts_ms:.1f} ms; gate: "
             f"0.1% visible, {args.budget} dB.", "",
             "Quantizers per group: " + ", ".join(f"{n} {len(v)}" for n, v in groups.items()) + ".", "",
             "## Each group alone in float", "", head, rule]
    lines += [f"| {name} in float | {cells(s)}" for name, s in alone.items()]
    lines += ["", "## The frontier (greedy: the group that lowers the worst visible share most, first)", "", head, rule]
    lines += [f"| {name} | {cells(s)}" for name, s in frontier]
    lines += ["", f"The single quantizer whose removal wins back most line-art visible share: `{costliest_fq}`; alone "
              f"in float, the worst visible share is {100 * costliest_alone['worst_visible']:.2f}% "
              f"({costliest_alone['worst_content']}).", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
