"""The layout explains itself: no import cycles between the package's modules, counting the imports made inside
functions (a lazy import hides a cycle from Python, not from a reader), calibration/ a leaf, and a device's
runtime modules reaching no build code."""

import ast
import json
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


PACKAGES = {"scnet_deploy": ROOT / "scnet_deploy", "scnet_deploy.exporters": ROOT / "exporters",
            "scnet_deploy.calibration": ROOT / "calibration"}


def modules() -> dict[str, Path]:
    """Every module by its import name (subpackages included: scnet_deploy/model/arch.py is scnet_deploy.model.arch)."""
    found = {}
    for package, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            rel = f.relative_to(folder)
            if any(not (folder.joinpath(*rel.parts[:i]) / "__init__.py").exists() for i in range(1, len(rel.parts))):
                continue  # in a folder that is not a package
            parts = [package, *rel.with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its text (top level or inside a function)."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = mod if path.stem == "__init__" else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            # `from pkg.mod import x` imports pkg.mod; `from pkg import x` imports pkg (its __init__) unless x is a
            # submodule; the package's own __init__ counts like any module (it imports the verbs)
            deps |= {o for o in map(owner, targets) if o and o != mod}
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_is_read():
    graph = import_graph()
    assert "scnet_deploy.errors" in graph["scnet_deploy"]  # the package's __init__ is counted
    assert "scnet_deploy._version" in graph["scnet_deploy.doctor"]
    assert "scnet_deploy.model.arch" in graph["scnet_deploy.model.checkpoint"]  # a subpackage, relative import
    assert "scnet_deploy.door" in graph["scnet_deploy.devices.remote"]  # `from .. import door`
    assert "scnet_deploy.calibration.budget" in graph["scnet_deploy.calibration.onnxruntime_int8"]  # a top-level import
    assert "scnet_deploy.exporters.registry" in graph["scnet_deploy.runtime"]  # one inside a function


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_calibration_is_a_leaf():
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if d.startswith("scnet_deploy.exporters"))
                 for m, deps in graph.items() if m.startswith("scnet_deploy.calibration")}
    assert {m: d for m, d in offenders.items() if d} == {}


BUILD_SIDE = ("scnet_deploy.model", "scnet_deploy.calibration", "scnet_deploy.session", "scnet_deploy.export",
              "scnet_deploy.autotune", "scnet_deploy.pipeline", "scnet_deploy.exporters.torch_runner",
              "scnet_deploy.exporters.onnx_graph", "scnet_deploy.exporters.onnx_float16")


def build_modules(names) -> list[str]:
    return sorted(m for m in names if (m.startswith("scnet_deploy.exporters.") and m.endswith(".build")) or any(m == b or m.startswith(b + ".") for b in BUILD_SIDE))


def runtime_modules() -> list[str]:
    """Every backend's runtime module: a backend is a folder of exporters/ with a runtime.py."""
    return [f"scnet_deploy.exporters.{p.parent.name}.runtime" for p in sorted((ROOT / "exporters").glob("*/runtime.py"))]


def parents(module: str) -> list[str]:
    """The packages Python imports before ``module`` (their __init__ runs first)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def test_every_backend_has_a_runtime_module_walked():
    assert {m.split(".")[2] for m in runtime_modules()} >= {"onnxruntime", "openvino", "tensorrt", "coreml", "ncnn"}


def test_a_device_imports_no_build_code():
    """The runtime side of every backend (what the torch-free device install imports) reaches no build module, no
    model code and no calibration, counting lazy imports and the parent packages' __init__ (importing
    scnet_deploy.exporters.X.runtime runs scnet_deploy/__init__.py first): the build side lives in each backend's
    ``build`` module."""
    graph = import_graph()
    for runtime in runtime_modules():
        reached, todo = set(), [runtime, *parents(runtime)]
        while todo:
            module = todo.pop()
            for dep in (graph[module] | set(parents(module))) - reached:
                reached.add(dep)
                todo.append(dep)
        assert build_modules(reached) == [], runtime


def test_importing_a_runtime_or_a_device_verb_loads_no_build_code():
    """What Python actually loads (the static walk above counts every import; this one proves it on the real
    interpreter): each backend's runtime module, and the modules a device's verbs run from."""
    device_side = [*runtime_modules(), "scnet_deploy.cli", "scnet_deploy.bench", "scnet_deploy.validate",
                   "scnet_deploy.upscale", "scnet_deploy.infer", "scnet_deploy.doctor", "scnet_deploy.runtime"]
    code = ("import importlib, json, sys\n"
            f"for name in {device_side!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except ImportError:\n        pass  # a backend whose package is missing here: the walk above covers it\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('scnet_deploy'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "scnet_deploy.exporters.registry" in loaded  # it did import the verbs
    assert build_modules(loaded) == []


def test_the_walk_catches_a_build_module():
    """The check can fail: a graph where a runtime reaches export through the package's __init__ is caught."""
    assert build_modules({"scnet_deploy.export", "scnet_deploy.errors"}) == ["scnet_deploy.export"]
    assert build_modules({"scnet_deploy.exporters.ncnn.build"}) == ["scnet_deploy.exporters.ncnn.build"]
