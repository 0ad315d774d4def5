"""Time the main job step by step: ``python benchmarks/pipeline_time.py OUT`` runs ``pipeline()`` on its defaults
and prints each progress event with the seconds since the start, then the total, the recommendation and the form
chosen per engine (the README's breakdown of the pipeline time comes from this output)."""

import sys
import time
from pathlib import Path

from scnet_deploy.pipeline import PipelineOptions, pipeline


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:] or ["pipeline-out"])[0])
    t0 = time.perf_counter()

    def say(event):
        if event.total is not None and 1 < event.done < event.total:
            return  # counted work (validate's images): its first and last event are enough
        kind = "" if event.kind == "step" else event.kind
        print(f"{time.perf_counter() - t0:7.1f}", *[p for p in (kind, event.message) if p], flush=True)

    summary = pipeline(None, PipelineOptions(output=out), progress=say)
    print("total", round(time.perf_counter() - t0, 1), "s; recommendation:", summary["recommendation"])
    print({label: f["form"] for label, f in summary["forms"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
