"""scnet_deploy/export.py: several formats from one ONNX graph; a precision a backend does not offer is a user error."""

import pytest

from scnet_deploy.export import export, ExportOptions
from scnet_deploy.exporters import registry


def test_several_formats_share_one_onnx(ckpt, tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -e '.[openvino]' in the checkout)")
    from scnet_deploy.exporters import onnx_graph

    calls = []
    real = onnx_graph.torch_to_onnx
    monkeypatch.setattr(onnx_graph, "torch_to_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = export(ckpt, ExportOptions(output=tmp_path / "multi", format="onnx,openvino"))
    assert len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == ["onnx", "openvino"]
    assert result.manifests["onnx"]["onnx"]["nodes_after_simplify"] == \
        result.manifests["openvino"]["onnx"]["nodes_after_simplify"]


def test_precision_not_offered_is_a_user_error(ckpt, tmp_path):
    with pytest.raises(registry.ScnetDeployError, match="offers"):
        export(ckpt, ExportOptions(output=tmp_path / "x", format="onnx", precision="bf16"))
    assert not (tmp_path / "x").exists()
