"""A hostile device: the ``ForceCommand`` of a test sshd (tests/devices.py). Every command the client sends comes
here as ``$SSH_ORIGINAL_COMMAND``; the first rule of the plan (``PLAN``, a JSON list of [regex, action, argument])
whose regex matches it decides the answer, and a command no rule matches runs as it would (``sh -c``).

Actions: ``doctor`` (print the doctor JSON at argument), ``reply`` (print the file at argument, then exit 0),
``zeros`` (print argument bytes of zeros), ``fail`` (print argument to stderr, exit 1), ``bench`` (write a valid
bench result where the command's --json asks, for as many models as it names, after argument seconds if given), ``build`` (make the engine files
of a TensorRT build in the artifact folder the command names; argument: ``good``, ``unverified`` or ``links``),
``ok`` (exit 0, do nothing), ``hang`` (never answer), ``hang_once`` (the first command it matches never
answers, the later ones are answered as ``bench``; argument: a file that marks the first as taken), ``drip`` (one
byte every 0.5 s, forever).
"""

import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path


def bench_result(argv: list[str]) -> None:
    i = argv.index("bench")
    models = []
    for word in argv[i + 1:]:
        if word.startswith("--"):
            break
        models.append(word)
    out = Path(argv[argv.index("--json") + 1])
    shipped = all((Path(m) / "manifest.json").is_file() and not (Path(m) / "manifest.json").is_symlink()
                  for m in models)
    if not shipped:
        sys.stderr.write("error: checkpoint does not exist\n")
        sys.exit(2)
    result = {"models": [{"name": f"{Path(m).name}: onnxruntime", "path": m, "backend": "onnxruntime",
                          "precision": "fp32", "baseline": False, "shapes": [{"shape": [8, 8], "median_ms": 1.5}]}
                         for m in models],
              "machine": {"cpu": {"model": "Hostile \x1b]0;owned\x07CPU", "cores": 2, "arch": "x86_64"}, "gpus": [],
                          "os": "Linux", "versions": {"scnet_deploy": None}}}
    out.write_text(json.dumps(result))


def build(argv: list[str], kind: str) -> None:
    art = Path(argv[argv.index("build-engine") + 1])
    (art / "model.plan").write_bytes(b"plan bytes")
    (art / "timing.cache").write_bytes(b"cache bytes")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"].update({n: hashlib.sha256((art / n).read_bytes()).hexdigest()
                              for n in ("model.plan", "timing.cache")})
    manifest["tensorrt"].update({"engine": "model.plan", "version": "10.13.0.35", "engine_note": None})
    if kind != "unverified":
        precision = manifest["precision"]
        manifest["verification"] = {"passed": True, "precision": precision, "max_abs_diff": 1e-6,
                                    "min_psnr_vs_fp32_db": 99.0, "rule": "max abs diff <= 0.0001",
                                    "runtime": "model.plan: tensorrt",
                                    "reference_sha256": hashlib.sha256(Path(argv[argv.index("--verification") + 1])
                                                                       .read_bytes()).hexdigest(),
                                    "engine_sha256": manifest["files"]["model.plan"],
                                    "cases": [{"max_abs_diff": 1e-6, "psnr_vs_fp32_db": 99.0}] * len(argv_inputs(argv))}
    if kind == "links":
        outside = art.parent.parent
        os.symlink(outside / "X", art / ".manifest.json.tmp")
        os.symlink("../", art / "peek")
    (art / "manifest.json").write_text(json.dumps(manifest))


def argv_inputs(argv: list[str]) -> list[str]:
    import numpy as np

    with np.load(argv[argv.index("--verification") + 1]) as data:
        return [k for k in data.files if k.startswith("input_")]


def _first(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def main() -> None:
    command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    plan = json.loads(Path(sys.argv[1]).read_text()) if Path(sys.argv[1]).exists() else []
    for pattern, action, argument in plan:
        if not re.search(pattern, command):
            continue
        argv = shlex.split(command)
        out = sys.stdout.buffer
        if action == "doctor" or action == "reply":
            out.write(Path(argument).read_bytes())
        elif action == "zeros":
            block = b"\0" * 2**20
            for _ in range(int(argument) // len(block)):
                out.write(block)
        elif action == "fail":
            sys.stderr.write(argument)
            sys.exit(1)
        elif action == "bench":
            if argument:  # seconds to take first (a slow device)
                import time

                time.sleep(float(argument))
            bench_result(argv)
        elif action == "build":
            build(argv, argument)
        elif action == "hang" or action == "hang_once" and _first(argument):
            import time

            time.sleep(60)  # longer than any deadline a test sets; not an hour of stray processes after the tests
        elif action == "hang_once":
            bench_result(argv)
        elif action == "drip":
            import time

            while True:
                out.write(b"{")
                out.flush()
                time.sleep(0.5)
        out.flush()
        sys.exit(0)
    os.execv("/bin/sh", ["sh", "-c", command])


if __name__ == "__main__":
    main()
