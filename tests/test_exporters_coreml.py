"""exporters/coreml/: conversion via torch.export, range and enumerated shapes, precision, MIL program checks,
8-bit weights; prediction only on macOS (elsewhere the runner says so)."""

import platform
import sys
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import save_basicsr, tiny_model
from scnet_deploy.calibration.onnxruntime_int8 import conv_nodes
from scnet_deploy.errors import ExportError
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.exporters.coreml.options import Build as CoreMLOptions
from scnet_deploy.options import SizeRange


pytestmark = pytest.mark.coreml


ct = pytest.importorskip("coremltools", reason="coremltools is not installed (pip install -e '.[coreml]' in the checkout)")


class _AlignCorners(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def _fp32_onnx_of(ckpt, tmp_path) -> Path:
    return export(ckpt, ExportOptions(output=tmp_path / "fp32_onnx")).directory / "model.onnx"


@pytest.mark.parametrize("precision,shapes", [("fp16", "range"), ("fp32", "enumerated")])
def test_convert(tmp_path, precision, shapes):
    ckpt = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    options = ExportOptions(output=tmp_path / "cm", format="coreml", precision=precision,
                            sizes=SizeRange((8, 8), (32, 48), (256, 256)),
                            backends={"coreml": CoreMLOptions(shapes=shapes, enumerated=((32, 48), (64, 96)))})
    m = export(ckpt, options).manifest
    assert (tmp_path / "cm" / "model.mlpackage").is_dir() and "model.mlpackage/Manifest.json" in m["files"]
    section = m["coreml"]
    assert section["compute_precision"] == ("float16" if precision == "fp16" else "float32")
    assert section["deployment_target"] == "iOS17"
    ops = section["program"]["ops"]
    assert ops["conv"] >= 9 and ops["upsample_bilinear"] == 3  # two stages + the image-space skip
    assert all(u == {"align_corners": False, "half_pixel_centers": True} for u in section["program"]["upsample_bilinear"])
    spec = ct.models.utils.load_spec(str(tmp_path / "cm" / "model.mlpackage"))
    array = spec.description.input[0].type.multiArrayType
    if shapes == "range":
        assert [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges][2:] == [(8, 256), (8, 256)]
    else:
        assert [list(s.shape) for s in array.enumeratedShapes.shapes] == [[1, 3, 32, 48], [1, 3, 64, 96]]
    if platform.system() != "Darwin":
        assert m["verification"]["passed"] is None and "macOS" in m["verification"]["skipped"]
        from scnet_deploy.exporters.registry import BackendUnavailable
        from scnet_deploy.runtime import open_model

        with pytest.raises(BackendUnavailable, match="needs macOS"):
            open_model(tmp_path / "cm")
    else:
        assert m["verification"]["passed"]


def test_program_check_catches_wrong_upsample_semantics():
    from scnet_deploy.exporters.coreml.build import check_program

    program = torch.export.export(_AlignCorners(), (torch.rand(1, 3, 8, 8),)).run_decompositions({})
    mlmodel = ct.convert(program, convert_to="mlprogram", skip_model_load=True)
    with pytest.raises(ExportError, match="half-pixel"):
        check_program(mlmodel)


def test_every_exact_form_converts_to_the_ops_it_should(tmp_path):
    # The autotuner may pick any form on a Mac; each must convert with the ops it is made of.
    from scnet_deploy.build_options import OnnxOptions

    ckpt = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    for name, onnx_options, expect in [
            ("fold", OnnxOptions(shift="fold", conv_before_upsample=True), {"upsample_bilinear": 3}),
            ("deconv", OnnxOptions(upsample_as_deconv=True), {"conv_transpose": 3})]:
        m = export(ckpt, ExportOptions(output=tmp_path / name, format="coreml", precision="fp16",
                                       onnx=onnx_options)).manifest
        ops = m["coreml"]["program"]["ops"]
        assert all(ops.get(op) == n for op, n in expect.items()), ops


@pytest.mark.coreml
def test_coreml_int8_weights(ckpt, tmp_path):
    pytest.importorskip("coremltools", reason="coremltools is not installed")
    m = export(ckpt, ExportOptions(output=tmp_path / "cm", format="coreml", precision="int8", keep_slower_int8=True)).manifest
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    # read the saved package itself, not the exporter's in-memory program: every conv's weight is an int8 tensor
    spec = ct.utils.load_spec(str(tmp_path / "cm" / "model.mlpackage"))
    main = spec.mlProgram.functions["main"]
    ops = list(main.block_specializations[main.opset].operations)
    producers = {out.name: op for op in ops for out in op.outputs}
    convs = [op for op in ops if op.type == "conv"]
    assert len(convs) == len(conv_nodes(onnx.load(str(_fp32_onnx_of(ckpt, tmp_path))))) > 0
    for conv in convs:
        weight = producers.get(conv.inputs["weight"].arguments[0].name)
        assert weight is not None and weight.type.startswith("constexpr_"), conv.outputs[0].name
        data = weight.attributes.get("quantized_data") or weight.attributes.get("data")
        assert data.type.tensorType.dataType == MIL_pb2.INT8, conv.outputs[0].name
    assert "macOS" in m["int8"]["activations"] or sys.platform == "darwin"
    assert m["int8"]["within_budget"] is None or sys.platform == "darwin"  # measured only where Core ML predicts
