"""TensorRT, the engine builder: ``model.plan`` from a verified ONNX graph with the TensorRT Python API, strongly
typed (the precision is the graph's, never a builder flag: TensorRT 11 has none, 10.x opts in with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``). Runs where the engine will run: at export on a machine with
TensorRT and a GPU, and on the device (``build-engine``)."""

from pathlib import Path

from scnet_deploy.errors import ExportError
from scnet_deploy.exporters.registry import BackendUnavailable
from scnet_deploy.exporters.runner import SizeRange
from scnet_deploy.exporters.tensorrt.graph import make_profile, tensorrt_generation
from scnet_deploy.exporters.tensorrt.runtime import (CACHE_FILE, ONNX_FILE, PLAN_FILE, SCRIPT_FILE, TensorRTRunner,
                                                     _logger, engine_unavailable_reason)
from scnet_deploy.manifest import INPUT_NAME

def strongly_typed(trt) -> int:
    """The network creation flags of a strongly typed network, by name: STRONGLY_TYPED is bit 1 in TensorRT 10.x
    (after EXPLICIT_BATCH) and bit 0 in 11.x, where it is also ignored (always on)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_plan(onnx_path: Path, profile, workspace_mb: int, cache_in: Path | None, cache_out: Path) -> bytes:
    """The serialized engine of ``onnx_path``, strongly typed: no precision flag (TensorRT 11 has none)."""
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT could not parse the ONNX model: {'; '.join(errors[:3])}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(INPUT_NAME, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    cache = config.create_timing_cache(cache_in.read_bytes() if cache_in and cache_in.exists() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ExportError(f"TensorRT {trt.__version__} refused the timing cache '{cache_in}' (made by another TensorRT "
                          "version or GPU); delete it or pass another --timing-cache.")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine (see its log above); try a smaller --max-size or a "
                          "larger --workspace.")
    cache_out.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(serialized)


def build_here(directory: Path, verification: Path | None = None) -> dict:
    """The ``build-engine`` verb, run on the target device: build the plan of the TensorRT artifact ``directory``
    (its verified ONNX graph) with this machine's TensorRT, verify it against ``verification`` (the inputs and
    PyTorch FP32 outputs the export shipped: ``ShippedReference``), and record both in its manifest (written
    atomically). Returns the manifest."""
    import tensorrt as trt

    from scnet_deploy.exporters.runner import ShippedReference, verify_runner
    from scnet_deploy.manifest import file_hashes, read_manifest, sha256_of, write_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("backend") != "tensorrt":
        raise ExportError(f"'{directory}' is a {manifest.get('backend')} artifact; build-engine builds TensorRT ones.")
    section, sizes = manifest["tensorrt"], SizeRange.from_dict(manifest["size_range"])
    profile = make_profile(sizes, manifest["arch"]["num_in_ch"], manifest["options"]["tensorrt"]["max_batch"])
    plan = build_plan(directory / ONNX_FILE, profile, section["workspace_mb"], None, directory / CACHE_FILE)
    (directory / PLAN_FILE).write_bytes(plan)
    section.update({"engine": PLAN_FILE, "version": trt.__version__, "generation": tensorrt_generation(trt.__version__),
                    "engine_note": None})
    files = [ONNX_FILE, PLAN_FILE, CACHE_FILE, SCRIPT_FILE]
    reason = engine_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"the engine was built with TensorRT {trt.__version__} here, and cannot be verified: "
                                 f"{reason}.")
    if verification is not None:
        reference = ShippedReference.load(verification)
        with TensorRTRunner(directory / PLAN_FILE, manifest["precision"], sizes) as runner:
            manifest["verification"] = verify_runner(runner, reference, [], manifest["precision"],
                                                     manifest["arch"]["num_in_ch"], inputs=reference.inputs,
                                                     int8=manifest.get("int8"))
    manifest["files"] = file_hashes(directory, files)
    if verification is not None:  # what this record was made of: the shipped set, this engine (remote.py checks)
        manifest["verification"].update({"reference_sha256": sha256_of(Path(verification)),
                                         "engine_sha256": manifest["files"][PLAN_FILE]})
    return write_manifest(directory, manifest)

