"""Qualcomm's QNN execution provider, a plugin of ONNX Runtime (``onnxruntime-qnn``): registered once, sessions on
its HTP backend (the Hexagon NPU; on x86-64 the wheel's HTP runs as an emulator), the SoCs it compiles for, the QNN
SDK it carries. CPU fallback is always off: a graph the HTP cannot take whole is refused, never half run on a CPU.
A device imports this module and nothing of the build side."""

import json
import os
import platform
import re
from functools import lru_cache
from pathlib import Path

from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.native_output import captured_stderr

EP = "QNNExecutionProvider"
# the provider's own lines that mean an option it was given was ignored: refused here instead
IGNORED_OPTION = re.compile(r"(Unrecognized soc_model[^\n]*|Invalid HTP architecture[^\n]*)")


@lru_cache(maxsize=1)
def plugin():
    """The ``onnxruntime_qnn`` module, its provider library registered with ONNX Runtime (once a process)."""
    import onnxruntime as ort
    import onnxruntime_qnn

    ort.register_execution_provider_library(EP, onnxruntime_qnn.get_library_path())
    return onnxruntime_qnn


def versions() -> dict:
    """The plugin's version and the QNN SDK it carries (recorded in every QNN manifest)."""
    qnn = plugin()
    return {"onnxruntime-qnn": qnn.__version__, "qnn_sdk": qnn.build_and_package_info.qnn_version}


def emulated() -> bool:
    """Whether the HTP here is the QNN SDK's x86-64 emulation (accuracy only, no latency) or a Hexagon NPU."""
    return platform.machine().lower() in ("x86_64", "amd64", "i686")


def where() -> str:
    return "emulated HTP" if emulated() else "HTP"


def backend_libraries() -> dict:
    """Which QNN backends the wheel carries: htp, gpu, cpu (library present)."""
    qnn = plugin()
    paths = {"htp": qnn.get_qnn_htp_path(), "gpu": qnn.get_qnn_gpu_path(), "cpu": qnn.get_qnn_cpu_path()}
    return {name: os.path.exists(path) for name, path in paths.items()}


def session_options(provider: dict | None = None, threads: int = 0, config: dict | None = None):
    """ONNX Runtime session options with the QNN provider on its HTP backend (``provider``: its options, such as
    ``soc_model``) and no CPU fallback; ``config``: further session entries (EPContext generation)."""
    import onnxruntime as ort

    qnn = plugin()
    so = ort.SessionOptions()
    so.log_severity_level = 2  # warnings: the provider says so when it ignores an option (read by ``open_session``)
    if threads:
        so.intra_op_num_threads = threads
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, str(value))
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
    so.add_provider_for_devices(devices, {"backend_path": qnn.get_qnn_htp_path(), **(provider or {})})
    return so


def open_session(model, what: str, provider: dict | None = None, threads: int = 0, config: dict | None = None):
    """A session of ``model`` (a path or serialized bytes) wholly on the HTP; the provider's refusal, or an option it
    would ignore, is one line naming ``what`` was asked."""
    import onnxruntime as ort

    options = session_options(provider, threads, config)
    with captured_stderr((1, 2)) as said:  # the HTP library prints a notice to stdout when it first loads
        try:
            session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options)
            error = None
        except Exception as exc:  # the provider's refusal: said as ours below
            session, error = None, str(exc)
    ignored = IGNORED_OPTION.search(said[0])
    if ignored:
        raise ScnetDeployError(f"{what}: the QNN provider {versions()['onnxruntime-qnn']} says "
                               f"\"{ignored.group(1).strip()}\"; `scnet-deploy doctor` lists the SoCs it accepts.")
    if error is not None:
        unsupported = re.search(r"Unsupported nodes[^\n]*|fallback to CPU EP has been explicitly disabled[^\n]*",
                                error + said[0])
        raise ScnetDeployError(f"{what}: the Hexagon HTP cannot run this graph whole "
                               f"({(unsupported.group(0) if unsupported else error).strip()[:300]}).")
    return session


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def _candidate_names() -> list[str]:
    """Chip names the QNN SDK's HTP library knows (its SoC table), to put to the provider."""
    data = Path(plugin().get_qnn_htp_path()).read_bytes()
    return sorted({m.decode() for m in re.findall(rb"(?<![A-Z0-9])((?:SM|SA|QCS|QCM|SC|SXR|SDM|X1E)[0-9]{3,5}"
                                                   rb"[A-Z]{0,3})\x00", data)})


def accepted_socs() -> list[str]:
    """The chip names this provider accepts for ``--soc``, asked of the provider itself: every name the SDK's HTP
    library lists is put to it, and those it does not call unrecognized are kept (about 9 s once; remembered per
    plugin version under the user's cache)."""
    import onnxruntime as ort

    version = versions()
    root = Path(os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")) / "scnet-deploy"
    cache = root / f"qnn-socs-{version['onnxruntime-qnn']}-{version['qnn_sdk']}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    model, devices = _probe_model(), [d for d in ort.get_ep_devices() if d.ep_name == EP]
    accepted = []
    for name in _candidate_names():
        so = ort.SessionOptions()
        so.log_severity_level = 2
        so.add_provider_for_devices(devices, {"backend_path": plugin().get_qnn_htp_path(), "soc_model": name})
        with captured_stderr() as said:
            ort.InferenceSession(model, so)
        if not IGNORED_OPTION.search(said[0]):
            accepted.append(name)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(accepted))
    except OSError:  # a read-only home: asked again next time
        pass
    return accepted
