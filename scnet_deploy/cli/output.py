"""What the commands print and write: each verb's tables, and the result files of the output group."""

import json
from pathlib import Path

import typer
from rich.table import Table

from ..door import csv_cell, shown
from .app import console, err_console
from .groups import Outputs


def write_outputs(result: dict, outputs: Outputs, rows) -> None:
    """The output group's files: the result as JSON, ``rows`` as CSV, a Markdown + PNG report."""
    if outputs.json:
        from ..manifest import write_results_json

        write_results_json(result, outputs.json)
    if outputs.csv:
        import csv

        with open(outputs.csv, "w", newline="") as f:
            csv.writer(f).writerows([csv_cell(c) for c in row] for row in rows)
    if outputs.report:
        from ..report import report

        console.print(f"report: {report([result], outputs.report)}")


def print_json(result: dict) -> None:
    print(json.dumps(result, indent=2))


def key_value_table(title: str, rows) -> None:
    table = Table(title=title, show_header=False)
    for k, v in rows:
        table.add_row(shown(k), shown(v))
    console.print(table)


def info_rows(result: dict) -> list[tuple[str, str]]:
    s = result["size"]
    return [("architecture", f"SCNet num_feat={result['num_feat']} num_block={result['num_block']} "
                             f"x{result['scale']} ({result['upsampler']} upsampler)"),
            ("scale told by", result["scale_source"]),
            ("weights", str(result["param_key"] or "raw state dict")),
            ("parameters", f"{result['params']:,}"),
            ("MACs per LR pixel", f"{result['macs_per_lr_pixel']:,.0f}"),
            (f"MACs at {s['lr'][0]}x{s['lr'][1]} -> {s['sr'][0]}x{s['sr'][1]}", f"{s['macs'] / 1e9:,.2f} G"),
            ("receptive radius (LR px)", str(result["receptive_radius"])),
            ("sha256", result["sha256"][:16] + "..."),
            *quantization_aware_rows(result.get("quantization_aware"))]


def quantization_aware_rows(q: dict | None) -> list[tuple[str, str]]:
    """``info``'s rows for a quantization-aware checkpoint (none for another)."""
    if not q:
        return [("quantization-aware", "no (export --int8 calibrates)")]
    return [("quantization-aware", shown(f"yes: {q.get('scheme', '?')}")),
            ("  ranges", f"{q['activation_ranges']} activation, {q['weight_ranges']} weight (export --int8 uses them)"),
            ("  quantized", _quantized(q)),
            ("  fine-tuning", shown(f"{q.get('steps')} steps, batch {q.get('batch')}, lr {q.get('lr')}, seed "
                                    f"{q.get('seed')}, {q.get('seconds')} s on {q.get('device')}, "
                                    f"{q.get('library')}")),
            ("  channels", _equalization(q.get("equalization"))),
            ("  data", shown(f"{', '.join(q.get('data') or [])} (sha256 {str(q.get('data_sha256', ''))[:16]}...)")),
            ("  teacher", shown(f"sha256 {str(q.get('teacher_sha256', ''))[:16]}..."))]


def _quantized(q: dict) -> str:
    names = q.get("quantized_convs") or []
    which = {"hr": "the output-resolution convolutions", "all": "every convolution but the first"}.get(
        q.get("quantize", "all"), str(q.get("quantize")))
    listed = ", ".join(names) if len(names) <= 4 else f"{len(names)} convolutions"
    return shown(f"{which}: {listed}; the rest run float")


def _equalization(record) -> str:
    if not isinstance(record, dict):
        return "as trained (not equalized)"
    return shown(f"equalized before quantizing (alpha {record.get('alpha')}, scales from "
                 f"{100 * float(record.get('content_share') or 0):g}% generated patches)")


def doctor_tables(report: dict) -> None:
    table = Table(title="backends")
    for col in ("backend", "format", "status", "precisions", "compute"):
        table.add_column(col)
    for b in report["backends"]:
        status = (f"[green]available[/green] {b['version']}" if b["available"]
                  else f"[red]missing[/red]: {shown(b['install'])}")
        table.add_row(shown(b["backend"]), shown(b["format"]), status, shown(", ".join(b["precisions"])),
                      shown(", ".join(b["compute_units"])))
    console.print(table)
    for b in report["backends"]:
        for note in b.get("notes") or ():  # what a backend lists of itself (its runtime's doctor())
            console.print(f"{shown(b['backend'])} {shown(note)}")
    cpu = report["cpu"]
    features = " ".join(f"{k}" for k, v in cpu["features"].items() if v) or "none of interest"
    console.print(f"CPU: {shown(cpu['model'])}, {shown(cpu['cores'])} cores, {shown(cpu['arch'])}; features: "
                  f"{shown(features)}")
    console.print(f"GPUs: {shown(', '.join(report['gpus'])) or 'none visible'}")


def export_lines(result) -> None:
    for fmt, m in result.manifests.items():
        console.print(f"[green]wrote[/green] {shown(result.artifacts[fmt])} ({shown(', '.join(m['files']))}, "
                      "manifest.json)")
        if "onnx" in m:
            o = m["onnx"]
            console.print(f"  graph: {sum(o['nodes_before_simplify'].values())} -> {o['node_count']} nodes "
                          f"(opset {o['options']['opset']}, {o['options']['exporter']} exporter, "
                          f"simplified by {shown(o['simplifier'])})")
        tuned = m.get("autotune")
        if tuned:  # --optimize latency: which form won, against what
            timed = {n: c["median_ms"] for n, c in tuned["candidates"].items() if c.get("median_ms") is not None}
            console.print(f"  fastest form here: {shown(tuned['chosen'])} at {tuned['target_lr_size'][0]}x"
                          f"{tuned['target_lr_size'][1]} (" + (", ".join(f"{n} {ms:.1f} ms" for n, ms in timed.items())
                                                               or "not timed here") + ")"
                          + (f", tiles of {tuned['tile']} LR px" if tuned.get("tile") else "")
                          + (f", split: the tail on tiles of {tuned['split']} LR px" if tuned.get("split") else ""))
        if "int8" in m and "drift_db" in m["int8"]:
            i = m["int8"]
            w = i["worst_image"]
            refined = shown(i.get("quantization", {}).get("refinement", "kept in float"))
            console.print(f"  {shown(m.get('precision', 'int8')).upper()}: mean drift {i['drift_db']:+.3f} dB on "
                          f"{len(i['holdout']['sources'])} held-out images"
                          + (f" ({shown(i['measured_on'])})" if i.get("measured_on") else "")
                          + f" (budget: {i['budget']}), worst {w['drift_db']:+.3f} dB on {shown(w['name'])} "
                          f"({shown(w['content'])}); {len(i['float_layers'])} layer(s) {refined}")
            q = i.get("quantization", {})
            if q.get("quantized_convs") is not None:
                console.print(f"  {q['quantized_convs']} of {q.get('convolutions', '?')} convolutions quantized"
                              + (" with the checkpoint's quantization-aware ranges" if q.get("quantization_aware")
                                 else f" ({shown(str(q.get('method', 'calibrated')))})"))
        if m.get("int8_speed"):
            from ..int8_speed import SpeedCheck

            console.print(f"  speed: {shown(SpeedCheck.from_dict(m['int8_speed']).line())}")
        v = m["verification"]
        if v.get("skipped"):
            console.print(f"  not run here: {shown(v['skipped'])}")
        else:
            console.print(f"  verified vs PyTorch FP32 in {shown(v['runtime'])}: max abs diff {v['max_abs_diff']:.2e}"
                          + (f", PSNR vs FP32 {v['min_psnr_vs_fp32_db']:.1f} dB" if 'min_psnr_vs_fp32_db' in v else "")
                          + f" at {len(v['cases'])} input shapes")


def validate_tables(result: dict) -> list[tuple]:
    """Each dataset's table, the worst content per model, warnings; returns the CSV rows (one per image)."""
    for d in result["datasets"]:
        table = Table(title=f"{shown(d['name'])} x{result['scale']}: {d['images']} images")
        for col in ("model", "precision", "PSNR-Y", "SSIM-Y", "drift dB", "visible %", "max abs diff", "worst image",
                    *(("gate",) if d.get("budget_db") is not None else ())):
            table.add_column(col)
        for m in d["models"]:
            drift = m.get("drift_db")
            gate = () if d.get("budget_db") is None else (
                "-" if "within_budget" not in m else "pass" if m["within_budget"] else "[red]fail[/red]",)
            table.add_row(shown(m["name"]) + (" (ref)" if m.get("reference") else ""), shown(m["precision"]),
                          f"{m['psnr_y']:.2f}", f"{m['ssim_y']:.4f}", "-" if drift is None else f"{drift:+.3f}",
                          f"{100 * m['visible_share']:.2f}" if "visible_share" in m else "-",
                          f"{m['max_abs_diff']:.2e}" if "max_abs_diff" in m else "-", shown(m["worst_image"]["name"]),
                          *gate)
        console.print(table)
    if len(result["datasets"]) > 1:
        for m in result["models"]:
            if m.get("drift_db") is not None and not m.get("reference"):
                w = m["worst_image"]
                console.print(f"{shown(m['name'])}: worst content {shown(m['worst_dataset'])} "
                              f"({m['drift_db']:+.3f} dB), worst image {shown(w['dataset'])}/{shown(w['name'])} "
                              f"({w['drift_db']:+.3f} dB)")
    if result.get("reference_skipped"):
        console.print(f"no drift (the FP32 PyTorch reference cannot run): {shown(result['reference_skipped'])}")
    if result.get("devices"):
        device_drift_table(result)
    for u in result["unreadable_images"]:
        err_console.print(f"[yellow]skipped unreadable image[/yellow] {shown(u['path'])}: {shown(u['error'])}",
                          soft_wrap=True)
    for m in result["models"]:
        if m["nonfinite_images"] or m["collapsed_images"]:
            err_console.print(f"[yellow]warning:[/yellow] {shown(m['name'])}: non-finite output on "
                              f"{m['nonfinite_images']}, collapsed (constant) output on {m['collapsed_images']}")
    rows = [("model", "image", "psnr_y", "ssim_y", "drift_db", "max_abs_diff", "dataset", "visible_share")]
    return rows + [(m["name"], r["name"], f"{r['psnr_y']:.4f}", f"{r['ssim_y']:.6f}",
                    "" if r.get("drift_db") is None else f"{r['drift_db']:.4f}",
                    "" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.6g}", r["dataset"],
                    "" if r.get("visible_share") is None else f"{r['visible_share']:.6f}")
                   for m in result["models"] for r in m["per_image"]]


def bench_tables(result: dict) -> list[tuple]:
    """The latency table (and the throughput table in that mode); returns the CSV rows."""
    table = Table(title="latency")
    for col in ("model", "precision", "LR", "first ms", "median ms", "p90 ms", "p99 ms", "img/s", "MP/s", "vs eager",
                "peak MB (est.)"):
        table.add_column(col)
    rows = [("model", "precision", "lr_h", "lr_w", "batch", "first_ms", "median_ms", "mean_ms", "p90_ms", "p99_ms",
             "min_ms", "max_ms", "images_per_s", "megapixels_per_s", "speedup_vs_official_eager")]
    for m in result["models"]:
        for s in m["shapes"]:
            ratio = s["speedup_vs_official_eager"]
            table.add_row(shown(m["name"]), shown(m["precision"]), f"{s['shape'][0]}x{s['shape'][1]}",
                          f"{s['first_inference_ms']:.0f}", f"{s['median_ms']:.1f}", f"{s['p90_ms']:.1f}",
                          f"{s['p99_ms']:.1f}", f"{s['images_per_s']:.2f}", f"{s['megapixels_per_s']:.1f}",
                          f"{ratio:.1f}x" if ratio else "-", _peak_cell(s.get("peak_memory")))
            rows.append((m["name"], m["precision"], *s["shape"], s["batch"], *(f"{s[k]:.3f}" for k in (
                "first_inference_ms", "median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "images_per_s",
                "megapixels_per_s")), "" if ratio is None else f"{ratio:.3f}"))
    if len(rows) > 1:  # an engine not timed (an emulator) has no row
        console.print(table)
    for m in result["models"]:
        if m.get("not_timed"):
            ran = ", ".join(f"{h}x{w}" for h, w in m["not_timed"]["ran_at"])
            console.print(f"{shown(m['name'])}: {shown(m['not_timed']['reason'])}: it ran at {ran}; no milliseconds "
                          "(an emulator's speed says nothing of the device's)", soft_wrap=True)
            shares = (m["not_timed"].get("profile") or {}).get("shares")
            if shares:
                from ..profile import group

                grouped_shares: dict = {}
                for stage, share in shares.items():
                    grouped_shares[group(stage)] = grouped_shares.get(group(stage), 0.0) + share
                console.print("  where its modelled cycles go: " + ", ".join(
                    f"{shown(k)} {100 * v:.0f}%" for k, v in grouped_shares.items()), soft_wrap=True)
    profile_tables(result)
    memory_lines(result)
    sustained_tables(result)
    load_lines(result)
    if result.get("video"):
        video_table(result)
    if result.get("baselines_skipped"):
        console.print(f"no PyTorch baselines: {shown(result['baselines_skipped'])}")
    if result["options"]["mode"] == "throughput":
        table = Table(title="throughput (requests in flight)")
        for col in ("model", "precision", "LR", "in flight", "img/s", "MP/s", "vs latency run"):
            table.add_column(col)
        for m in result["models"]:
            for s in m["shapes"]:
                if "throughput" not in s:
                    continue
                t = s["throughput"]
                table.add_row(shown(m["name"]), shown(m["precision"]), f"{s['shape'][0]}x{s['shape'][1]}",
                              str(t["inflight"]), f"{t['images_per_s']:.2f}", f"{t['megapixels_per_s']:.1f}",
                              f"{t['vs_latency']:.2f}x")
        console.print(table)
    return rows


def _peak_cell(peak: dict | None) -> str:
    if not peak or peak.get("measured_bytes") is None:
        return "-"
    cell = f"{peak['measured_bytes'] / 2**20:.0f} ({peak['estimate_bytes'] / 2**20:.0f})"
    return f"[yellow]{cell}![/yellow]" if peak.get("flag") else cell


def profile_tables(result: dict, prefix: str = "") -> None:
    """bench --profile: each engine's time per SCNet stage (the body's blocks summed; JSON keeps each)."""
    from ..profile import grouped

    roof = result.get("rooflines")
    for m in result["models"]:
        for s in m["shapes"]:
            p = s.get("profile")
            if p is None:
                continue
            where = f"{shown(prefix)}{shown(m['name'])} at {s['shape'][0]}x{s['shape'][1]}"
            if p.get("note") or not p.get("stages"):
                console.print(f"profile of {where}: {shown(p.get('note') or 'no stages')}", soft_wrap=True)
                continue
            table = Table(title=f"profile of {where}: the {p['measured_ms']:.1f} ms the profiled runs took, by stage "
                                + (f"(the runtime's counters add up to {100 * p['coverage']:.0f}% of it)"
                                   if p.get("coverage") is not None else "")
                                + (f"; rooflines there {roof['gflops']:.0f} GFLOP/s, {roof['gbytes_per_s']:.1f} GB/s"
                                   if roof else ""))
            for col in ("stage", "ms", "share", "GMAC", "MB moved", "GFLOP/s", "GB/s", "x memory roofline", "bound"):
                table.add_column(col)
            for r in grouped(p["stages"]):
                table.add_row(shown(r["stage"]), f"{r['ms']:.2f}", f"{100 * r['share']:.1f}%", f"{r['macs'] / 1e9:.3f}",
                              f"{r['bytes'] / 1e6:.1f}", "-" if r["gflops"] is None else f"{r['gflops']:.1f}",
                              "-" if r["gbytes_per_s"] is None else f"{r['gbytes_per_s']:.1f}",
                              "-" if r["x_memory_roofline"] is None else f"{r['x_memory_roofline']:.1f}x", r["bound"])
            console.print(table)
            if not p.get("stage_names"):
                console.print("  its manifest records no stage names (exported by an older scnet-deploy or the "
                              "torchscript exporter): every operator is under 'other'; re-export it")


def sustained_tables(result: dict, prefix: str = "") -> None:
    """bench --sustained: each engine's windows, first against last, where throttling started, the sensors."""
    for m in result["models"]:
        s = m.get("sustained")
        if not s:
            continue
        table = Table(title=f"sustained: {shown(prefix)}{shown(m['name'])} at {s['shape'][0]}x{s['shape'][1]} for {s['seconds']:.0f} s")
        for col in ("from s", "images/s", "CPU MHz", "max °C", "W", "J/frame"):
            table.add_column(col)
        for w in s["windows"]:
            watts = sum(w["power_w"].values()) if w.get("power_w") else None
            table.add_row(f"{w['starts_s']:.0f}", f"{w['images_per_s']:.2f}",
                          *("-" if v is None else f"{v:{f}}" for v, f in ((w.get("cpu_mhz"), ".0f"),
                                                                          (w.get("max_temperature_c"), ".1f"),
                                                                          (watts, ".2f"),
                                                                          (w.get("joules_per_frame"), ".3f"))))
        console.print(table)
        verdict = ("no throttling (no window under 90% of the first)" if s.get("throttling_from_s") is None else
                   f"throttling from {s['throttling_from_s']:.0f} s" + (
                       f" (CPU at {s['throttling_cpu_mhz']:.0f} MHz)" if s.get("throttling_cpu_mhz") else ""))
        if None not in (s.get("first_images_per_s"), s.get("last_images_per_s"), s.get("last_vs_first")):
            console.print(f"  first {shown(s['compared'])} {s['first_images_per_s']:.2f} images/s, last "
                          f"{shown(s['compared'])} {s['last_images_per_s']:.2f} ({s['last_vs_first']:.2f}x); {verdict}",
                          soft_wrap=True)
        if s.get("sensors"):
            console.print(f"  {shown(s['sensors'])}", soft_wrap=True)


def load_lines(result: dict, prefix: str = "") -> None:
    """The timings taken while other processes kept the CPUs busy, flagged (their numbers are not this machine's)."""
    for m in result["models"]:
        for s in m["shapes"]:
            flag = (s.get("load") or {}).get("flag")
            if flag:
                console.print(f"[yellow]{shown(prefix)}{shown(m['name'])} at {s['shape'][0]}x{s['shape'][1]}: "
                              f"{shown(flag)}[/yellow]", soft_wrap=True)


def memory_lines(result: dict, prefix: str = "") -> None:
    """Each engine's resident peak over its timed runs beside the memory model's estimate; large gaps flagged."""
    for m in result["models"]:
        for s in m["shapes"]:
            peak = s.get("peak_memory")
            if not peak or peak.get("measured_bytes") is None:
                continue
            line = (f"peak memory of {shown(prefix)}{shown(m['name'])} at {s['shape'][0]}x{s['shape'][1]}: "
                    f"{peak['measured_bytes'] / 2**20:.0f} MB over the runs (estimate {peak['estimate_bytes'] / 2**20:.0f} MB)")
            console.print(line + (f" [yellow]{shown(peak['flag'])}[/yellow]" if peak.get("flag") else ""),
                          soft_wrap=True)


def video_table(result: dict, prefix: str = "") -> None:
    """bench --video: does each engine keep up with the frame rate, alone and with H.264 decode and encode?"""
    from ..bench import rates_text

    v = result["video"]
    h, w, fps = v["target"]
    source = f" ({Path(v['source']).name} upscaled)" if v.get("source") else ""
    table = Table(title=f"{prefix}keeping up with {h}x{w} at {fps:g} fps{shown(source)} ({shown(v['codec'])} here: decode "
                        f"{v['decode_ms']:.1f} ms, encode {v['encode_ms']:.1f} ms per frame)")
    for col in ("model", "precision", "fps", "real time", "fps with decode+encode", "real time with codec",
                "keeps up with (codec counted)"):
        table.add_column(col)
    yes = lambda ok: "[green]yes[/green]" if ok else "[red]no[/red]"  # noqa: E731
    for m in result["models"]:
        if "video" in m:
            r = m["video"]
            table.add_row(shown(m["name"]), shown(m["precision"]), f"{r['fps']:.2f}", yes(r["real_time"]),
                          f"{r['fps_with_codec']:.2f}", yes(r["real_time_with_codec"]), rates_text(r))
    console.print(table)


def flicker_lines(result: dict) -> None:
    """validate --frames: each engine's flicker against the reference, its worst transition between frames."""
    rows = [m for m in result["models"] if "flicker_share" in m]
    if rows:
        console.print("flicker (consecutive frames; worst transition, pixels whose change differs from FP32's by 4+ "
                      "levels, and the mean difference):")
    for m in rows:
        console.print(f"  {shown(m['name'])}: {100 * m['flicker_share']:.2f}% of pixels, mean "
                      f"{m['flicker_levels']:.3f} levels", soft_wrap=True)


def device_bench_table(result: dict) -> list[tuple]:
    """bench --on: median ms per model and shape, a column per device, then each device's description; returns the
    CSV rows."""
    labels = list(result["devices"])
    table = Table(title="median ms per device")
    for col in ("model", "precision", "LR", *labels):
        table.add_column(col)
    rows = [("model", "precision", "lr_h", "lr_w", "device", "median_ms")]
    for r in result["table"]:
        table.add_row(shown(r["model"]), shown(r["precision"]), f"{r['shape'][0]}x{r['shape'][1]}",
                      *(f"{r['median_ms'][d]:.1f}" if d in r["median_ms"] else "-" for d in labels))
        rows += [(r["model"], r["precision"], *r["shape"], d, f"{ms:.3f}") for d, ms in r["median_ms"].items()]
    console.print(table)
    for label, bench_result in result["devices"].items():
        if bench_result.get("video"):
            video_table(bench_result, f"{label}: ")
        profile_tables(bench_result, f"{label}: ")
        memory_lines(bench_result, f"{label}: ")
        sustained_tables(bench_result, f"{label}: ")
    from ..doctor import machine_line

    for label, bench_result in result["devices"].items():
        console.print(f"{shown(label)}: {shown(machine_line(bench_result['machine']))}", soft_wrap=True)
    return rows


def device_drift_table(result: dict) -> None:
    """validate --on: each artifact's drift (worst content) on each device, a column per device."""
    labels = list(result["devices"])
    drift: dict = {}
    for m in result["models"]:
        if m.get("reference") or m.get("kind") == "method":
            continue
        drift.setdefault(Path(m["artifact"]).name, {})[m.get("device") or "local"] = m.get("drift_db")
    table = Table(title="drift dB vs the FP32 reference here, per device")
    for col in ("artifact", *labels):
        table.add_column(col)
    for name, by_device in drift.items():
        table.add_row(shown(name), *("-" if by_device.get(d) is None else f"{by_device[d]:+.3f}" for d in labels))
    console.print(table)


def failed_devices(failed: dict | None) -> None:
    """Each device that failed, with why, after the table of the others; exit 1."""
    for label, why in (failed or {}).items():
        err_console.print(f"[red]device failed[/red] {shown(label)}: {shown(why)}",
                          highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def upscale_lines(results: list[dict], done: str, failed_status: str) -> bool:
    """One line per image upscaled, the counts, what was skipped and what failed; True when any failed."""
    for r in results:
        if r["status"] != done:
            continue
        if "frames" in r:  # a video
            kept = f", kept: {', '.join(r['copied_streams'])}" if r["copied_streams"] else ""
            bad = f", [yellow]{r['corrupt_packets']} corrupt packet(s) skipped[/yellow]" if r["corrupt_packets"] else ""
            console.print(f"{shown(r['input'])} -> {shown(r['output'])} ({r['frames']} frames, {shown(r['codec'])} "
                          f"{r['pix_fmt']}{shown(kept)}){bad}", soft_wrap=True)
            for dropped in r.get("dropped_streams", []):
                console.print(f"  [yellow]not copied[/yellow]: {shown(dropped)} (-o .mkv holds every kind of stream)",
                              soft_wrap=True)
            if r.get("interlaced"):
                console.print("  [yellow]interlaced[/yellow]: upscaled as progressive pictures, combing included; "
                              "deinterlace it first (ffmpeg -vf bwdif)", soft_wrap=True)
            continue
        flags = [f for f in ("nonfinite", "collapsed") if r[f]]
        note = f" [yellow]warning: {' and '.join(flags)} output[/yellow]" if flags else ""
        console.print(f"{shown(r['input'])} -> {shown(r['output'])} ({r['tiles']} tile(s), {r['bits']}-bit, "
                      f"{r['channels']} ch){note}", soft_wrap=True)
    failed = [r for r in results if r["status"] == failed_status]
    ignored = [r for r in results if r["status"] == "skipped" and r["output"] is None]  # not images
    counts = {status: sum(r["status"] == status for r in results) for status in (done, failed_status, "skipped")}
    console.print(f"{counts[done]} upscaled, {counts[failed_status]} failed, {counts['skipped'] - len(ignored)} "
                  f"skipped (output exists) of {len(results) - len(ignored)}"
                  + (f"; {len(ignored)} other file(s) skipped" if ignored else ""))
    nodes = {r["node"] for r in results if r.get("node")} | {n for r in results for n in r.get("nodes", {})}
    if nodes:  # a Ray cluster did the work
        console.print(f"on the Ray cluster: {len(nodes)} node(s) worked")
    for r in ignored:
        console.print(f"[yellow]skipped[/yellow] {shown(r['input'])}: {shown(r['reason'])}", soft_wrap=True)
    for r in failed:
        console.print(f"[red]failed[/red] {shown(r['input'])}: {shown(r['error'])}", soft_wrap=True)
    return bool(failed)


def pipeline_lines(summary: dict, gate) -> None:
    best = summary["recommendation"]
    if best:
        console.print(f"[bold]recommendation:[/bold] {shown(best['name'])} ({shown(best['precision'])}), "
                      f"{best['median_ms']:.1f} ms at {best['shape'][0]}x{best['shape'][1]}, drift "
                      f"{best['drift_db']:+.3f} dB on its worst content")
    else:
        console.print(f"[bold]no engine is within the accuracy gate ({shown(gate.describe())})[/bold]")
    t = summary.get("recommendation_throughput")
    if t:
        console.print(f"[bold]for throughput:[/bold] {shown(t['name'])} ({shown(t['precision'])}), {t['images_per_s']:.2f} "
                      f"images/s at {t['shape'][0]}x{t['shape'][1]} with {t['inflight']} in flight")
    console.print(f"report: {shown(summary['report'])} ({summary['seconds']:.0f} s)")
