"""The ``report`` verb: Markdown tables and PNG plots from bench and validate results (JSON files or dicts).

Plots: latency vs output resolution per model; PSNR drift per model; latency vs drift (the deployment trade-off),
for models present in both a bench and a validate result (matched by path).
"""

import json
import shutil
from pathlib import Path

from .errors import ScnetDeployError
from .manifest import write_results_json


def _kind(result: dict) -> str:
    if "dataset" in result or "datasets" in result:
        return "validate"
    if "options" in result and "models" in result:
        return "bench"
    raise ScnetDeployError("a results file is neither bench nor validate output (JSON from --json).")


def load_results(paths: list[str | Path]) -> list[dict]:
    results = []
    for p in paths:
        try:
            results.append(json.loads(Path(p).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ScnetDeployError(f"cannot read results '{p}': {exc}. Pass JSON written by --json.")
    return results


def _fmt(v, digits=2):
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def bench_markdown(result: dict) -> list[str]:
    lines = []
    for i, shape in enumerate(result["options"]["shapes"]):
        lines += [f"### Latency, LR {shape[0]}x{shape[1]} (batch {result['options']['batch']})", "",
                  "| model | precision | first ms | median ms | p90 ms | p99 ms | images/s | MP/s | vs official eager |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m in result["models"]:
            if m.get("not_timed"):
                lines.append(f"| {m['name']} | {m['precision']} | {m['not_timed']['reason']}: no milliseconds |"
                             " | | | | | |")
                continue
            s = m["shapes"][i]
            ratio = f"{s['speedup_vs_official_eager']:.1f}x" if s.get("speedup_vs_official_eager") else "-"
            lines.append(f"| {m['name']} | {m['precision']} | {s['first_inference_ms']:.0f} | {s['median_ms']:.1f} | "
                         f"{s['p90_ms']:.1f} | {s['p99_ms']:.1f} | {s['images_per_s']:.2f} | "
                         f"{s['megapixels_per_s']:.1f} | {ratio} |")
        lines.append("")
        in_flight = [(m, m["shapes"][i]["throughput"]) for m in result["models"]
                     if m["shapes"] and "throughput" in m["shapes"][i]]
        if in_flight:
            lines += [f"### Throughput, LR {shape[0]}x{shape[1]} (requests in flight)", "",
                      "| model | precision | in flight | images/s | MP/s | vs its latency run |", "|---|---|---|---|---|---|"]
            lines += [f"| {m['name']} | {m['precision']} | {t['inflight']} | {t['images_per_s']:.2f} | "
                      f"{t['megapixels_per_s']:.1f} | {t['vs_latency']:.2f}x |" for m, t in in_flight]
            lines.append("")
    if result.get("video"):
        lines += video_markdown(result)
    return lines + profile_markdown(result) + sustained_markdown(result)


def profile_markdown(result: dict) -> list[str]:
    """bench --profile: each engine's time per stage (the body's blocks summed), against the rooflines."""
    from .profile import grouped

    lines, roof = [], result.get("rooflines")
    for m in result["models"]:
        for s in m["shapes"]:
            p = s.get("profile")
            if not p or not p.get("stages"):
                continue
            lines += [f"### Profile: {m['name']} at LR {s['shape'][0]}x{s['shape'][1]}", "",
                      f"The {p['measured_ms']:.1f} ms the profiled runs took, by stage (the runtime's counters add "
                      f"up to {100 * (p.get('coverage') or 0):.0f}% of it)"
                      + (f"; this machine's rooflines: {roof['gflops']:.0f} GFLOP/s, {roof['gbytes_per_s']:.1f} GB/s."
                         if roof else "."), "",
                      "| stage | ms | share | GMAC | MB moved | GB/s | x memory roofline | bound |",
                      "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {r['stage']} | {r['ms']:.2f} | {100 * r['share']:.1f}% | {r['macs'] / 1e9:.3f} | "
                      f"{r['bytes'] / 1e6:.1f} | {_num(r.get('gbytes_per_s'))} | {_num(r.get('x_memory_roofline'))} | "
                      f"{r['bound']} |" for r in grouped(p["stages"])]
            lines.append("")
    return lines


def sustained_markdown(result: dict) -> list[str]:
    lines = []
    for m in result["models"]:
        s = m.get("sustained")
        if not s:
            continue
        lines += [f"### Sustained: {m['name']} at LR {s['shape'][0]}x{s['shape'][1]} for {s['seconds']:.0f} s", "",
                  f"First {s['compared']} {_num(s.get('first_images_per_s'))} images/s, last "
                  f"{_num(s.get('last_images_per_s'))} ({_num(s.get('last_vs_first'))}x); "
                  + ("no throttling." if s.get("throttling_from_s") is None else
                     f"throttling from {s['throttling_from_s']:.0f} s.")
                  + (f" {s['sensors']}." if s.get("sensors") else ""), ""]
    return lines


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def video_markdown(result: dict) -> list[str]:
    """bench --video: can each engine keep up with the frame rate, alone and with the codec's decode and encode?"""
    from .bench import rates_text

    v = result["video"]
    h, w, fps = v["target"]
    source = f", {Path(v['source']).name} upscaled" if v.get("source") else ""
    lines = [f"### Keeping up with {h}x{w} at {fps:g} fps{source}", "",
             f"{v['codec']} here: decode {v['decode_ms']:.1f} ms, encode {v['encode_ms']:.1f} ms per frame.", "",
             "| model | precision | fps | real time | fps with decode+encode | real time with codec | keeps up with "
             "(codec counted) |", "|---|---|---|---|---|---|---|"]
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    for m in result["models"]:
        if "video" in m:
            r = m["video"]
            lines.append(f"| {m['name']} | {m['precision']} | {r['fps']:.2f} | {yes(r['real_time'])} | "
                         f"{r['fps_with_codec']:.2f} | {yes(r['real_time_with_codec'])} | {rates_text(r)} |")
    return lines + [""]


def _dataset_markdown(result: dict) -> list[str]:
    lines = [f"### Accuracy, {result.get('name') or Path(result['dataset']).name} x{result['scale']} "
             f"({result['images']} images, LR {', '.join(result['lr_source'])})", "",
             "| model | precision | PSNR-Y | SSIM-Y | drift dB | visible % | PSNR vs ref dB | max abs diff | worst image "
             "| gate |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["models"]:
        worst = m.get("worst_image", {})
        share = m.get("visible_share")
        gate = "-" if "within_budget" not in m else "pass" if m["within_budget"] else "**fail**"
        if result.get("gated") is False:
            gate = "shown, not gated"
        lines.append(f"| {m['name']}{' (reference)' if m.get('reference') else ''} | {m['precision']} | "
                     f"{m['psnr_y']:.2f} | {m['ssim_y']:.4f} | {_fmt(m.get('drift_db'), 3)} | "
                     f"{'-' if share is None else f'{100 * share:.2f}'} | "
                     f"{_fmt(m.get('psnr_vs_reference_db'), 1)} | {_fmt(m.get('max_abs_diff'), 4)} | "
                     f"{worst.get('name', '-')} | {gate} |")
    note = ("visible %: the worst image's share of pixels 4+ 8-bit levels off the FP32 reference's output (the "
            "accuracy gate allows 0.1%)")
    shimmer = [m for m in result["models"] if "flicker_share" in m]
    if shimmer:
        note += ("; flicker (consecutive frames, the worst transition): the share of pixels whose change from the "
                 "frame before differs from FP32's by 4+ levels (gated as visible %), and the mean difference: "
                 + ", ".join(f"{m['name']} {100 * m['flicker_share']:.2f}% ({m['flicker_levels']:.3f} levels)"
                             for m in shimmer))
    return lines + ["", note, ""]


def validate_markdown(result: dict) -> list[str]:
    """A table per dataset and, for several, one row per model naming its worst dataset (content type)."""
    per_set = result.get("datasets") or [result]
    lines = []
    for d in per_set:
        lines += _dataset_markdown(d)
    if len(per_set) > 1:
        names = [d["name"] for d in per_set]
        lines += [f"### Drift by content (dB vs FP32; a model's drift is its worst dataset's)", "",
                  "| model | precision | " + " | ".join(names) + " | worst content | worst image |",
                  "|---|---|" + "---|" * len(names) + "---|---|"]
        for m in result["models"]:
            if m.get("drift_db") is None or m.get("reference"):
                continue
            worst = m.get("worst_image", {})
            lines.append(f"| {m['name']} | {m['precision']} | "
                         + " | ".join(_fmt(m["by_dataset"][n]["drift_db"], 3) for n in names)
                         + f" | {m.get('worst_dataset', '-')} | {worst.get('dataset', '')}/{worst.get('name', '-')} "
                         f"({_fmt(worst.get('drift_db'), 3)}) |")
        lines.append("")
    if result.get("budget_db") is not None:
        lines += [gate_line(result), ""]
    for v in result.get("visuals", []):
        lines += [f"Worst image of {', '.join(v['worst_for'])}: {v['dataset']}/{v['image']} (crop of {v['crop'][2]} "
                  f"HR px at y={v['crop'][0]}, x={v['crop'][1]}; top: bicubic, FP32, each engine; bottom: |error vs "
                  f"FP32| x{v['gain']})", "", f"![{v['file']}]({v['file']})", ""]
    return lines


def _profile_plots(benches: list[dict], out: Path, plt) -> list[str]:
    """One bar chart per profiled engine (ms per stage, the body's blocks each), and the sustained runs' images/s
    over time (CPU frequency beside it where the machine exposes it)."""
    written = []
    profiled = [(m, s) for b in benches for m in b["models"] for s in m["shapes"] if (s.get("profile") or {}).get("stages")]
    for i, (m, s) in enumerate(profiled):
        rows = s["profile"]["stages"]
        fig, ax = plt.subplots(figsize=(7, 0.22 * len(rows) + 1.2))
        ax.barh([r["stage"] for r in rows][::-1], [r["ms"] for r in rows][::-1], color="tab:orange")
        ax.set(xlabel="ms per run", title=f"{m['name']} at {s['shape'][0]}x{s['shape'][1]}: time per stage")
        fig.tight_layout()
        name = f"profile_{i}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    sustained = [m for b in benches for m in b["models"] if m.get("sustained")]
    if sustained:
        fig, ax = plt.subplots(figsize=(7, 4))
        for m in sustained:
            w = m["sustained"]["windows"]
            ax.plot([x["starts_s"] for x in w], [x["images_per_s"] for x in w], marker="o", label=m["name"])
        ax.set(xlabel="seconds", ylabel="images/s", title="Sustained throughput per window")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        mhz = [(x["starts_s"], x["cpu_mhz"]) for x in sustained[0]["sustained"]["windows"] if x.get("cpu_mhz")]
        if mhz:
            twin = ax.twinx()
            twin.plot(*zip(*mhz), color="grey", ls="--")
            twin.set_ylabel("CPU MHz (first engine's run)")
        fig.tight_layout()
        fig.savefig(out / "sustained.png", dpi=110)
        plt.close(fig)
        written.append("sustained.png")
    return written


def _plots(benches: list[dict], validations: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if benches:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for b in benches:
            for m in b["models"]:
                xs = [s["output"][0] * s["output"][1] / 1e6 for s in m["shapes"]]
                ax.plot(xs, [s["median_ms"] for s in m["shapes"]], marker="o", label=f"{m['name']} ({m['precision']})")
        ax.set(xlabel="output megapixels", ylabel="median latency (ms)", title="Latency vs output resolution",
               yscale="log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "latency_vs_resolution.png", dpi=120)
        plt.close(fig)
        written.append("latency_vs_resolution.png")
    written += _profile_plots(benches, out, plt)
    drift_models = [(m["name"], m["drift_db"]) for v in validations for m in v["models"]
                    if m.get("drift_db") is not None and m["kind"] != "method"]
    if drift_models:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.barh([n for n, _ in drift_models], [d for _, d in drift_models], color="tab:blue")
        ax.axvline(0, color="black", lw=0.8)
        ax.set(xlabel="PSNR-Y drift vs FP32 reference (dB)", title="Accuracy drift per model")
        fig.tight_layout()
        fig.savefig(out / "drift.png", dpi=120)
        plt.close(fig)
        written.append("drift.png")
    drift_by_path = {m["path"]: m["drift_db"] for v in validations for m in v["models"] if m.get("drift_db") is not None}
    # at the largest shape timed, as the pipeline's recommendation compares engines
    points = [(m["name"], m["shapes"][-1]["median_ms"], drift_by_path[m["path"]]) for b in benches for m in b["models"]
              if m["path"] in drift_by_path and not m.get("baseline") and m["shapes"]]
    if points:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        markers = "osD^v<>pP*hX"
        for i, (name, ms, drift) in enumerate(points):  # a legend, not annotations: engines at equal drift collide
            ax.scatter(ms, drift, marker=markers[i % len(markers)], s=40, label=name)
        ax.set(xlabel="median latency (ms), largest shape", ylabel="PSNR-Y drift (dB)", title="Latency vs drift",
               xscale="log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(out / "latency_vs_drift.png", dpi=120)
        plt.close(fig)
        written.append("latency_vs_drift.png")
    return written


def report(results: list[dict], output: str | Path, title: str = "scnet-deploy report",
           sections: list[str] | None = None) -> Path:
    """Write ``output/report.md``, ``output/results.json`` and the PNG plots; returns the Markdown path.
    ``sections``: Markdown lines placed after the title and machine (the pipeline's recommendation)."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    benches = [r for r in results if _kind(r) == "bench"]
    validations = [r for r in results if _kind(r) == "validate"]
    lines = [f"# {title}", ""]
    machine = (benches or validations)[0].get("machine") if results else None
    if machine:
        cpu = machine["cpu"]
        lines += [f"Machine: {cpu['model']}, {cpu['cores']} cores ({', '.join(k for k, v in cpu['features'].items() if v)}"
                  f"); GPUs: {', '.join(machine['gpus']) or 'none'}; "
                  + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v), ""]
    lines += sections or []
    for v in validations:
        for visual in v.get("visuals", []):  # comparisons written by validate elsewhere travel with the report
            source = Path(visual["path"])
            if source.exists() and source.resolve() != (out / visual["file"]).resolve():
                shutil.copyfile(source, out / visual["file"])
        lines += validate_markdown(v)
    for b in benches:
        lines += bench_markdown(b)
    plots = _plots(benches, validations, out)
    lines += [f"![{p}]({p})" for p in plots]
    write_results_json({"bench": benches, "validate": validations}, out / "results.json")
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def gate_line(result: dict) -> str:
    """The accuracy gate's verdict in a validate result, in words made from the gate it recorded: a drift shown
    beyond the budget can pass where the FP32 output is near-lossless (the gate leaves those images' drift out)."""
    from .gate import AccuracyGate

    g = result.get("gate") or {}
    gate = AccuracyGate.from_record(result["budget_db"], g)
    verdict = "all within" if result["passed"] else f"over it: {', '.join(result['over_budget'])}"
    near = g.get("near_lossless_db")
    return (f"Accuracy gate ({gate.describe()}): {verdict}." + (
        f" A content type's drift leaves out images whose FP32 output is near-lossless (PSNR-Y >= {near:g} dB "
        "against ground truth): a table's drift beyond the budget may pass for that reason." if near else ""))
