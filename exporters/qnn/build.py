"""Qualcomm's HTP, the build side: the verified ONNX model quantized for the HTP (``calibration.qnn_quant``), fixed
at the one LR size the context takes, compiled by the QNN provider into an EPContext for the chosen SoC, and held to
the accuracy gate on the HTP itself (the x86-64 emulation here): the gate's figures in the manifest are the
HTP's, on the hold-out's crops at the compiled size.

fp16 is compiled from the float graph with the provider's fp16 precision, where it takes it for the SoC."""

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from scnet_deploy.calibration.budget import BudgetNotMet, advice, over_gate, why_over
from scnet_deploy.errors import ExportError
from scnet_deploy.exporters.qnn import provider
from scnet_deploy.exporters.qnn.options import Build
from scnet_deploy.exporters.qnn.runtime import CONTEXT_FILE, MODEL_FILE, QnnRunner
from scnet_deploy.options import SizeRange


def candidate_forms(precision: str) -> tuple[str, ...]:
    return ("dwconv",)  # the HTP's own compiler lays out the graph; one form is compiled


def compile_context(graph: Path, workdir: Path, soc: str, precision: str, size: tuple[int, int]) -> str:
    """The EPContext of ``graph`` for ``soc``: ``model.onnx`` (its one node) and ``model_qnn.bin`` in ``workdir``;
    the context is loaded again and must give the compiling session's output bit for bit (returned: that verdict)."""
    import numpy as np

    from scnet_deploy.manifest import INPUT_NAME, OUTPUT_NAME

    options = {"soc_model": soc}
    if precision == "fp16":
        options["enable_htp_fp16_precision"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / MODEL_FILE
        what = f"--format qnn --precision {precision} --soc {soc}"
        compiling = provider.open_session(graph, what, options, config={
            "ep.context_enable": 1, "ep.context_embed_mode": 0, "ep.context_file_path": str(target)})
        probe = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
        expected = compiling.run([OUTPUT_NAME], {INPUT_NAME: probe})[0]
        if precision == "fp16":
            _require_fp16(graph, probe, expected, what)
        bins = list(Path(tmp).glob("*.bin"))
        if not target.exists() or len(bins) != 1:
            raise ExportError(f"the QNN provider wrote no context for --soc {soc} (found {sorted(p.name for p in bins)})"
                              "; report it with `scnet-deploy doctor`.")
        _rename_context(target, bins[0].name, workdir / MODEL_FILE)
        shutil.move(str(bins[0]), workdir / CONTEXT_FILE)
    loaded = provider.open_session(workdir / MODEL_FILE, what).run([OUTPUT_NAME], {INPUT_NAME: probe})[0]
    if not np.array_equal(loaded, expected):
        raise ExportError(f"{what}: the compiled context does not give the compiling session's output (max abs "
                          f"diff {float(np.abs(loaded - expected).max()):.3g}); report it with `scnet-deploy doctor`.")
    return "bit-identical to the compiling session on a random input"


def _require_fp16(graph: Path, probe, out, what: str) -> None:
    """fp16 where the SoC's HTP computes in it: on an HTP without fp16 (v68: SM8350) the emulator computes the graph
    in float32, bit-close to the CPU (2e-7 here, where fp16 rounds to ~1e-3), which the NPU itself cannot run."""
    import numpy as np
    import onnxruntime as ort

    from scnet_deploy.manifest import INPUT_NAME, OUTPUT_NAME

    cpu = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], {INPUT_NAME: probe})[0]
    if float(np.abs(out - cpu).max()) < 1e-5:
        raise ExportError(f"{what}: this SoC's HTP has no fp16 arithmetic (the emulator computed the context in "
                          "float32, which the NPU cannot run); export --precision a16w8, or choose a newer --soc "
                          "(`scnet-deploy doctor` lists them).")


def _rename_context(src: Path, old: str, dst: Path) -> None:
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "ep_cache_context" and attr.s == old.encode():
                attr.s = CONTEXT_FILE.encode()
    onnx.save(model, str(dst))


def build(ctx, workdir: Path) -> dict:
    from scnet_deploy.calibration.qnn_quant import build_qdq, fix_size, fold_constants

    own = ctx.options.backend("qnn", Build())
    precision, size = ctx.options.precision, tuple(own.size)
    hub = ctx.onnx()
    fields = {"files": [MODEL_FILE, CONTEXT_FILE], "onnx": {k: v for k, v in hub["section"].items()
                                                            if k != "verification"},
              "size_range": SizeRange(size, size, None).to_dict(),
              "qnn": {"soc": own.soc, "size": list(size), "context": CONTEXT_FILE, "scale": ctx.checkpoint.spec.scale,
                      "halo": ctx.checkpoint.spec.receptive_radius, **provider.versions()}}
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "graph.onnx"
        if precision == "fp16":
            import onnx

            model = onnx.load(str(hub["path"]))
            fold_constants(model)
            onnx.save(model, str(graph))
        else:
            quantized = build_qdq(hub["path"], graph, ctx.int8_data(), ctx.options.gate(), precision,
                                  ctx.checkpoint.quant)
            fields["int8"] = quantized.section.to_dict()
        fix_size(graph, graph, size)
        fields["qnn"]["context_round_trip"] = compile_context(graph, workdir, own.soc, precision, size)
    if precision != "fp16":
        fields["int8"] = gate_on_htp(ctx, workdir, fields, size)
    return fields


def gate_on_htp(ctx, workdir: Path, fields: dict, size: tuple[int, int]) -> dict:
    """The ``int8`` section measured again with the compiled context, on the hold-out's crops at its size (images
    smaller than that are left out and named): the budget loop chose the graph on ONNX Runtime's CPU, the HTP rounds
    its own way, and the gate holds for what ships."""
    from scnet_deploy.calibration.budget import int8_section
    from scnet_deploy.calibration.onnxruntime_int8 import onnx_infer
    from scnet_deploy.calibration.qnn_quant import holdout_crops

    data, gate, section = ctx.int8_data(), ctx.options.gate(), fields["int8"]
    crops, left_out = holdout_crops(data.holdout, size, ctx.checkpoint.spec.scale)
    baseline = replace(data, holdout=crops).baseline(onnx_infer(ctx.onnx()["path"]), gate.visible_levels)
    manifest = {"arch": ctx.checkpoint.spec.to_dict(), "precision": ctx.options.precision, **fields}
    with QnnRunner(workdir, ctx.options.precision, fields["qnn"]).declare(manifest) as runner:
        drift = baseline.measure(runner.infer)
    result = {"drift": drift, "gate": gate, "float_layers": section["float_layers"], "tries": section["tries"],
              "all_float_try": section.get("all_float_try")}
    if over_gate(drift, gate):
        raise BudgetNotMet(f"--format qnn --precision {ctx.options.precision}: on the {provider.where()} the engine "
                           f"fails the accuracy gate on the hold-out ({why_over(drift, gate)}), though it passed on "
                           f"ONNX Runtime's CPU; {advice(drift, gate)}" + (", or export --precision a16w8."
                                                               if ctx.options.precision == "int8" else "."))
    measured = int8_section(data.calib, data.options, baseline, result, section["quantization"]).to_dict()
    measured["measured_on"] = f"{provider.where()}, {size[0]}x{size[1]} crops of the hold-out"
    measured["left_out"] = left_out
    measured["cpu_simulation"] = {k: section[k] for k in ("drift_db", "gate_by_content")}
    return measured


def verification_runner(workdir: Path, fields: dict, precision: str):
    return QnnRunner(workdir, precision, fields["qnn"]), None
