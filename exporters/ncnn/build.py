"""ncnn, the build side: the verified ONNX graph converted by pnnx into ncnn's param + bin.

pnnx stores weights in fp16 unless told otherwise (its ``fp16=1`` default), which alone moves an FP32 engine 5e-4
off PyTorch: fp32 artifacts are converted with ``fp16=0``; fp16 artifacts keep fp16 weights (half the file, as ncnn
apps ship them) and run with ncnn's fp16 options on.
"""

import importlib.metadata
import importlib.util
import shutil
import subprocess
from pathlib import Path

from scnet_deploy.errors import EXPORT_EXTRA, ExportError
from scnet_deploy.exporters.ncnn.runtime import BIN, PARAM, blob_names, check_compute, load
from scnet_deploy.exporters.registry import get_backend

PNNX_TIMEOUT_S = 300


def pnnx_binary() -> Path:
    spec = importlib.util.find_spec("pnnx")
    binary = Path(next(iter(spec.submodule_search_locations))) / "pnnx" if spec else None
    if binary is None or not binary.is_file():
        raise ExportError(f"--format ncnn converts with pnnx (the export stack), which is not installed; "
                          f"{EXPORT_EXTRA}.")
    return binary


def convert(onnx_path: Path, weights: str, in_ch: int) -> Path:
    """pnnx's conversion of ``onnx_path`` into a folder beside it holding ``PARAM`` and ``BIN`` (weights stored as
    ``weights``: fp32 or fp16); the input stays dynamic in height and width (two shapes given)."""
    folder = onnx_path.parent / f"{onnx_path.stem}-ncnn-{weights}"
    folder.mkdir(exist_ok=True)
    model = folder / "model.onnx"
    shutil.copyfile(onnx_path, model)
    command = [str(pnnx_binary()), model.name, f"inputshape=[1,{in_ch},32,32]", f"inputshape2=[1,{in_ch},45,61]",
               f"fp16={int(weights == 'fp16')}", "optlevel=2"]
    try:
        proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExportError(f"pnnx did not finish converting the ONNX graph within {PNNX_TIMEOUT_S} s.") from None
    if proc.returncode or not (folder / PARAM).is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ExportError(f"pnnx could not convert the ONNX graph to ncnn ({tail[0][:160]}); try another "
                          "--shift form or report it.")
    blob_names(folder / PARAM)  # one input, one output
    return folder


def fp16_in_effect(workdir: Path, compute: str, in_ch: int) -> bool:
    """Whether ncnn's fp16 options change anything on this unit: the same fp16-weight artifact run with them on and
    off, compared. ncnn computes in fp16 only where the unit has it (ARM CPUs with fp16, most Vulkan devices); on an
    x86 CPU it keeps fp32 arithmetic, so an fp16 artifact there is its weights' rounding alone."""
    import numpy as np

    from scnet_deploy.exporters.ncnn.runtime import NcnnRunner

    x = np.random.default_rng(0).random((1, in_ch, 24, 24), dtype=np.float32)
    with NcnnRunner(workdir, "fp16", compute) as fp16, NcnnRunner(workdir, "fp32", compute) as fp32:
        return not np.array_equal(fp16.infer(x), fp32.infer(x))


def build(ctx, workdir: Path) -> dict:
    hub = ctx.onnx()
    options = ctx.options
    compute = options.compute or get_backend("ncnn").default_compute
    reason = check_compute(compute)
    if reason:
        raise ExportError(f"--format ncnn --compute {compute}: {reason}.")
    weights = "fp16" if options.precision == "fp16" else "fp32"
    folder = ctx.from_onnx(f"ncnn-{weights}", lambda path: convert(path, weights, ctx.checkpoint.spec.num_in_ch))
    for name in (PARAM, BIN):
        shutil.copyfile(folder / name, workdir / name)
    section = {"compute": compute, "weights": weights, "pnnx": importlib.metadata.version("pnnx")}
    if weights == "fp16":
        section["fp16_arithmetic"] = fp16_in_effect(workdir, compute, ctx.checkpoint.spec.num_in_ch)
    if compute == "vulkan":
        import ncnn

        from scnet_deploy.exporters.ncnn.runtime import vulkan_devices

        section["vulkan_device"] = vulkan_devices()[ncnn.get_default_gpu_index()]
    return {"files": [PARAM, BIN], "onnx": {k: v for k, v in hub["section"].items() if k != "verification"},
            "ncnn": section}


def candidate_forms(precision: str) -> tuple[str, ...]:
    """The forms measured fastest in ncnn (benchmarks/ncnn_forms.py, results/ncnn_forms_*.md): dwconv+
    conv_before_upsample on the CPU (fp32: 1.13x dwconv, 1.6x fold, 2.1x slice) and on lavapipe's Vulkan (fp16:
    1.10x dwconv, 1.8x fold), with dwconv the runner-up on both; skip_as_conv was never faster. A real GPU is not
    measured: both are tried there too."""
    del precision
    return ("dwconv+conv_before_upsample", "dwconv")


def verification_runner(workdir: Path, fields: dict, precision: str):
    return load(workdir, {"precision": precision, **fields}), None
