"""scnet_deploy/devices/cluster.py: ``upscale --ray`` on a two-node Ray cluster started here (loopback only):
a folder and a video give the bytes a one-machine run writes, the work done on both nodes, a failed file reported
while the rest go on; the model checked by its hashes on the nodes; TensorRT engines refused."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import cli, save_basicsr, tiny_model
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.upscale import UpscaleOptions, upscale

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]' in the checkout)")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install -e '.[ray]' in the checkout)")
av = pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[video]' in the checkout)")

from scnet_deploy.devices.cluster import RayOptions, pack, unpack, upscale_on_ray  # noqa: E402
from scnet_deploy.video import VideoOptions  # noqa: E402
from test_video import decoded, make_video  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny x2 model's ONNX Runtime artifact, a folder of odd-sized images (and a broken one), and a 24-frame
    lossless video with audio and a keyframe every 4 frames."""
    from scnet_deploy.export import ExportOptions, export

    d = tmp_path_factory.mktemp("cluster")
    ckpt = save_basicsr(tiny_model(2, "mlp", seed=5), d / "tiny_x2.pth")
    artifact = export(ckpt, ExportOptions(output=d / "onnx")).directory
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20 + i, 31, 3), dtype=np.uint8)).save(images / f"i{i}.png")
    (images / "broken.png").write_bytes(b"not an image")
    video = d / "clip.mkv"
    make_video(video, codec="ffv1", pix_fmt="bgr0", frames=24, gop=4)
    return d, ckpt, artifact, images, video


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, one CPU each: an actor a node."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_a_folder_on_two_nodes_writes_the_bytes_one_machine_writes(work, cluster):
    d, _, artifact, images, _ = work
    local = upscale(artifact, [images], UpscaleOptions(d / "local"))
    on_ray = upscale_on_ray(artifact, [images], UpscaleOptions(d / "ray"), RayOptions(cluster.address))
    assert [(r["input"], r["status"]) for r in on_ray] == [(r["input"], r["status"]) for r in local]
    done = [r for r in on_ray if r["status"] == "done"]
    assert len(done) == 6 and len({r["node"] for r in done}) == 2  # both nodes worked
    [failed] = [r for r in on_ray if r["status"] == "failed"]
    assert "broken.png" in failed["input"] and "not a readable image" in failed["error"]
    assert sorted(p.name for p in (d / "ray").iterdir()) == sorted(p.name for p in (d / "local").iterdir())
    for p in (d / "local").iterdir():
        assert (d / "ray" / p.name).read_bytes() == p.read_bytes(), p.name


def test_a_video_in_segments_on_two_nodes_is_the_one_machine_file(work, cluster):
    d, _, artifact, _, video = work
    options = lambda out: UpscaleOptions(out, video=VideoOptions("ffv1"))  # noqa: E731
    [local] = upscale(artifact, [video], options(d / "local.mkv"))
    [on_ray] = upscale_on_ray(artifact, [video], options(d / "ray.mkv"), RayOptions(cluster.address))
    assert on_ray["frames"] == local["frames"] == 24 and on_ray["copied_streams"] == ["audio aac"]
    assert on_ray["segments"] > 2 and len(on_ray["nodes"]) == 2  # split at keyframes, both nodes worked
    a, b = decoded(d / "local.mkv")[0], decoded(d / "ray.mkv")[0]
    assert [p for p, _ in a] == [p for p, _ in b] and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert (d / "ray.mkv").read_bytes() == (d / "local.mkv").read_bytes()  # same frames, same encoder: same bytes


def test_the_model_is_checked_by_its_hashes_where_it_arrives(work, tmp_path):
    _, ckpt, artifact, _, _ = work
    payload = pack(artifact)
    assert (unpack(payload, tmp_path / "ok") / "manifest.json").is_file()
    name = next(n for n in payload.files if n.endswith(".onnx"))
    altered = type(payload)(payload.name, {**payload.files, name: payload.files[name] + b"x"}, payload.sha256, True)
    with pytest.raises(ScnetDeployError, match="arrived altered"):
        unpack(altered, tmp_path / "bad")
    escaping = type(payload)(payload.name, {"../x": b""}, {"../x": payload.sha256[name]}, True)
    with pytest.raises(ScnetDeployError, match="altered or misnamed"):
        unpack(escaping, tmp_path / "bad2")
    assert unpack(pack(ckpt), tmp_path / "ck").read_bytes() == ckpt.read_bytes()
    tampered = tmp_path / "tampered"
    shutil.copytree(artifact, tampered)
    (tampered / name).write_bytes(b"x")
    with pytest.raises(ScnetDeployError, match="do not match the sha256"):
        pack(tampered)


def test_tensorrt_engines_are_refused_in_one_line(work, tmp_path):
    _, _, artifact, _, _ = work
    trt = tmp_path / "trt"
    shutil.copytree(artifact, trt)
    manifest = json.loads((trt / "manifest.json").read_text())
    (trt / "manifest.json").write_text(json.dumps({**manifest, "backend": "tensorrt"}))
    with pytest.raises(ScnetDeployError, match="--ray does not run tensorrt artifacts"):
        pack(trt)


def test_the_cli_starts_ray_here_with_local(work, tmp_path):
    d, _, artifact, images, _ = work
    few = tmp_path / "few"
    few.mkdir()
    for name in ("i0.png", "i1.png"):
        shutil.copy(images / name, few / name)
    run = cli("upscale", artifact, few, "-o", tmp_path / "out", "--ray", "local", "--ray-actors", "1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 upscaled, 0 failed" in run.stdout and "on the Ray cluster: 1 node(s) worked" in run.stdout
    upscale(artifact, [few], UpscaleOptions(tmp_path / "here"))
    assert (tmp_path / "out" / "i0_x2.png").read_bytes() == (tmp_path / "here" / "i0_x2.png").read_bytes()
    assert "Traceback" not in run.stderr


def test_an_address_nothing_answers_at_is_one_line_not_a_hang(work, tmp_path):
    import socket

    from conftest import one_line_error

    _, _, artifact, images, _ = work
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = cli("upscale", artifact, images, "-o", tmp_path / "out", "--ray", f"127.0.0.1:{port}", timeout=60)
    assert "nothing answers at" in one_line_error(run) and not (tmp_path / "out").exists()


def test_an_address_where_something_else_listens_is_one_line_within_seconds(work, tmp_path):
    """Row 13 of issue 38: an HTTP server at --ray's address passed the TCP check, then Ray's GCS client retried for
    minutes, printing raw C++ warnings and ignoring SIGTERM. It speaks no gRPC: refused at once."""
    import http.server
    import threading
    import time

    from conftest import one_line_error

    _, _, artifact, images, _ = work
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = time.monotonic()
        run = cli("upscale", artifact, images, "-o", tmp_path / "out", "--ray", f"127.0.0.1:{server.server_port}",
                  timeout=60)
        assert "it is not a Ray cluster" in one_line_error(run) and time.monotonic() - t0 < 20
        assert not (tmp_path / "out").exists()
    finally:
        server.shutdown()
