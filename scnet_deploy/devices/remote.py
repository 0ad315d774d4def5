"""One device: ``bench``, ``validate``'s engine runs and TensorRT's engine build, each run on the device itself over
ssh (``fleet.py`` runs them on several devices at once and merges one table).

Each run copies what it needs (tar over the connection, ``ssh.py``) into a fresh directory on the device
(``mktemp -d`` under ``--remote-dir``, else the device's ``$TMPDIR`` or /tmp), runs the device's own scnet-deploy
there, fetches the results by name and removes the directory, however the run ends (Ctrl-C included). A lost
connection, a missing scnet-deploy or backend on the device, a full disk there: one line, exit 2, nothing written
here.

``bench --on``: the device's latency for each artifact, with the device's description (CPU, GPU, OS, library
versions). ``validate --on``: the LR inputs are made here and shipped as arrays, the device runs them through each
engine (``infer``), and the outputs are scored here against ground truth and the FP32 PyTorch reference, exactly as
``validate`` scores a local engine.
"""

import contextlib
from dataclasses import asdict, dataclass
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from scnet_deploy.exporters.runner import array_key

from .. import door
from ..door import NUMBER, SHAPE, Fields, Int, ListOf, MapOf, Opt, UntrustedInput
from ..errors import ScnetDeployError
from ..manifest import MANIFEST_NAME, read_manifest
from ..options import RemoteOptions
from ..recorded import RecordedOutputs
from .ssh import Connection, Device, RemoteError, last_line

# Caps on what a device sends back besides command output (ssh.py): a bench result, a run record, a manifest; a
# device's outputs are capped by what was sent (door.read_npz), a TensorRT plan and its timing cache here.
MAX_RESULT_BYTES = 4 * 2**20
MAX_PLAN_BYTES = 2 * 2**30


# The deadline of a run on a device where --device-timeout is not given: what was asked, timed generously (a slow
# ARM board over a slow link). The base covers connecting, the device's doctor, copying and fetching.
BASE_DEADLINE_S = 120
PROVISION_S = 600  # building and installing a wheel there
PER_RUN_S = 10  # one inference of one size on a slow device
PER_INPUT_S = 20  # validate: one LR image through one engine
BUILD_S = 1800  # an engine built on the device (TensorRT's tactic search)


def deadline_s(remote: RemoteOptions, work_s: float) -> float:
    """--device-timeout where given, else the base, the work asked and a provisioning if asked."""
    if remote.device_timeout_s is not None:  # checked by fleet.on_each
        return remote.device_timeout_s
    return BASE_DEADLINE_S + work_s + (PROVISION_S if remote.provision else 0)


def bench_work_s(options, models: int) -> float:
    """What ``bench`` with ``options`` asks of a device: every model at every size, its warm-up and timed runs (or
    its --seconds), once more per throughput round."""
    per_size = (options.seconds + 30) if options.seconds else (options.runs + options.warmup + 1) * PER_RUN_S
    rounds = 1 + (options.throughput_rounds if options.mode == "throughput" else 0) + (options.video is not None) \
        + bool(options.profile)
    return models * (len(options.shapes) * per_size * options.batch * rounds + (options.sustained or 0) + 30 * bool(
        options.sustained))


@contextlib.contextmanager
def on_device(device: Device, remote: RemoteOptions, progress, work_s: float = 0):
    """A connection to ``device`` with a fresh run directory there, its scnet-deploy checked (``describe``):
    yields (connection, run directory, the device's ``DeviceSummary``). Every command of the run shares one
    deadline (``deadline_s``: --device-timeout, else derived from ``work_s``, the work asked)."""
    from ..progress import Progress

    conn = Connection(device, remote, deadline_s(remote, work_s))
    with conn.run_directory() as run_dir:
        progress(Progress(f"{device.label}: checking its scnet-deploy"))
        yield conn, run_dir, _device_summary(describe(conn, run_dir))


def _flags(pairs) -> list[str]:
    """``--flag value`` for each (flag, value) whose value is set."""
    return [word for flag, value in pairs if value is not None for word in (flag, str(value))]


def describe(conn: Connection, run_dir: str) -> dict:
    """The device's own description (``doctor --json``: CPU, GPUs, OS, library versions, its Python), after
    checking its scnet-deploy is this version (or installing this version there with ``provision``)."""
    from .._version import __version__

    about = _doctor(conn)
    theirs = about.get("versions", {}).get("scnet_deploy")
    if theirs != __version__:
        if not conn.options.provision:
            raise RemoteError(f"{conn.device.label} has scnet-deploy {theirs or '(unknown, older)'} and this machine "
                              f"{__version__}: results would not compare. Install {__version__} there, or pass "
                              "--provision to install it from a wheel built here.")
        provision(conn, run_dir, about.get("executable"))
        about = _doctor(conn)
        if about.get("versions", {}).get("scnet_deploy") != __version__:
            raise RemoteError(f"{conn.device.label}: --provision installed a wheel, and the device still reports "
                              f"scnet-deploy {about.get('versions', {}).get('scnet_deploy')}; check its PATH.")
    return about


def _doctor(conn: Connection) -> dict:
    out = conn.run(conn.scnet("doctor", "--json"), "asking the device's scnet-deploy what it runs on")
    try:
        return door.parse_json(out.encode(), f"{conn.device.label}: `scnet-deploy doctor --json`", DOCTOR, clean=True)
    except UntrustedInput as exc:
        raise RemoteError(f"{exc} Is scnet-deploy installed there?") from None


def source_checkout() -> Path | None:
    """The source tree this installation runs from (an editable or source install), if any."""
    root = Path(__file__).resolve().parents[2]  # scnet_deploy/devices/remote.py -> the checkout
    return root if (root / "pyproject.toml").exists() else None


def provision(conn: Connection, run_dir: str, python: str | None) -> None:
    """Build a wheel of this installation here and install it with the device's Python."""
    import sys

    root = source_checkout()
    if root is None:
        raise RemoteError("--provision builds a wheel of this installation's source checkout, and this installation "
                          "has none; install the same scnet-deploy version on the device yourself.")
    python = conn.options.remote_python or python
    if not python:
        raise RemoteError(f"{conn.device.label}: its Python is unknown; pass --remote-python.")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                               "-w", tmp, str(root)], capture_output=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode or not wheels:
            raise RemoteError(f"--provision: building the wheel here failed: {last_line(proc.stderr, 'no wheel')}")
        conn.put(run_dir, {wheels[0].name: wheels[0]}, "copying the wheel")
        conn.run([python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
                  f"{run_dir}/{wheels[0].name}"], "installing the wheel (--provision)")


def artifacts_to_ship(models: list[Path], verb: str, trust: tuple = ()) -> list[Path]:
    """The artifact folders to ship, each checked by the door (what is shipped is what its manifest vouches for)
    and named by its real path (a link the user gave, ``latest -> eng/onnx``, ships the folder it points to)."""
    models = [Path(m) for m in models]
    not_artifacts = [str(m) for m in models if not (m / MANIFEST_NAME).exists()]
    if not_artifacts:
        raise ScnetDeployError(f"{verb} --on runs artifact directories on the device, and {not_artifacts} are not; "
                               "export them first (scnet-deploy export CKPT -f FORMAT -o DIR).")
    for m in models:
        door.check_artifact(m)
        if trust:  # --trust: checked here, before it is shipped (the device runs what its manifest hashes)
            from ..signing import check

            check(m, trust, str(m))
    return models


def _shipped(names: dict[str, Path]) -> dict[str, Path]:
    return {name: path.resolve() for name, path in names.items()}


# What a device sends back, checked before use (door.parse_json): only the fields read here.
CPU = Fields({"model": str, "arch": str}, {"cores": Int(0, 2**20)})  # a 400-digit core count: refused
MACHINE = Fields({"cpu": CPU, "gpus": ListOf(str, 256), "os": str, "versions": MapOf(Opt(str), 256)}, {"python": str})
DOCTOR = Fields({"versions": MapOf(Opt(str), 256), "cpu": CPU},
                {"executable": str, "backends": ListOf(Fields({"backend": str}, {"version": str, "available": bool}),
                                                       256)})
# a device's measurements: finite, not negative, bounded (a 401-digit or NaN median is a schema error, in one line)
MEASURE = door.Num(0, 1e9)
OPT_MEASURE = door.Opt(MEASURE)
STAGE = Fields({"stage": str, "ms": MEASURE, "share": door.Num(0, 1.0001), "macs": MEASURE, "bytes": MEASURE,
                "memory_roofline_ms": MEASURE, "compute_roofline_ms": MEASURE, "bound": str},
               {"gflops": OPT_MEASURE, "gbytes_per_s": OPT_MEASURE, "x_memory_roofline": OPT_MEASURE,
                "counter_ms": MEASURE})
PROFILE = Fields({}, {"note": str, "stages": ListOf(STAGE, 1000), "stages_ms": MEASURE, "measured_ms": MEASURE,
                      "coverage": OPT_MEASURE, "unmapped_ms": MEASURE, "stage_names": bool, "runs": Int(0, 10**6),
                      "counters_ms": MEASURE, "reorders_placed_ms": MEASURE})
PEAK = Fields({"estimate_bytes": MEASURE}, {"measured_bytes": OPT_MEASURE, "ratio": OPT_MEASURE, "flag": Opt(str),
                                             "note": str})
LOAD = Fields({}, {"other_cores": OPT_MEASURE, "cpus": door.Opt(Int(0, 2**20)), "flag": Opt(str)})
TIMED_SHAPE = Fields({"shape": SHAPE, "median_ms": MEASURE}, {"profile": PROFILE, "peak_memory": PEAK, "load": LOAD})
WINDOW = Fields({"starts_s": MEASURE, "seconds": MEASURE, "frames": Int(0, 10**9), "images_per_s": MEASURE},
                {"cpu_mhz": OPT_MEASURE, "max_temperature_c": door.Opt(door.Num(-300, 1000)),
                 "power_w": Opt(MapOf(MEASURE, 256)), "joules": OPT_MEASURE, "joules_per_frame": OPT_MEASURE})
SUSTAINED = Fields({"shape": SHAPE, "seconds": MEASURE, "windows": ListOf(WINDOW, 100_000), "compared": str},
                   {"first_images_per_s": OPT_MEASURE, "last_images_per_s": OPT_MEASURE, "last_vs_first": OPT_MEASURE,
                    "throttling_from_s": OPT_MEASURE, "throttling_cpu_mhz": OPT_MEASURE, "sensors": Opt(str)})
VIDEO_VERDICT = Fields({"target_fps": MEASURE, "fps": MEASURE, "fps_with_codec": MEASURE, "real_time": bool,
                        "real_time_with_codec": bool},
                       {"keeps_up_with": ListOf(MEASURE, 10), "keeps_up_with_codec": ListOf(MEASURE, 10)})
BENCH_RESULT = Fields({"models": ListOf(Fields({"name": str, "precision": str, "shapes": ListOf(TIMED_SHAPE, 1000)},
                                               {"baseline": bool, "backend": str, "video": VIDEO_VERDICT,
                                                "sustained": SUSTAINED,
                                                "not_timed": Fields({"reason": str}, {
                                                    "ran_at": ListOf(SHAPE, 1000),
                                                    "profile": Fields({}, {"note": str, "shares": MapOf(
                                                        door.Num(0, 1.0001), 1000)})})}),
                                        1000),
                       "machine": MACHINE},
                      {"video": Opt(Fields({"codec": str, "decode_ms": MEASURE, "encode_ms": MEASURE})),
                       "rooflines": Opt(Fields({"gflops": MEASURE, "gbytes_per_s": MEASURE}, {"how": str}))})
RUN_RECORD = Fields({"name": str, "backend": str, "precision": str})


def _remote_names(models: list[Path]) -> dict[str, Path]:
    """Safe names on the device (m0, m1, ...): local names may hold spaces, quotes or ';'."""
    return {f"m{i}": m for i, m in enumerate(models)}


def _with_local_names(entry: dict, name: str, local: Path) -> dict:
    prefix = f"{name}: "
    entry = dict(entry)
    entry["path"] = str(local)
    if entry.get("name", "").startswith(prefix):
        entry["name"] = f"{local.name}: {entry['name'][len(prefix):]}"
    return entry


# --- bench ---------------------------------------------------------------------------------------------------------

def _runtime_args(runtime) -> list[str]:
    """The device's CLI flags for ``runtime``: threads, and each backend's own runtime options as its flags."""
    from ..options import cli_args

    return _flags((("--threads", runtime.threads),)) + [a for opts in runtime.backends.values() for a in cli_args(opts)]


def _bench_args(options) -> list[str]:
    args = ["--size", ",".join(f"{h}x{w}" for h, w in options.shapes), "--warmup", str(options.warmup),
            "--batch", str(options.batch), "--no-baselines", "--mode", options.mode]
    args += ["--seconds", str(options.seconds)] if options.seconds else ["--runs", str(options.runs)]
    args += ["--profile"] if options.profile else []
    args += ["--sustained", f"{options.sustained:g}s"] if options.sustained else []
    return args + _runtime_args(options.runtime) + _flags((
        ("--inflight", options.inflight), ("--video", "{}x{}@{:g}".format(*options.video) if isinstance(options.video, tuple) else options.video),
        ("--max-memory", options.max_memory_mb)))


def bench_on_device(device: Device, models: list[Path], options, remote: RemoteOptions, progress) -> dict:
    from ..progress import Progress

    models = artifacts_to_ship(models, "bench", options.runtime.trust)
    names = _remote_names(models)
    with on_device(device, remote, progress, bench_work_s(options, len(models))) as (conn, run_dir, summary):
        progress(Progress(f"{device.label}: copying {len(models)} artifact(s)"))
        conn.put(run_dir, _shipped(names), "copying the artifacts")
        progress(Progress(f"{device.label}: benchmarking"))
        conn.run(conn.scnet("bench", *[f"{run_dir}/{n}" for n in names], "--json", f"{run_dir}/bench.json",
                            *_bench_args(options)), "benchmarking")
        with tempfile.TemporaryDirectory() as tmp:
            path = conn.fetch(run_dir, "bench.json", Path(tmp), MAX_RESULT_BYTES, "fetching the results")
            result = door.load_json(path, MAX_RESULT_BYTES, f"{device.label}: its bench result", BENCH_RESULT,
                                    clean=True)
    if len(result["models"]) != len(names):
        raise RemoteError(f"{device.label}: its bench result has {len(result['models'])} model(s) for the "
                          f"{len(names)} sent; refused.")
    result["models"] = [_with_local_names(m, n, names[n]) for m, n in zip(result["models"], names)]
    result["device"] = {"url": device.url, "label": device.label, **summary.to_dict()}
    return result


@dataclass(frozen=True)
class DeviceSummary:
    """What a device says it is (its ``doctor --json``, checked by the door): recorded beside each result from it
    (``to_dict``)."""

    cpu: dict | None
    gpus: list[str] | None
    os: str | None
    python: str | None
    versions: dict[str, str | None] | None
    executable: str | None
    backends: dict[str, str]  # available backend -> version

    def to_dict(self) -> dict:
        return asdict(self)


def _device_summary(about: dict) -> DeviceSummary:
    return DeviceSummary(about.get("cpu"), about.get("gpus"), about.get("os"), about.get("python"),
                         about.get("versions"), about.get("executable"),
                         {b["backend"]: b["version"] for b in about.get("backends", []) if b.get("available")})


class DeviceRun(NamedTuple):
    """One device's run of artifacts for ``validate``: each artifact's outputs, and what the device is."""

    outputs: list[RecordedOutputs]
    summary: DeviceSummary


# --- validate ------------------------------------------------------------------------------------------------------

def lr_inputs(options) -> dict[str, np.ndarray]:
    """Every LR input ``validate`` will score, as the float32 CHW arrays it runs, keyed by their bytes."""
    from ..imaging.datasets import load_dataset
    from ..imaging.images import to_float_chw
    from ..imaging.metrics import SSIM_WINDOW

    arrays = {}
    for folder in options.folders():
        for pair in load_dataset(folder, options.scale, options.limit).scorable(options.scale, SSIM_WINDOW):
            x = to_float_chw(pair.lr)
            arrays[array_key(x)] = x
    return arrays


def outputs_on_device(device: Device, models: list[Path], inputs: Path, arrays: dict[str, np.ndarray], options,
                      remote: RemoteOptions, progress) -> DeviceRun:
    """Run each artifact on the LR ``arrays`` (saved in ``inputs``) on ``device``; fetch its outputs, each checked
    to be exactly one float32 array of the expected shape per input sent (door.read_npz), and its run record."""
    from ..progress import Progress

    names = _remote_names(models)
    found = []
    work_s = len(models) * (len(arrays) + 1) * PER_INPUT_S
    with on_device(device, remote, progress, work_s) as (conn, run_dir, summary):
        progress(Progress(f"{device.label}: copying {len(models)} artifact(s) and the LR inputs"))
        conn.put(run_dir, {**_shipped(names), "inputs.npz": inputs}, "copying the artifacts and inputs")
        for name, local in names.items():
            progress(Progress(f"{device.label}: running {local.name}"))
            conn.run(conn.scnet("infer", f"{run_dir}/{name}", f"{run_dir}/inputs.npz", "-o", f"{run_dir}/{name}.npz",
                                "--json", f"{run_dir}/{name}.json",
                                *_flags((("--max-memory", options.max_memory_mb),)),
                                *_runtime_args(options.runtime)), f"running {local.name}")
        with tempfile.TemporaryDirectory() as tmp:
            for name, local in names.items():
                arch = read_manifest(local)["arch"]
                expected = {key: (arch.get("num_out_ch", 3), x.shape[1] * arch["scale"], x.shape[2] * arch["scale"])
                            for key, x in arrays.items()}
                what = f"{device.label}: the outputs of {local.name}"
                npz = conn.fetch(run_dir, f"{name}.npz", Path(tmp), door.npz_limit(expected), "fetching the outputs")
                record = conn.fetch(run_dir, f"{name}.json", Path(tmp), MAX_RESULT_BYTES, "fetching the outputs")
                ran = door.load_json(record, MAX_RESULT_BYTES, f"{device.label}: the run record of {local.name}",
                                     RUN_RECORD, clean=True)
                found.append(RecordedOutputs(local, device.label, door.read_npz(npz, expected, what), ran))
    return DeviceRun(found, summary)


# --- export --on: an engine built where it runs ---------------------------------------------------------------------

def build_on_device(device: Device, backend, workdir: Path, reference, remote: RemoteOptions, progress) -> dict:
    """Ship the artifact in ``workdir`` of ``backend`` (one built on its device: its verified graph, build script,
    manifest; ``Backend.device_build``) and ``reference`` (``runner.ShippedReference``: the inputs and PyTorch FP32
    outputs made here) to ``device``; build and verify the engine there (``build-engine``); bring back, file by
    file, only the files the build returns (the engine, its timing cache), hashed here against the device's
    manifest, whose verification record must be present and within tolerance. Returns the artifact's manifest (this
    machine's, with the device's engine record, verification and hashes added)."""
    from ..manifest import write_manifest
    from ..progress import Progress

    build, ours = backend.device_build(), read_manifest(workdir)
    with on_device(device, remote, progress, BUILD_S) as (conn, run_dir, summary), \
            tempfile.TemporaryDirectory() as tmp:
        reference.save(Path(tmp) / "verification.npz")
        progress(Progress(f"{device.label}: copying the {backend.format} graph and its verification set"))
        conn.put(run_dir, {"artifact": workdir, "verification.npz": Path(tmp) / "verification.npz"},
                 f"copying the {backend.format} artifact")
        progress(Progress(f"{device.label}: building and verifying the engine"))
        conn.run(conn.scnet("build-engine", f"{run_dir}/artifact", "--verification", f"{run_dir}/verification.npz"),
                 f"building and verifying the {backend.format} engine")
        fetched = Path(tmp) / "fetched"
        fetched.mkdir()
        theirs = _fetch_built(device, conn, f"{run_dir}/artifact", fetched, build, ours)
        verification = _checked_verification(device, theirs, ours["precision"], len(reference.inputs),
                                             door.sha256_regular(Path(tmp) / "verification.npz", MAX_PLAN_BYTES,
                                                                 "the verification set"), build["engine"])
        for name in build["returns"]:
            (fetched / name).replace(workdir / name)
    engine = {k: theirs[backend.name].get(k) for k in ("engine", "version", "generation", "engine_note")}
    manifest = {**ours, backend.name: {**ours[backend.name], **engine,
                                       "built_on": {"device": device.label, **summary.to_dict()}},
                "verification": verification, "files": {**ours["files"], **{n: theirs["files"][n]
                                                                            for n in build["returns"]}}}
    manifest.pop("manifest_version", None)
    return write_manifest(workdir, manifest)


def _fetch_built(device: Device, conn, artifact: str, fetched: Path, build: dict, ours: dict) -> dict:
    """The device's manifest of the artifact it built, and the files it returns, each checked against it; the files
    shipped from here must be unchanged."""
    doing = "fetching the built engine"
    conn.fetch(artifact, MANIFEST_NAME, fetched, door.MAX_MANIFEST_BYTES, doing)
    theirs = door.read_manifest(fetched, f"{device.label}: the built artifact")
    expected = {*build["ships"], *build["returns"]}
    if set(theirs.get("files") or {}) != expected:
        raise RemoteError(f"{device.label}: the built artifact lists {sorted(theirs.get('files') or {})[:6]}, "
                          f"not {sorted(expected)}; refused.")
    for name in build["returns"]:
        got = door.sha256_regular(conn.fetch(artifact, name, fetched, MAX_PLAN_BYTES, doing), MAX_PLAN_BYTES, name)
        if got != theirs["files"][name]:
            raise RemoteError(f"{device.label}: {name} does not match the sha256 its manifest gives; refused.")
    for name in build["ships"]:  # shipped from here: the device must not have changed them
        if theirs["files"][name] != ours["files"][name]:
            raise RemoteError(f"{device.label}: the built artifact's {name} is not the one sent; refused.")
    return theirs


VERIFICATION = Fields({"passed": bool, "precision": str, "max_abs_diff": NUMBER, "min_psnr_vs_fp32_db": NUMBER,
                       "cases": ListOf(Fields({"max_abs_diff": NUMBER, "psnr_vs_fp32_db": NUMBER}), 1000),
                       "rule": str, "runtime": str, "reference_sha256": door.HEX64, "engine_sha256": door.HEX64})


def _checked_verification(device: Device, manifest: dict, precision: str, inputs: int, shipped: str,
                          engine: str) -> dict:
    """The device's verification record of the engine it built, if it is present, made of the set we shipped (its
    sha256: ``shipped``) and of the engine that came back, of this precision, over every input shipped, and within
    this precision's tolerance (the rule ``runner.verify_runner`` applies)."""
    from scnet_deploy.exporters.runner import within_tolerance

    record = manifest.get("verification")
    try:
        door.check_schema(record, VERIFICATION, "verification")
    except ValueError as exc:
        raise RemoteError(f"{device.label}: the built engine comes without a verification record ({exc}); "
                          "refused.") from None
    record = door.clean_strings(record)
    within = within_tolerance(precision, record["max_abs_diff"], record["min_psnr_vs_fp32_db"])
    if record["reference_sha256"] != shipped or record["engine_sha256"] != manifest["files"][engine]:
        raise RemoteError(f"{device.label}: the built engine's verification record is not of this engine and the "
                          "verification set sent with it; refused.")
    if not (record["passed"] and record["precision"] == precision and len(record["cases"]) == inputs and within):
        raise RemoteError(f"{device.label}: the built engine's verification ({precision}: max abs diff "
                          f"{record['max_abs_diff']:.3g}, PSNR vs FP32 {record['min_psnr_vs_fp32_db']:.1f} dB over "
                          f"{len(record['cases'])} of {inputs} inputs) is not within tolerance; refused.")
    return record
