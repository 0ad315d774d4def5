"""The device layer, above the verbs: a verb's own options and a list of devices (``--on``); the verb run here
(``local``) or on each device over ssh (``remote.py``), the devices ``--jobs`` at a time, and one table back.

A device that fails is reported (its row says why) and the others go on; every device failing is a ``FleetError``.
The verbs themselves (``bench``, ``validate``, ``export``, ``pipeline``) never know where they run.
"""

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from ..errors import ExportError, ScnetDeployError
from ..options import RemoteOptions
from ..progress import reporter
from .ssh import CANCEL, Device, RemoteError, parse_device

LOCAL = "local"  # --on local: this machine, run by the verb itself


class FleetError(RemoteError):
    """Every device asked for failed: one line with each device's reason."""


class FleetOutcome(NamedTuple):
    results: dict  # label -> what the device's run returned, in the order asked
    failed: dict[str, str]  # label -> why it failed (the others went on)


def on_each(urls, run_one, remote: RemoteOptions) -> FleetOutcome:
    """``run_one(device)`` on each device of ``urls`` (``local`` left out: the caller runs the verb here itself), at
    most ``remote.jobs`` at a time: ({label: result}, {label: why it failed}) in the order asked. A device that fails
    does not stop the others; all of them failing is a ``FleetError`` (one line naming each)."""
    devices = [parse_device(url) for url in urls if url != LOCAL]  # a malformed URL stops everything, up front
    if remote.jobs < 1:
        raise ScnetDeployError(f"--jobs must be at least 1, got {remote.jobs}.")
    if remote.device_timeout_s is not None and not 0 < remote.device_timeout_s < 10**7:
        raise ScnetDeployError(f"--device-timeout must be a number of seconds above 0, got {remote.device_timeout_s}.")
    outcomes = {}

    def attempt(device: Device) -> None:
        try:
            outcomes[device.label] = (run_one(device), None)
        except ScnetDeployError as exc:
            outcomes[device.label] = (None, str(exc))

    CANCEL.clear()
    if len(devices) == 1 or remote.jobs == 1:
        for device in devices:
            attempt(device)
    else:
        pool = ThreadPoolExecutor(min(remote.jobs, len(devices)), thread_name_prefix="device")
        futures = [pool.submit(attempt, device) for device in devices]
        try:
            for future in futures:
                future.result()
        except KeyboardInterrupt:
            CANCEL.set()  # every device's command ends now; each removes its run directory before the exit
            _await_cleanups(futures)
            raise
        finally:
            pool.shutdown(wait=False)
    results = {d.label: outcomes[d.label][0] for d in devices if outcomes[d.label][1] is None}
    failed = {d.label: outcomes[d.label][1] for d in devices if outcomes[d.label][1] is not None}
    if devices and not results and LOCAL not in urls:
        if len(failed) == 1:
            raise RemoteError(next(iter(failed.values())))
        raise FleetError(f"every device failed: {'; '.join(f'{label}: {why}' for label, why in failed.items())}")
    return FleetOutcome(results, failed)


def _await_cleanups(futures) -> None:
    """Wait (a second Ctrl-C held) while each device's thread removes its run directory. Not ``Thread.join``: a
    join cut by an interrupt marks a live thread stopped (Python 3.11), and the interpreter then exits under it."""
    import time
    from concurrent.futures import wait

    from .ssh import CLEANUP_S

    deadline = time.monotonic() + 2 * CLEANUP_S + 5
    while time.monotonic() < deadline and not all(f.done() for f in futures):
        try:
            wait(futures, timeout=0.5)
        except KeyboardInterrupt:
            pass  # held: the removal goes on


def labels_of(urls) -> list[str]:
    return [LOCAL if url == LOCAL else parse_device(url).label for url in urls]


# --- bench ---------------------------------------------------------------------------------------------------------

def bench_on(models: list[Path], options, devices, remote: RemoteOptions = RemoteOptions(), progress=None) -> dict:
    """``bench`` with ``options`` on each of ``devices`` (``local`` = here; the others ``remote.jobs`` at a time):
    {"devices": {label: bench result}, "failed": {label: why}, "table": rows of (model, shape, {device: median ms})}."""
    from dataclasses import replace

    from ..bench import bench, video_target
    from .remote import bench_on_device

    say = reporter(progress)
    results = {}
    if LOCAL in devices:  # first and alone: nothing else runs here while it is timed
        results[LOCAL] = bench(models, options, progress)
    # a video file stays here: a device is given its output size and frame rate, and times H.264 at that size
    there = replace(options, video=video_target(models, options.video)) if options.video is not None else options
    found, failed = on_each(devices, lambda device: bench_on_device(device, models, there, remote, say), remote)
    results.update(found)
    results = {label: results[label] for label in labels_of(devices) if label in results}
    return {"devices": results, "failed": failed, "table": device_table(results)}


def device_table(devices: dict) -> list[dict]:
    """One row per model (by path) and shape, the median ms on each device."""
    rows: dict = {}
    for label, result in devices.items():
        for m in result["models"]:
            if m.get("baseline"):
                continue
            for s in m["shapes"]:
                key = (m["path"], tuple(s["shape"]))
                row = rows.setdefault(key, {"model": Path(m["path"]).name, "path": m["path"],
                                            "precision": m["precision"], "shape": s["shape"], "median_ms": {}})
                row["median_ms"][label] = s["median_ms"]
    return list(rows.values())


# --- validate ------------------------------------------------------------------------------------------------------

def validate_on(models: list[Path], options, devices, remote: RemoteOptions = RemoteOptions(),
                progress=None) -> dict:
    """``validate`` with each artifact run on each of ``devices`` (``local`` = here) and every output scored here:
    one table with a row per artifact and device; drift against the FP32 PyTorch reference computed here."""
    from dataclasses import replace

    from ..errors import require_export_stack
    from ..infer import write_arrays
    from ..runtime import find_checkpoint
    from ..validate import validate
    from .remote import artifacts_to_ship, lr_inputs, outputs_on_device

    say = reporter(progress)
    models = [Path(m) for m in models]
    checkpoints = [m for m in models if m.is_file()]
    artifacts = artifacts_to_ship([m for m in models if not m.is_file()], "validate", options.runtime.trust)
    reference = Path(options.reference) if options.reference else find_checkpoint(models)
    if reference is None:
        raise ScnetDeployError("validate --on measures drift here, against the FP32 PyTorch reference: pass the "
                               "checkpoint as a MODEL or with --reference.")
    require_export_stack("validate --on (its FP32 reference runs here)")
    sources: list = [*checkpoints]
    described, failed = {}, {}
    with tempfile.TemporaryDirectory(prefix="scnet-deploy-on-") as tmp:
        inputs, arrays = Path(tmp) / "inputs.npz", lr_inputs(options)
        write_arrays(arrays, inputs)
        if LOCAL in devices:
            from ..doctor import machine

            sources += artifacts
            described[LOCAL] = machine()
        found, failed = on_each(devices, lambda device: outputs_on_device(
            device, artifacts, inputs, arrays, options, remote, say), remote)
        for label, run in found.items():
            sources += run.outputs
            described[label] = run.summary.to_dict()
    result = validate(sources, replace(options, reference=reference), progress)
    result["devices"] = described  # each device's own description (CPU, GPUs, OS, library versions)
    result["failed_devices"] = failed  # label -> why (the others went on)
    return result


# --- export: an engine built where it runs ---------------------------------------------------------------------------

def export_on(checkpoint, options, devices, remote: RemoteOptions = RemoteOptions(), progress=None):
    """``export`` of a backend whose engine is built on the device that runs it (``Backend.built_on_device``:
    TensorRT, for its GPU and version), on the one device it is for: the artifact is made here, its engine there
    (``remote.build_on_device``)."""
    from scnet_deploy.exporters.registry import backend_for_format, backends

    from ..export import export, verification_set
    from .remote import build_on_device

    formats = options.formats()
    on_device = [b.format for b in backends() if b.built_on_device]
    if len(formats) != 1 or formats[0] not in on_device or len(devices) != 1 or LOCAL in devices:
        raise ExportError(f"export --on builds an engine on the one device it is for: --format "
                          f"{' or '.join(on_device)} --on ssh://user@host. Other formats build here and run anywhere; "
                          "check them on the device with bench/validate --on.")
    device = parse_device(devices[0])
    backend = backend_for_format(formats[0])
    from .ssh import Connection

    # a host that does not resolve or refuses: one line now, not after the export's build
    Connection(device, remote).run(["true"], "reaching it before building the artifact it is to build")

    def finish(session, workdir: Path, manifest: dict) -> dict:
        return build_on_device(device, backend, workdir, verification_set(session, manifest), remote,
                               session.progress)

    return export(checkpoint, options, progress, finish=finish)


# --- pipeline: every runnable engine also timed on the devices -----------------------------------------------------

def pipeline_on(checkpoint, options, devices, remote: RemoteOptions = RemoteOptions(), progress=None) -> dict:
    """``pipeline`` here, then every engine it built timed on each of ``devices`` (bench on the device itself): the
    rows go into its report and ``summary.json`` (``on_devices``)."""
    from ..bench import BenchOptions
    from ..manifest import write_results_json
    from ..pipeline import pipeline

    summary = pipeline(checkpoint, options, progress)
    say = reporter(progress)
    runnable = [Path(p) for p in summary["built"].values()]
    if not runnable:
        return summary
    summary["on_devices"] = bench_on(runnable, BenchOptions(shapes=options.shapes, runs=options.runs, warmup=0,
                                                            baselines=False, max_memory_mb=options.max_memory_mb),
                                     devices, remote, progress=lambda event: say(event.prefixed("on devices")))
    report = Path(summary["report"])
    report.write_text(report.read_text() + "\n" + "\n".join(device_lines(summary["on_devices"])))
    write_results_json(summary, Path(options.output) / "summary.json")
    return summary


def device_lines(on_devices: dict | None) -> list[str]:
    """``--on``: every runnable engine's median ms on each device (bench on the device itself), and what each
    device is, as it describes itself."""
    if not on_devices:
        return []
    labels = list(on_devices["devices"])
    lines = ["On devices (median ms, bench run on each device over ssh):", "",
             "| engine | precision | LR | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]
    for r in on_devices["table"]:
        cells = [f"{r['median_ms'][d]:.1f}" if d in r["median_ms"] else "-" for d in labels]
        lines.append(f"| {r['model']} | {r['precision']} | {r['shape'][0]}x{r['shape'][1]} | " + " | ".join(cells)
                     + " |")
    lines.append("")
    from ..doctor import machine_line

    lines += [f"- `{label}`: {machine_line(result['machine'])}" for label, result in on_devices["devices"].items()]
    lines += [f"- `{label}` failed: {why}" for label, why in (on_devices.get("failed") or {}).items()]
    return lines + [""]
