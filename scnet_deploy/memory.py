"""The memory model: how much memory running a model on an input takes, before it runs, and how much there is.

SCNet's peak is its x``scale`` tail: ``num_feat``-channel float32 maps at the output resolution, ``num_feat * scale^2
* 4`` bytes per LR pixel each (236 MB for 64 channels at 720p). How many of them a backend holds at once was measured
(``benchmarks/memory_model.py``, SCNet-T x4, peak RSS over the loaded model at three sizes): PyTorch eager 3.1-3.4,
ONNX Runtime 2.7, OpenVINO 2.1 (f32 and INT8 alike: its tail runs in f32; Intel Xeon with AMX and AMD EPYC without
measure the same); the coefficients below round those up, PyTorch's with a margin for its allocator.
Every verb that runs a model compares this estimate with ``--max-memory`` (default: ``DEFAULT_SHARE`` of what this
process may still use: the smallest of the machine's available memory, its cgroup's room and RLIMIT_AS) and tiles
exactly, or refuses in one line, instead of being killed.
"""

import math
import os
import resource
from pathlib import Path

from .errors import ScnetDeployError
from .options import MB

# measured, rounded up (see the module doc); PyTorch's 3.6 met its peak exactly at 180x320 on both CPU classes
# (estimate / measured 1.00-1.04, benchmarks/results/memory_model.md), with no room for glibc's retained memory
# A backend's own coefficient is on its registry record (``Backend.live_maps``).
PYTORCH_MAPS = 4.0
UNKNOWN_BACKEND_MAPS = PYTORCH_MAPS  # a backend not measured: as PyTorch


def live_maps(backend: str) -> float:
    """How many output-resolution maps ``backend`` ("pytorch", or a registered backend's name) holds at once."""
    if backend == "pytorch":
        return PYTORCH_MAPS
    from scnet_deploy.exporters.registry import backends

    found = {b.name: b.live_maps for b in backends()}.get(backend)
    return UNKNOWN_BACKEND_MAPS if found is None else found
DEFAULT_SHARE = 0.7  # of the available memory: headroom for the page cache, the images and other processes


class MemoryLimitError(ScnetDeployError):
    """A run would not fit the memory limit and the verb does not tile."""


def bytes_per_lr_pixel(arch: dict, backend: str) -> int:
    """Peak bytes per LR pixel of one image: the backend's live feature maps at the output resolution, plus the
    float32 input and output arrays."""
    scale2 = arch["scale"] ** 2
    maps = live_maps(backend)
    io = (arch.get("num_in_ch", 3) + 2 * arch.get("num_out_ch", 3) * scale2) * 4
    return math.ceil(maps * arch["num_feat"] * scale2 * 4 + io)


def estimate_bytes(arch: dict, backend: str, height: int, width: int, batch: int = 1) -> int:
    """Peak memory, beyond the loaded model, of one inference at LR ``height`` x ``width`` (and ``batch``)."""
    return bytes_per_lr_pixel(arch, backend) * height * width * batch


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int | None:
    """What this process's memory cgroup (v2, or v1's memory controller) still allows, or None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # v2
            base = Path("/sys/fs/cgroup") / rel
            limit, used = _read_int(base / "memory.max"), _read_int(base / "memory.current")
            cache = _stat(base / "memory.stat", "inactive_file")
        elif "memory" in controllers.split(","):  # v1
            base = Path("/sys/fs/cgroup/memory") / rel
            limit, used = _read_int(base / "memory.limit_in_bytes"), _read_int(base / "memory.usage_in_bytes")
            cache = _stat(base / "memory.stat", "total_inactive_file")
        else:
            continue
        if limit is not None and used is not None and limit < 2**60:
            rooms.append(limit - (used - cache))  # the working set: inactive page cache is reclaimed before a kill
    return min(rooms) if rooms else None


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _address_space_room() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return soft
    return soft - pages * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> int | None:
    """What this process may still allocate: the smallest of the machine's available memory, its cgroup's room and
    its address-space limit (None where none of them can be read)."""
    known = [v for v in (_meminfo_available(), _cgroup_room(), _address_space_room()) if v is not None]
    return max(0, min(known)) if known else None


def limit_bytes(max_memory_mb: int | None) -> int | None:
    """The limit a verb holds to: ``--max-memory`` where given, else ``DEFAULT_SHARE`` of what is available."""
    if max_memory_mb is not None:
        if max_memory_mb < 1:
            raise ScnetDeployError(f"--max-memory must be at least 1 MB, got {max_memory_mb}.")
        return max_memory_mb * MB
    room = available_bytes()
    return None if room is None else int(room * DEFAULT_SHARE)


def largest_fitting_shape(arch: dict, backend: str, height: int, width: int, limit: int,
                          batch: int = 1) -> tuple[int, int]:
    """The largest LR shape of ``height``:``width``'s aspect whose estimate fits ``limit``."""
    pixels = limit // (bytes_per_lr_pixel(arch, backend) * batch)
    factor = math.sqrt(pixels / (height * width))
    return max(1, int(height * factor)), max(1, int(width * factor))


def describe(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{nbytes / MB:.0f} MB"


def require_fits(arch: dict, backend: str, name: str, height: int, width: int, limit: int | None,
                 batch: int = 1) -> None:
    """Refuse, in one line with the estimate and the largest shape that fits, a run that would not fit ``limit``."""
    need = estimate_bytes(arch, backend, height, width, batch)
    if limit is None or need <= limit:
        return
    h, w = largest_fitting_shape(arch, backend, height, width, limit, batch)
    raise MemoryLimitError(
        f"{name} at {height}x{width} (batch {batch}) needs about {describe(need)} for activations, over the "
        f"{describe(limit)} memory limit (--max-memory; default {DEFAULT_SHARE:.0%} of what is available); the "
        f"largest shape of that aspect that fits is {h}x{w}: pass a smaller --size, or upscale, which tiles.")


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux), or None where it cannot be read."""
    return _status_kb("VmRSS")


def reset_peak() -> bool:
    """Set this process's resident high-water mark to what it holds now (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_resident_bytes() -> int | None:
    """This process's resident high-water mark (since the last ``reset_peak``)."""
    return _status_kb("VmHWM")


PEAK_FLAG_RATIO = 1.5  # measured over (or under) the estimate by more than this: the memory model is off here
PEAK_FLAG_FLOOR = 64 * MB  # below this, a runtime's fixed allocations (arenas, pools) decide, not the model


def peak_record(measured: int | None, estimate: int) -> dict:
    """A measured peak (bytes beyond what the process held before the runs) beside the memory model's estimate."""
    if measured is None:
        return {"measured_bytes": None, "estimate_bytes": estimate, "ratio": None, "flag": None,
                "note": "this machine does not expose the resident high-water mark (/proc/self/clear_refs)"}
    ratio = measured / estimate if estimate else None
    off = ratio is not None and (ratio > PEAK_FLAG_RATIO or ratio < 1 / PEAK_FLAG_RATIO) \
        and max(measured, estimate) >= PEAK_FLAG_FLOOR
    return {"measured_bytes": measured, "estimate_bytes": estimate, "ratio": ratio,
            "flag": (f"measured {ratio:.2f}x the memory model's estimate" if off else None)}
