"""ncnn, the runtime side: ``model.ncnn.param`` + ``model.ncnn.bin`` run by ncnn on the CPU or a Vulkan device.

Precision is always explicit: ncnn's own default options turn fp16 storage, packing and arithmetic on wherever the
unit has them (ARM CPUs with fp16, most Vulkan GPUs), so "fp32" means those options off. An artifact runs on the
compute unit it was verified on (``manifest["ncnn"]["compute"]``); to run it on the other, export it for that unit.
A device imports this module and nothing of the build side.
"""

import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.exporters.ncnn.options import Run
from scnet_deploy.exporters.runner import Runner
from scnet_deploy.native_output import captured_stderr
from scnet_deploy.options import RuntimeOptions

PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"


def _units() -> tuple[str, ...]:
    """The compute units of its registry record (the first is the default): written once, there."""
    from scnet_deploy.exporters.registry import get_backend

    return get_backend("ncnn").compute_units


def _support(log: str, index: int, kind: str) -> bool | None:
    """From ncnn's log line ``[0 name]  fp16-p/s/u/a=1/1/1/1``: whether device ``index`` computes in ``kind`` (the
    arithmetic flag, a); None when the line is not there."""
    found = re.search(rf"^\[{index} .*?{kind}-p/s/u/a=(\d)/(\d)/(\d)/(\d)", log, re.MULTILINE)
    return None if found is None else found.group(4) == "1"


@lru_cache(maxsize=1)
def vulkan_devices() -> tuple[dict, ...]:
    """Each Vulkan device ncnn sees: index, name, and whether it has fp16 and int8 arithmetic."""
    import ncnn

    with captured_stderr() as log:
        ncnn.create_gpu_instance()
        count = ncnn.get_gpu_count()
    return tuple({"index": i, "name": ncnn.get_gpu_info(i).device_name(), "fp16": _support(log[0], i, "fp16"),
                  "int8": _support(log[0], i, "int8")} for i in range(count))


def fp16_arithmetic_on_cpu() -> bool:
    """Whether ncnn computes in fp16 on this CPU (ARMv8.2 fp16: asimdhp); on x86 it keeps fp32 arithmetic."""
    import ncnn

    return bool(ncnn.cpu_support_arm_asimdhp())


def check(precision: str) -> str | None:
    return None  # ncnn itself is the registry's check; fp32 and fp16 run on every unit ncnn has


def check_compute(compute: str, vulkan_device: int | None = None) -> str | None:
    """Why ``compute`` cannot run here (None: it can)."""
    if compute not in _units():
        return f"ncnn computes on {' or '.join(_units())}, not {compute!r}"
    if compute == "vulkan":
        devices = vulkan_devices()
        if not devices:
            return ("ncnn sees no Vulkan device here; install a Vulkan driver (Debian: apt-get install "
                    "mesa-vulkan-drivers) or use --compute cpu")
        if vulkan_device is not None and not 0 <= vulkan_device < len(devices):
            return f"Vulkan device {vulkan_device} does not exist; ncnn sees {len(devices)} (0..{len(devices) - 1})"
    return None


def pipeline_skip(precision: str, compute: str | None) -> str | None:
    """The pipeline does not build fp16 for a CPU without fp16 arithmetic: it would be the fp32 engine again, with
    rounded weights, and not worth the main job's time."""
    if precision == "fp16" and compute == _units()[0] and not fp16_arithmetic_on_cpu():
        return "ncnn has no fp16 arithmetic on this CPU: its fp16 engine would be the fp32 one with rounded weights"
    return None


def _yes(flag: bool | None) -> str:
    return "unknown" if flag is None else "yes" if flag else "no"


def doctor() -> dict:
    """Its Vulkan devices (index, name, fp16 and int8 arithmetic), or why they could not be listed; ``notes``: the
    same in words, as doctor prints them."""
    try:
        devices = list(vulkan_devices())
    except Exception as exc:  # a broken driver is something to report, not a reason for doctor to fail
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return {"vulkan_devices": f"Vulkan could not be queried: {why}",
                "notes": [f"Vulkan devices: Vulkan could not be queried: {why}"]}
    listed = ", ".join(f"{d['index']}: {d['name']} (fp16 {_yes(d['fp16'])}, int8 {_yes(d['int8'])})" for d in devices)
    return {"vulkan_devices": devices, "notes": ["Vulkan devices: " + (
        listed or "none (a Vulkan driver: Debian's mesa-vulkan-drivers gives lavapipe)")]}


def blob_names(param: Path) -> tuple[str, str]:
    """The input and output blobs of an ncnn param file: the Input layer's top, and the blob no layer consumes."""
    lines = Path(param).read_text().split("\n")
    produced, consumed, inputs = [], set(), []
    for line in lines[2:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        kind, n_in, n_out = fields[0], int(fields[2]), int(fields[3])
        bottoms, tops = fields[4:4 + n_in], fields[4 + n_in:4 + n_in + n_out]
        consumed.update(bottoms)
        produced.extend(tops)
        if kind == "Input":
            inputs.extend(tops)
    outputs = [b for b in produced if b not in consumed and b not in inputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ScnetDeployError(f"'{param}' has {len(inputs)} inputs and {len(outputs)} outputs; an SR model has one "
                               "of each.")
    return inputs[0], outputs[0]


class NcnnRunner(Runner):
    profile_note = ("ncnn's Python API offers no per-layer timing (its C++ benchncnn prints one, built with "
                    "NCNN_BENCHMARK)")
    backend = "ncnn"

    def __init__(self, directory: Path, precision: str = "fp32", compute: str | None = None,
                 threads: int | None = None, vulkan_device: int | None = None) -> None:
        import ncnn

        compute = compute or _units()[0]
        reason = check_compute(compute, vulkan_device)
        if reason:
            raise ScnetDeployError(f"--compute {compute}: {reason}.")
        directory = Path(directory)
        self.input, self.output = blob_names(directory / PARAM)
        fp16 = precision == "fp16"
        net = ncnn.Net()
        opt = net.opt
        opt.use_vulkan_compute = compute == "vulkan"
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = fp16
        for name in ("use_bf16_storage", "use_bf16_packed"):  # use_bf16_packed is newer than ncnn 1.0.20250503
            if hasattr(opt, name):
                setattr(opt, name, False)
        opt.num_threads = threads or ncnn.get_physical_big_cpu_count() or os.cpu_count() or 1
        device = ""
        if compute == "vulkan":
            index = ncnn.get_default_gpu_index() if vulkan_device is None else vulkan_device
            net.set_vulkan_device(index)
            device = f":{index} {vulkan_devices()[index]['name'].split(' (')[0]}"
        with captured_stderr() as said:  # ncnn's own lines (a layer it lacks...) come through ours, cleaned
            loaded = net.load_param(str(directory / PARAM)) == 0 and net.load_model(str(directory / BIN)) == 0
        from scnet_deploy.door import clean_text

        said = "; ".join(line.strip() for line in clean_text(said[0], newlines=True).splitlines() if line.strip())
        if not loaded:
            reason = said[:200] or "no reason given"
            raise ScnetDeployError(f"ncnn could not load the artifact's graph and weights ({reason}); re-export the "
                                   "artifact.")
        if said:
            import warnings

            warnings.warn(f"ncnn, loading the artifact: {said[:300]}", stacklevel=2)
        self.net, self.compute, self.threads = net, compute, opt.num_threads
        super().__init__(precision, name=f"ncnn {'Vulkan' + device if compute == 'vulkan' else 'CPU'} {precision}")

    def _run_one(self, chw: np.ndarray) -> np.ndarray:
        import ncnn

        c, h, w = chw.shape
        # A Mat of its own shape, filled in place: ncnn.Mat(array) wraps the array's memory without ncnn's channel
        # alignment (cstep), which its Vulkan upload reads wrongly wherever h*w is not a multiple of 4.
        mat = ncnn.Mat(w, h, c)
        np.array(mat, copy=False)[...] = chw
        with self.net.create_extractor() as extractor:
            extractor.input(self.input, mat)
            status, out = extractor.extract(self.output)
            if status != 0:
                raise ScnetDeployError(f"{self.name}: ncnn failed on a {h}x{w} input (status {status}).")
            return np.array(out, copy=True)

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        return np.stack([self._run_one(image) for image in lr])

    def close(self) -> None:
        if getattr(self, "net", None) is not None:
            self.net.clear()
        self.net = None


# What SCNet's ncnn graphs are made of (pnnx's conversion of every form), and layers of the same kind; none that
# makes a shape from its parameters (Reshape, Tile, MemoryData) or from data
ALLOWED_OPS = frozenset({"Input", "Convolution", "ConvolutionDepthWise", "Padding", "Crop", "Interp", "PixelShuffle",
                         "Concat", "Split", "Slice", "BinaryOp", "Eltwise", "ReLU", "PReLU", "Clip", "Sigmoid",
                         "Noop", "Cast"})
MAX_PAD = 16  # pixels a Padding layer may add a side (SCNet's shifts pad by one)


def graph_facts(directory: Path, manifest: dict, probe: tuple[int, int]):
    """What ``graph_guard`` checks, from the param text: each layer's type, and each blob's channels, height and
    width worked out layer by layer from the input at ``probe`` (ncnn works shapes out only when it runs)."""
    from scnet_deploy.graph_guard import GraphFacts

    lines = (Path(directory) / PARAM).read_text(errors="replace").split("\n")
    ops: dict[str, int] = {}
    blobs: dict[str, tuple[int, float, float]] = {}  # blob -> (channels, height, width)
    unknown, largest = [], 0
    for line in lines[2:]:
        words = line.split()
        if len(words) < 4:
            continue
        kind, name = words[0], words[1]
        ops[kind] = ops.get(kind, 0) + 1
        try:
            n_in, n_out = int(words[2]), int(words[3])
            ins, outs = words[4:4 + n_in], words[4 + n_in:4 + n_in + n_out]
            params = dict(w.split("=", 1) for w in words[4 + n_in + n_out:] if "=" in w)
            shape = _layer_shape(kind, [blobs[b] for b in ins], params, manifest, probe)
        except (ValueError, KeyError, IndexError, ZeroDivisionError):
            shape = None
        if shape is None:
            unknown.append(name)
            continue
        for b in outs:
            blobs[b] = shape
        largest = max(largest, int(shape[0] * shape[1] * shape[2]))
    return GraphFacts(ops, probe, largest, unknown)


def _layer_shape(kind: str, ins: list, params: dict, manifest: dict, probe: tuple[int, int]):
    """(channels, height, width) of a layer's outputs, or None where its parameters are not SCNet's."""
    if kind == "Input":
        return int(params.get("2", manifest["arch"].get("num_in_ch", 3))), *map(float, probe)
    c, h, w = (max(values) for values in zip(*ins))
    if kind in ("Convolution", "ConvolutionDepthWise"):
        kernel, stride = int(params.get("1", 1)), int(params.get("3", 1))
        return (int(params["0"]), h, w) if kernel <= 7 and stride >= 1 else None
    if kind == "Padding":
        top, bottom, left, right = (int(params.get(k, 0)) for k in ("0", "1", "2", "3"))
        ok = max(top, bottom, left, right) <= MAX_PAD and int(params.get("7", 0)) == 0
        return (c, h + top + bottom, w + left + right) if ok else None
    if kind == "Interp":
        sh, sw = float(params.get("1", 1)), float(params.get("2", 1))
        fixed = int(params.get("3", 0)) or int(params.get("4", 0))
        return (c, h * sh, w * sw) if not fixed and max(sh, sw) <= manifest["arch"]["scale"] else None
    if kind == "PixelShuffle":
        r = int(params.get("0", 1))
        return (c // (r * r), h * r, w * r) if 1 <= r <= manifest["arch"]["scale"] else None
    if kind == "Concat":
        return sum(i[0] for i in ins), h, w
    return c, h, w  # element-wise, split, slice, crop: no larger than their inputs


def load(directory: Path, manifest: dict, runtime: RuntimeOptions = RuntimeOptions()) -> Runner:
    section = manifest.get("ncnn", {})
    return NcnnRunner(Path(directory), manifest.get("precision", "fp32"), section.get("compute"),
                      runtime.threads, runtime.backend("ncnn", Run()).vulkan_device).declare(manifest)
