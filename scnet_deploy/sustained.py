"""``bench --sustained DURATION``: an engine run back to back for the duration, as an edge device works for minutes:
images/s per window (10 s), the first against the last, where throttling started, and in each window what the
machine exposes (``sensors``): CPU frequency, temperatures, power or energy, and joules per frame where energy is
known."""

import time

import numpy as np

from .progress import Progress

WINDOW_S = 10.0
THROTTLED = 0.9  # a window under this share of the first window's images/s: throttled


def parse_duration(text) -> float:
    """``60s``, ``5m``, ``90`` (seconds) -> seconds."""
    from .errors import ScnetDeployError

    raw = str(text).strip().lower()
    factor = 60.0 if raw.endswith("m") else 1.0
    try:
        seconds = float(raw.rstrip("sm")) * factor
    except ValueError:
        seconds = -1.0
    if not 1 <= seconds <= 24 * 3600:
        raise ScnetDeployError(f"--sustained {text!r}: write a duration from 1 s to 24 h, e.g. 60s or 5m.")
    return seconds


def run(runner, shape: tuple[int, int], seconds: float, say, window_s: float = WINDOW_S, seed: int = 0) -> dict:
    """Run ``runner`` at LR ``shape`` back to back for ``seconds``; one record per window."""
    from . import sensors

    x = np.random.default_rng(seed).random((1, 3, *shape), dtype=np.float32)
    runner.infer(x)  # warm
    windows, start = [], time.perf_counter()
    before, t_window, frames = sensors.read(), start, 0
    while True:
        runner.infer(x)
        frames += 1
        now = time.perf_counter()
        if now - t_window >= window_s or now - start >= seconds:
            after = sensors.read()
            windows.append(_window(len(windows), t_window - start, now - t_window, frames, before, after))
            say(Progress(f"sustained at {shape[0]}x{shape[1]}: {windows[-1]['images_per_s']:.2f} images/s",
                         done=int(now - start), total=int(seconds)))
            before, t_window, frames = after, now, 0
            if now - start >= seconds:
                break
    return summarize(windows, shape, seconds, sensors.any_found(before))


def _window(index: int, begins: float, length: float, frames: int, before: dict, after: dict) -> dict:
    from .sensors import energy_between

    joules = energy_between(before, after, length)
    temps = after["temperatures_c"]
    return {"window": index, "starts_s": begins, "seconds": length, "frames": frames, "images_per_s": frames / length,
            "cpu_mhz": after["cpu_mhz"], "max_temperature_c": max(temps.values()) if temps else None,
            "temperatures_c": temps, "power_w": after["power_w"] or None, "joules": joules,
            "joules_per_frame": joules / frames if joules is not None and frames else None}


def summarize(windows: list[dict], shape: tuple[int, int], seconds: float, sensed: bool) -> dict:
    """First against last (minute where the run is two minutes or longer, else window), and the first throttled
    window."""
    from .sensors import NONE_HERE

    span = 60.0 if seconds >= 120 else None

    def rate(chosen):
        frames, time_s = sum(w["frames"] for w in chosen), sum(w["seconds"] for w in chosen)
        return frames / time_s if time_s else None

    first = [w for w in windows if span is None or w["starts_s"] < span] if span else windows[:1]
    last = [w for w in windows if w["starts_s"] + w["seconds"] > seconds - span] if span else windows[-1:]
    base = windows[0]["images_per_s"]
    throttled = next((w for w in windows[1:] if w["images_per_s"] < THROTTLED * base), None)
    return {"shape": list(shape), "seconds": seconds, "windows": windows, "compared": "minute" if span else "window",
            "first_images_per_s": rate(first), "last_images_per_s": rate(last),
            "last_vs_first": (rate(last) / rate(first)) if rate(first) else None,
            "throttling_from_s": None if throttled is None else throttled["starts_s"],
            "throttling_cpu_mhz": None if throttled is None else throttled["cpu_mhz"],
            "sensors": None if sensed else NONE_HERE}
