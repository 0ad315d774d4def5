"""scnet_deploy/session.py: one build session builds each ONNX form and each calibration set once."""

import pytest

from scnet_deploy.build_options import CalibOptions
from scnet_deploy.export import export, ExportOptions


FAST = CalibOptions(count=8, crop=32)


@pytest.mark.slow  # 20 s: a caching check; the session builds are tested by default
def test_one_session_builds_each_onnx_form_and_calibration_set_once(ckpt, tmp_path, monkeypatch):
    """``export -f onnx,openvino,tensorrt --int8`` (and the latency autotuner over two forms on top): every ONNX
    graph is exported once per deploy form and every calibration/hold-out set once, however many engines use them."""
    import scnet_deploy.calibration.budget as budget
    import scnet_deploy.exporters.onnx_graph as onnx_graph
    import scnet_deploy.exporters.torch_runner as runner_mod
    from scnet_deploy.build_options import TuneOptions

    counts = {"build_onnx": 0, "torch_to_onnx": 0, "calibration_set": 0, "holdout_set": 0}

    def counting(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    counting(onnx_graph, "build_onnx")
    counting(onnx_graph, "torch_to_onnx")
    counting(budget, "calibration_set")
    counting(budget, "holdout_set")
    asked, forwards = [], []  # the PyTorch reference: inputs verified against, and forward passes it ran

    class CountingReference(runner_mod.ReferenceOutputs):
        def __init__(self, module):
            super().__init__(module)
            real = self.module
            self.module = lambda x: (forwards.append(x.numpy().tobytes()), real(x))[1]

        def __call__(self, x):
            asked.append(x.numpy().tobytes())
            return super().__call__(x)
    monkeypatch.setattr(runner_mod, "ReferenceOutputs", CountingReference)
    result = export(ckpt, ExportOptions(output=tmp_path / "all", format="onnx,openvino,tensorrt", precision="int8",
                                        calib=FAST))
    assert sorted(result.manifests) == ["onnx", "openvino", "tensorrt"]
    assert counts == {"build_onnx": 1, "torch_to_onnx": 1, "calibration_set": 1, "holdout_set": 1}
    # every engine verified against the reference (ONNX graph + 3 engines), each distinct input run once in PyTorch
    assert len(asked) > len(set(asked)) and sorted(forwards) == sorted(set(asked))
    counts.update(dict.fromkeys(counts, 0))
    tuned = export(ckpt, ExportOptions(output=tmp_path / "tuned", format="onnx,openvino", precision="int8", keep_slower_int8=True, calib=FAST,
                                       tune=TuneOptions("latency", ("dwconv", "slice"), size=(16, 16), runs=1,
                                                        tiles=())))
    assert {m["form"] for m in tuned.manifests.values()} <= {"dwconv", "slice"}
    # two forms, each built once; one export: the slice form's graph is the dwconv form's export, rewritten
    assert counts == {"build_onnx": 2, "torch_to_onnx": 1, "calibration_set": 1, "holdout_set": 1}
