"""``upscale --ray ADDRESS``: a folder of images or a video upscaled on a Ray cluster (the ``ray`` extra), with
outputs identical to one machine's.

- The model travels through Ray's object store: an artifact is checked here (``door.check_artifact``), its files
  are written on each node and checked again there by their sha256 before the engine is loaded, once per actor; a
  checkpoint is checked by its sha256 the same way.
- Actors are sized by the engine's memory model (the largest input or frame run whole, or within ``--max-memory``
  in exact tiles) and by threads (``--threads``, default 1 an actor); there are as many as the cluster's nodes
  hold, spread over them.
- Images: inputs are read and outputs written where they are (a filesystem every node sees), each by the same code
  as on one machine (``upscale.upscale_item``); a file that fails is reported and the rest go on.
- A video is split into segments at keyframes; actors decode and upscale their segments and hand the frames back
  in order to this machine, which encodes them with the input's audio and subtitles: the file is the one a
  one-machine run writes, byte for byte (the same frames through the same encoder). Inference, the expensive part,
  is spread; decoding is per segment, encoding stays here.

The cluster's nodes are trusted (they run our code and see the files): README's Safety says so. Ray's usage
statistics are off. TensorRT engines are refused (a plan runs on the GPU kind it was built for; building them on
the nodes is not done yet), and object storage is not tested here.
"""

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ScnetDeployError
from ..options import MB
from ..progress import STEP, Progress, reporter

ACTOR_START_S = 600  # an actor loads its engine (a checkpoint: PyTorch) within this, or the run stops
SEGMENTS_PER_ACTOR = 4  # a video is cut into about this many segments an actor, so a slow node does not hold the end


@dataclass(frozen=True)
class RayOptions:
    address: str  # "local": start Ray here; "auto": the cluster this machine is part of; else its address
    actors: int | None = None  # None: as many as the nodes hold (CPUs / threads, memory / the memory model)


def _require_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's C++ core logs a warning line to the terminal for every actor pool (constructor arguments in the object
    # store); the run's own errors still come through Python
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # a "(raylet)" line that still reaches the terminal: no escapes
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ScnetDeployError("--ray needs Ray with Ray Data, which is not installed: pip install "
                               "'ray[data]>=2.60'.") from None
    return ray


def connect(address: str):
    """Ray, connected to ``address`` (``local`` starts a Ray instance here, stopped when we disconnect), quiet."""
    ray = _require_ray()
    if ray.is_initialized():
        return ray
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if address != "local":
        _require_reachable(address)
    try:
        if address == "local":  # a new instance here, whatever RAY_ADDRESS says
            ray.init(address="local", include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ScnetDeployError(f"--ray {address}: cannot connect ({str(exc).splitlines()[0][:160]}); start the "
                               "cluster first (docs/cluster.md) or pass --ray local.") from None
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # a failure is our one line, not its traceback
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # frames and results come back in input order
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.raise_original_map_exception = True  # our one-line errors, not Ray's wrapping
    context.wait_for_min_actors_s = ACTOR_START_S  # every actor up (or a one-line error) before work is handed out
    return ray


def _map(ray, rows: list[dict], worker, actors: int, threads: int, need: int, args: tuple):
    """``rows`` through ``actors`` instances of ``worker(*args)``, spread over the nodes, each reserving
    ``threads`` CPUs and ``need`` bytes; two rows in flight an actor (the next one ready when one ends)."""
    import warnings

    with warnings.catch_warnings():  # ray_remote_args_fn is deprecated, and the only way to SPREAD an actor pool
        warnings.simplefilter("ignore")
        return ray.data.from_items(rows).map_batches(
            worker, batch_size=1, num_cpus=threads, memory=need, fn_constructor_args=args,
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
            ray_remote_args_fn=lambda: {"scheduling_strategy": "SPREAD"})


def _require_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A one-line error now, rather than Ray retrying an address nothing answers at for minutes: ``auto`` is the
    cluster this machine is part of (``RAY_ADDRESS``, else the address Ray's ``ray start`` left in its temp folder)."""
    import socket
    import tempfile

    where = address
    if address == "auto":
        recorded = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        where = os.environ.get("RAY_ADDRESS") or (recorded.read_text().strip() if recorded.is_file() else "")
        if not where:
            raise ScnetDeployError("--ray auto: this machine is not part of a Ray cluster (no RAY_ADDRESS, no "
                                   "'ray start' here); start one (docs/cluster.md), pass its address, or --ray local.")
    if where.startswith("ray://"):
        return  # Ray Client: its own timeout applies
    host, _, port = where.rpartition(":")
    try:
        conn = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s)
    except (OSError, ValueError):
        raise ScnetDeployError(f"--ray {address}: nothing answers at {where!r}; start the cluster first "
                               "(docs/cluster.md: ray start --head), check the address, or pass --ray local.") from None
    with conn:
        if not _speaks_grpc(conn):
            raise ScnetDeployError(f"--ray {address}: something answers at {where!r}, and it is not a Ray cluster "
                                   "(its GCS speaks gRPC; the default port is 6379, `ray status` shows the address); "
                                   "check the address, or pass --ray local.")


# HTTP/2's client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS) answers with its own SETTINGS frame
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _speaks_grpc(conn) -> bool:
    """Whether the server on ``conn`` answers HTTP/2's preface with a SETTINGS frame, as gRPC servers do (an HTTP/1
    server, a database or a closed socket does not), within the connection's timeout."""
    try:
        conn.sendall(HTTP2_PREFACE)
        header = b""
        while len(header) < 9:
            chunk = conn.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except OSError:
        return False
    return header[3] == 0x04  # the frame's type: SETTINGS


# --- the model, carried to the nodes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Payload:
    """A model's files as bytes: an artifact (its manifest and files) or one checkpoint file, with their sha256."""

    name: str  # the artifact folder's or the checkpoint's name
    files: dict  # relative name -> bytes
    sha256: dict  # relative name -> hex digest
    artifact: bool


def pack(model: Path) -> Payload:
    """The model's files, checked here first (an artifact through the door, every file against its manifest)."""
    from ..door import MANIFEST_NAME, MAX_ARTIFACT_FILE_BYTES, check_artifact, read_regular

    model = Path(model)
    if model.is_dir():
        manifest = check_artifact(model)
        from scnet_deploy.exporters.registry import backends, get_backend

        backend = get_backend(manifest.get("backend"))
        if not backend.runs_on_ray:
            others = ", ".join(b.format for b in backends() if b.runs_on_ray)
            raise ScnetDeployError(f"--ray does not run {backend.format} artifacts: {backend.description} is built "
                                   f"for the one device kind it runs on; run it with --on ssh://NODE, or export "
                                   f"one of {others} for the cluster.")
        names = sorted(manifest["files"]) + [MANIFEST_NAME]
        files = {n: read_regular(model / n, MAX_ARTIFACT_FILE_BYTES, f"artifact '{model}'") for n in names}
        return Payload(model.name, files, {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}, True)
    data = read_regular(model, MAX_ARTIFACT_FILE_BYTES, f"checkpoint '{model}'")
    return Payload(model.name, {model.name: data}, {model.name: hashlib.sha256(data).hexdigest()}, False)


def unpack(payload: Payload, folder: Path) -> Path:
    """Write the payload under ``folder`` and check every file's sha256 there; the path to open."""
    from ..door import ArtifactError, safe_name

    root = Path(folder) / payload.name if payload.artifact else Path(folder)
    for name, data in payload.files.items():
        if not safe_name(name) or hashlib.sha256(data).hexdigest() != payload.sha256.get(name):
            raise ArtifactError(f"'{payload.name}': '{name}' arrived altered or misnamed on this node; refused.")
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root if payload.artifact else root / payload.name


class _Engine:
    """What every actor holds: the model, written to this node, checked (an artifact by ``open_model``'s door
    against its manifest as well) and loaded once."""

    def __init__(self, payload_ref, runtime) -> None:
        import ray

        from ..runtime import open_model

        payload = ray.get(payload_ref[0]) if isinstance(payload_ref, list) else payload_ref
        self.folder = tempfile.TemporaryDirectory(prefix="scnet-deploy-ray-")
        self.runner = open_model(unpack(payload, Path(self.folder.name)), runtime).__enter__()
        self.node = ray.get_runtime_context().get_node_id()

    def __del__(self) -> None:
        try:
            self.runner.__exit__(None, None, None)
        finally:
            self.folder.cleanup()


class ImageWorker(_Engine):
    """Upscales images: a row (src, dst) in, its result (JSON) out."""

    def __init__(self, payload_ref, runtime, options, halo: int) -> None:
        from ..memory import limit_bytes

        super().__init__(payload_ref, runtime)
        # this node's memory limit, as on one machine: --max-memory, else a share of what the node has free
        self.options, self.halo, self.limit = options, halo, limit_bytes(options.max_memory_mb)

    def __call__(self, batch: dict) -> dict:
        import json

        from ..upscale import upscale_item

        results = []
        for src, dst in zip(batch["src"], batch["dst"]):
            result, _, _ = upscale_item(self.runner, Path(src), Path(dst), self.options, self.halo, self.limit, True)
            results.append(json.dumps({**result, "node": self.node}))
        return {"result": results}


class SegmentWorker(_Engine):
    """Decodes and upscales a video's segment (start and end pts, at keyframes): its frames out, in order."""

    def __init__(self, payload_ref, runtime, info, halo: int, tile: int | None, max_frames: int) -> None:
        super().__init__(payload_ref, runtime)
        self.info, self.halo, self.tile, self.max_frames = info, halo, tile, max_frames

    def __call__(self, batch: dict):
        import numpy as np

        from ..imaging.video import decode
        from ..video import upscale_frame

        scale, bits = self.runner.arch["scale"], 16 if self.info.deep else 8
        for index, start, end in zip(batch["segment"], batch["start"], batch["end"]):
            report: dict = {}
            for rgb, pts in decode(self.info, report, int(start), None if end < 0 else int(end), self.max_frames):
                up = upscale_frame(self.runner.infer, rgb, scale, self.tile, self.halo, bits)
                yield {"frame": up[None], "pts": np.array([-1 if pts is None else pts]),
                       "segment": np.array([index]), "corrupt": np.array([report.get("corrupt_packets", 0)]),
                       "node": [self.node]}


# --- sizing ----------------------------------------------------------------------------------------------------

def _nodes(ray) -> list[dict]:
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def plan_actors(ray, threads: int, need: int, asked: int | None, items: int) -> int:
    """How many actors: ``asked``, else what the alive nodes hold (CPUs / ``threads`` and memory / ``need`` bytes,
    node by node), never more than the items."""
    nodes = _nodes(ray)
    fits = sum(min(int(r.get("CPU", 0) // threads), int(r.get("memory", 0) // max(need, 1))) for r in nodes)
    if asked is not None:
        if asked < 1:
            raise ScnetDeployError(f"--ray-actors must be at least 1, got {asked}.")
        return max(1, min(asked, items))
    if fits < 1:
        biggest = max((r.get("memory", 0) for r in nodes), default=0)
        raise ScnetDeployError(f"no node of the cluster has {threads} CPU(s) and {need // MB} MB for an actor (the "
                               f"largest has {biggest // MB} MB); pass --max-memory to tile within less, or fewer "
                               "--threads.")
    return max(1, min(fits, items))


def actor_memory(runner, height: int, width: int, halo: int, max_memory_mb: int | None) -> tuple[int, int | None]:
    """The bytes an actor reserves and the tile it runs: the largest input whole (the memory model), or tiled
    within ``--max-memory``."""
    from ..imaging.tiling import tile_for
    from ..memory import estimate_bytes

    whole = estimate_bytes(runner.arch, runner.backend, height, width)
    if max_memory_mb is None or whole <= max_memory_mb * MB:
        return whole, None
    return max_memory_mb * MB, tile_for(runner, height, width, halo, max_memory_mb * MB)


# --- the verbs' cluster side ---------------------------------------------------------------------------------------

def upscale_on_ray(model: str | Path, inputs: list, options, ray_options: RayOptions, progress=None) -> list[dict]:
    """``upscale`` on a Ray cluster: the same results (and output files) as ``upscale.upscale`` on one machine,
    each done item with the node that did it."""
    from ..imaging.video import is_video
    from ..runtime import open_model
    from ..upscale import halo_for

    inputs = [Path(p) for p in inputs]
    payload = pack(Path(model))
    threads = options.runtime.threads or 1
    runtime = _with_threads(options.runtime, threads)
    ray = connect(ray_options.address)
    try:
        with open_model(model, runtime) as runner:  # here: the model's architecture and memory model
            halo = halo_for(runner.arch, options)
            if any(is_video(p) for p in inputs):
                return [_video(ray, runner, payload, inputs, options, ray_options, runtime, halo, progress)]
            return _images(ray, runner, payload, inputs, options, ray_options, runtime, halo, progress)
    finally:
        ray.shutdown()


def _with_threads(runtime, threads: int):
    from dataclasses import replace

    return replace(runtime, threads=threads)


def _images(ray, runner, payload, inputs, options, ray_options, runtime, halo, progress) -> list[dict]:
    import json

    from ..imaging.images import image_size
    from ..upscale import batch_progress, plan_batch

    say = reporter(progress)
    plan = plan_batch(inputs, options, runner.arch["scale"])
    sizes = []
    for i in plan.todo:
        try:
            sizes.append(image_size(plan.files[i]))
        except ScnetDeployError:
            pass  # reported by its worker, as on one machine
    w, h = max(sizes, key=lambda s: s[0] * s[1], default=(64, 64))
    need, _ = actor_memory(runner, h, w, halo, options.max_memory_mb)
    threads = runtime.threads
    actors = plan_actors(ray, threads, need, ray_options.actors, max(len(plan.todo), 1))
    results: list = [None] * len(plan.files)
    worked = [0]
    finish = batch_progress(results, time.perf_counter(), worked, say)
    for i in plan.kept():
        finish(i, plan.kept_result(i), STEP, f"{plan.files[i].name}: output exists, skipped")
    if plan.todo:
        say(Progress(f"{len(plan.todo)} image(s) on {actors} actor(s), {threads} thread(s) and "
                     f"{max(1, need // MB)} MB each", STEP))
        rows = [{"index": i, "src": str(plan.files[i]), "dst": str(plan.dests[i])} for i in plan.todo]
        done = _map(ray, rows, ImageWorker, actors, threads, need, ([ray.put(payload)], runtime, options, halo))
        for i, row in zip(plan.todo, _rows(ray, done)):
            result = json.loads(row["result"])
            worked[0] += 1
            ok = result["status"] == "done"
            finish(i, result, STEP if ok else "failed",
                   f"upscaled {plan.files[i].name}" if ok else f"{plan.files[i].name} failed: {result.get('error')}")
    return results + plan.other_results()


def segments(info, parts: int) -> list[tuple[int, int]]:
    """The video cut at keyframes into about ``parts`` segments of similar length, as (start pts, end pts; -1: to
    the end); one segment where keyframes have no timestamps."""
    from ..imaging.video import keyframes

    keys = keyframes(info)
    if len(keys) < 2 or parts < 2:
        return [(keys[0] if keys else 0, -1)] if keys else [(0, -1)]
    step = max(1, round(len(keys) / parts))
    starts = keys[::step]
    return [(s, e) for s, e in zip(starts, starts[1:] + [-1])]


def _video(ray, runner, payload, inputs, options, ray_options, runtime, halo, progress) -> dict:
    from ..door import protect_inputs
    from ..imaging.video import VideoWriter, probe
    from ..upscale import DONE, video_destination
    from ..video import frame_progress, model_identity

    say = reporter(progress)
    if len(inputs) != 1:
        raise ScnetDeployError(f"upscale takes one video at a time ({len(inputs)} inputs given); run it per video.")
    src, scale = inputs[0], runner.arch["scale"]
    info = probe(src, scale, options.video.max_frames)
    dst = video_destination(src, Path(options.output), scale)
    protect_inputs([src], [dst])
    need, tile = actor_memory(runner, info.height, info.width, halo, options.max_memory_mb)
    if options.tile is not None:
        tile = options.tile
    threads = runtime.threads
    whole = plan_actors(ray, threads, need, ray_options.actors, 1 << 30)
    cuts = segments(info, whole * SEGMENTS_PER_ACTOR)
    actors = min(whole, len(cuts))
    say(Progress(f"{src.name}: {len(cuts)} segment(s) at keyframes on {actors} actor(s), {threads} thread(s) and "
                 f"{max(1, need // MB)} MB each", STEP))
    rows = [{"segment": i, "start": s, "end": e} for i, (s, e) in enumerate(cuts)]
    frames = _map(ray, rows, SegmentWorker, actors, threads, need,
                  ([ray.put(payload)], runtime, info, halo, tile, options.video.max_frames))
    report = {"input": str(src), "output": str(dst), "frames": 0, "corrupt_packets": 0, "copied_streams": [],
              "segments": len(cuts), "actors": actors, "nodes": {}, "model": model_identity(runner), "tile": tile}
    corrupt: dict = {}
    started = time.perf_counter()
    with VideoWriter(info, dst, scale, options.video, report) as out:
        for row in _rows(ray, frames):
            out.write(row["frame"], None if row["pts"] < 0 else int(row["pts"]))
            corrupt[int(row["segment"])] = int(row["corrupt"])
            report["nodes"][row["node"]] = report["nodes"].get(row["node"], 0) + 1
            say(frame_progress(src.name, report["frames"], info.frames, time.perf_counter() - started))
    report["corrupt_packets"] = sum(corrupt.values())
    report.update(codec=out.codec, pix_fmt=out.pix_fmt, size=[info.width, info.height], scale=scale,
                  rotation=info.rotation, seconds=time.perf_counter() - started, status=DONE)
    return report


def _rows(ray, dataset):
    """The dataset's rows in order; a failure on the cluster as one line."""
    try:
        yield from dataset.iter_rows()
    except ScnetDeployError:
        raise
    except Exception as exc:  # Ray wraps what failed on a node; its first line says what
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, ScnetDeployError):
            raise ScnetDeployError(str(cause).splitlines()[0]) from None
        raise ScnetDeployError(f"the Ray cluster failed: {type(cause).__name__}: "
                               f"{str(cause).strip().splitlines()[-1][:200] if str(cause).strip() else ''}") from None
