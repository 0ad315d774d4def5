"""scnet_deploy/progress.py: every verb reports progress the same way: progress(event) with Progress events, counted
work counted."""

import numpy as np
from PIL import Image

from conftest import save_basicsr, tiny_model
from scnet_deploy.bench import bench, BenchOptions
from scnet_deploy.build_options import CalibOptions, TuneOptions
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.pipeline import pipeline, PipelineOptions
from scnet_deploy.progress import BUILT, Progress, SKIPPED, STEP
from scnet_deploy.upscale import upscale, UpscaleOptions
from scnet_deploy.validate import validate, ValidateOptions


def _images(folder, n, size=(20, 24)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _counted_in_order(events, message=None):
    counted = [e for e in events if e.total is not None and (message is None or e.message == message)]
    assert counted and all(0 <= e.done <= e.total for e in counted)
    return counted


def test_every_verb_reports_progress_events(tmp_path):
    ckpt = save_basicsr(tiny_model(2, "mlp", num_feat=8, num_block=1), tmp_path / "m_x2.pth")
    events = {verb: [] for verb in ("export", "bench", "validate", "upscale", "pipeline")}
    export(ckpt, ExportOptions(output=tmp_path / "art"), progress=events["export"].append)
    bench([tmp_path / "art"], BenchOptions(shapes=((8, 8),), runs=1, warmup=0), progress=events["bench"].append)
    _images(tmp_path / "ds" / "HR", 3)
    validate([ckpt, tmp_path / "art"], ValidateOptions(tmp_path / "ds", 2), progress=events["validate"].append)
    upscale(tmp_path / "art", [_images(tmp_path / "in", 2, (8, 8))], UpscaleOptions(tmp_path / "out"),
            progress=events["upscale"].append)
    pipeline(ckpt, PipelineOptions(tmp_path / "p", dataset=tmp_path / "ds", shapes=((8, 8),), runs=1,
                                   formats=("onnx",), tune=TuneOptions("none"), calib=CalibOptions(count=4)),
             progress=events["pipeline"].append)
    for verb, got in events.items():
        assert got and all(isinstance(e, Progress) for e in got), verb
    assert any("ONNX graph" in e.message for e in events["export"])
    # counted work ends complete: validate scores 2 models x 3 images, upscale writes 2 files
    assert [e.done for e in _counted_in_order(events["validate"])] == list(range(1, 7))
    assert [(e.done, e.total) for e in _counted_in_order(events["upscale"])] == [(1, 2), (2, 2)]
    assert _counted_in_order(events["bench"])
    kinds = {e.kind for e in events["pipeline"]}
    assert {STEP, BUILT, SKIPPED} <= kinds  # outcomes are events of their own kind, not parsed from text
    assert any(e.kind == BUILT and e.message == "onnx-fp32" for e in events["pipeline"])
    assert any(e.message.startswith("onnx-int8: ") for e in events["pipeline"])  # session events carry the engine


def test_long_work_shows_its_steps_where_the_console_is_not_a_terminal(monkeypatch):
    """A log or a pipe gets no spinner: the current step is printed as a line every LOG_EVERY_S seconds (here 0),
    and none sooner (a quick command's stderr stays one line)."""
    import io

    from rich.console import Console

    from scnet_deploy.cli import display

    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with display.progress_display(console, "starting") as show:
        show(Progress("quick step"))
    assert "quick step" not in out.getvalue()
    monkeypatch.setattr(display, "LOG_EVERY_S", 0.0)
    with display.progress_display(console, "starting") as show:
        show(Progress("exporting", done=1, total=3))
    assert "exporting (1/3)" in out.getvalue()
