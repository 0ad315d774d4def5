"""Does the INT8 hold-out predict what users will see? The accuracy gate's verdict on every engine a pipeline run
built, on the export's default hold-out and on Set14 (content no export or test uses, not made by the hold-out's
generators: photos, a comic, a slide with text, a zebra, a baboon), side by side.

    scnet-deploy pipeline --output out
    python benchmarks/gate_agreement.py out/engines --out benchmarks/results/gate_agreement.md

Each verdict is ``validate --budget 0.1``'s (``gate.AccuracyGate.judge`` per content type, the worst deciding); the
hold-out is written as one folder per content type, its HR crops degraded by validate exactly as the export
degrades them.
"""

import argparse
import os
import tempfile
from pathlib import Path

SET14 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "Set14"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def holdout_folders(root: Path) -> list[Path]:
    from PIL import Image

    from scnet_deploy.calibration.data import CalibOptions, holdout_set

    folders = {}
    for item in holdout_set(CalibOptions(), 4):
        folder = folders.setdefault(item.content, root / item.content / "HR")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(item.hr).save(folder / f"{item.name.replace(':', '_').replace('/', '_')}.png")
    return [f.parent for f in folders.values()]


def verdicts(result: dict) -> dict[str, dict]:
    return {m["path"]: m for m in result["models"] if m.get("kind") == "artifact"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engines", type=Path, help="a pipeline run's engines folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=float, default=0.1)
    args = p.parse_args()
    from scnet_deploy.door import check_artifact
    from scnet_deploy.errors import ScnetDeployError
    from scnet_deploy.pipeline import reference_checkpoint
    from scnet_deploy.validate import ValidateOptions, validate

    engines = []
    for d in sorted(args.engines.iterdir()):
        try:
            check_artifact(d)
            engines.append(d)
        except ScnetDeployError:
            continue
    runnable = []
    for d in engines:  # an engine this machine cannot run (Core ML off macOS) is left out, and said so
        try:
            validate([d], ValidateOptions((SET14,), 4, limit=1, reference=reference_checkpoint()))
            runnable.append(d)
        except ScnetDeployError as exc:
            print(f"left out {d.name}: {str(exc).splitlines()[0][:120]}")
    with tempfile.TemporaryDirectory() as tmp:
        held = validate([reference_checkpoint(), *runnable],
                        ValidateOptions(tuple(holdout_folders(Path(tmp))), 4, budget_db=args.budget))
    fresh = validate([reference_checkpoint(), *runnable], ValidateOptions((SET14,), 4, budget_db=args.budget))
    a, b = verdicts(held), verdicts(fresh)
    lines = [f"# The hold-out's verdict and Set14's ({cpu_name()}, {os.cpu_count()} CPUs)", "",
             f"`python benchmarks/gate_agreement.py {args.engines} --out {args.out}`; the accuracy gate at "
             f"{args.budget} dB, 0.1% of pixels 4+ levels off FP32.", "",
             "| engine | precision | hold-out (worst visible) | Set14 (worst visible) | agree |", "|---|---|---|---|---|"]
    agree = 0
    for path in a:
        x, y = a[path], b[path]
        same = x["within_budget"] == y["within_budget"]
        agree += same

        def cell(m: dict) -> str:
            return f"{'pass' if m['within_budget'] else 'fail'} ({100 * m['visible_share']:.2f}%)"
        lines.append(f"| {Path(path).name} | {x['precision']} | {cell(x)} | {cell(y)} | {'yes' if same else '**no**'} |")
    lines += ["", f"Agreement: {agree} of {len(a)} engines.", ""]
    for path in a:
        for name, m in (("hold-out", a[path]), ("Set14", b[path])):
            if m.get("gate_failure"):
                lines.append(f"- {Path(path).name}, {name}: {m['gate_failure']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
