"""scnet_deploy/runtime.py: open_model refuses an artifact whose files do not match its manifest, before loading."""

import json

import pytest

from scnet_deploy.export import export, ExportOptions
from scnet_deploy.runtime import ArtifactError, open_model


@pytest.fixture(scope="module")
def onnx_artifact(ckpt, tmp_path_factory):
    return export(ckpt, ExportOptions(output=tmp_path_factory.mktemp("a") / "onnx")).directory


def test_tampered_artifact_is_refused(onnx_artifact, tmp_path, monkeypatch):
    import shutil

    from scnet_deploy.exporters.onnxruntime import runtime as onnxruntime_runtime

    copy = tmp_path / "copy"
    shutil.copytree(onnx_artifact, copy)
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    loads = []  # refused before loading: the backend's loader is never reached
    monkeypatch.setattr(onnxruntime_runtime, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(ArtifactError, match="do not match the sha256"):
        open_model(copy)
    assert loads == []
    monkeypatch.undo()
    manifest = json.loads((copy / "manifest.json").read_text())
    for files in (None, {}):  # a manifest that lists no files cannot vouch for any
        (copy / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
        with pytest.raises(ArtifactError, match="lists no files"):
            open_model(copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="lacks"):
        open_model(copy)
    with pytest.raises(ArtifactError, match="not an scnet-deploy artifact"):
        open_model(tmp_path)
