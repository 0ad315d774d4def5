"""The ``doctor`` verb: which backends this machine can build and run, and the hardware features that matter."""

import os
import platform
import shutil
import subprocess

CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
                "amx_bf16", "amx_fp16", "asimd", "sve")


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "arch": platform.machine(),
            "features": {name: name in flags for name in CPU_FEATURES}}


def gpus() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            return [line.strip() for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return []


def machine() -> dict:
    """Machine description recorded with every benchmark and report."""
    import importlib.metadata

    from scnet_deploy.exporters.registry import backends

    versions = {}
    for dist in ("torch", *(b.distribution for b in backends()), "numpy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    from ._version import __version__

    return {"cpu": cpu_info(), "gpus": gpus(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "versions": {"scnet_deploy": __version__, **versions}}


def machine_line(m: dict) -> str:
    """One line of a ``machine()`` record: CPU, cores, architecture, OS, GPUs, scnet-deploy version."""
    return (f"{m['cpu']['model']} ({m['cpu']['cores']} cores, {m['cpu']['arch']}), {m['os']}, GPUs: "
            f"{', '.join(m['gpus']) or 'none'}, scnet-deploy {m['versions'].get('scnet_deploy')}")


def doctor() -> dict:
    from scnet_deploy.exporters.registry import backends

    rows = []
    for b in backends():
        available = b.available()
        rows.append({"backend": b.name, "format": b.format, "available": available,
                     "version": b.describe_version() if available else None,
                     "install": None if available else b.install,
                     "precisions": list(b.precisions), "compute_units": list(b.compute_units),
                     "engine_built_on_device": b.built_on_device,
                     "description": b.description})
        if available:
            rows[-1].update(b.doctor())  # what the backend lists of itself (ncnn: its Vulkan devices)
    import sys

    return {"backends": rows, **machine(), "executable": sys.executable}
