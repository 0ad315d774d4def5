"""Open any model as a Runner: a checkpoint (PyTorch FP32) or an artifact directory (its manifest names the backend).

Artifacts pass the door (``door.check_artifact``: every file listed, regular and hashed) into a private copy, the
exact bytes hashed; their graph is checked to be SCNet's (``graph_guard``); only then does a runtime load it, from
that copy (removed when the runner is).
"""

import shutil
import tempfile
import weakref
from pathlib import Path

from .door import ArtifactError, check_artifact, clean_text
from .manifest import MANIFEST_NAME, read_manifest
from .options import RuntimeOptions


def open_model(path: str | Path, runtime: RuntimeOptions = RuntimeOptions(), scale: int | None = None,
               form: str = "official"):
    """A Runner for ``path``: a checkpoint file runs in PyTorch (``form``: official or a deploy shift form).
    ``runner.arch`` is the ArchSpec dict (from the manifest of an artifact)."""
    from scnet_deploy.exporters.registry import get_backend

    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST_NAME).exists():
            subs = sorted(p.name for p in path.iterdir() if (p / MANIFEST_NAME).exists())
            hint = f" It holds artifacts {subs}: name one of those." if subs else ""
            raise ArtifactError(f"'{path}' has no {MANIFEST_NAME}, so it is not an scnet-deploy artifact.{hint}")
        get_backend(read_manifest(path)["backend"]).require()  # a missing runtime is the first thing to say
        private = Path(tempfile.mkdtemp(prefix="scnet-deploy-artifact-"))  # mode 0700: this process's alone
        try:
            runner = _load_checked(path, private, runtime)
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
        weakref.finalize(runner, shutil.rmtree, private, True)
        tuned = runner.manifest.get("autotune") or {}
        if tuned.get("tile"):  # the autotuner measured tiles faster than whole images on the machine it ran on
            from scnet_deploy.exporters.runner import TiledRunner

            runner = TiledRunner(runner, tuned["tile"], runner.arch["receptive_radius"], runner.arch["scale"])
        elif tuned.get("split"):  # ... or split execution: the body whole, the tail on tiles
            from scnet_deploy.exporters.split import SplitRunner

            runner = SplitRunner(runner, tuned["split"])
        runner.name = f"{path.name}: {runner.name}"
        return runner
    from .errors import require_export_stack

    require_export_stack(f"running the checkpoint '{path}' in PyTorch")
    from scnet_deploy.exporters.torch_runner import TorchRunner

    from .model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, scale=scale)
    module = ckpt.model
    if form != "official":
        from .model.rewrites import DeployOptions, to_deploy_form

        module = to_deploy_form(module, DeployOptions(shift=form))
    return TorchRunner(module, name=f"{path.name}: pytorch {form}", threads=runtime.threads,
                       arch=ckpt.spec.to_dict())


def _load_checked(path: Path, private: Path, runtime: RuntimeOptions):
    """The artifact ``path`` copied into ``private`` as it is hashed, its graph checked, loaded from the copy."""
    from scnet_deploy.exporters.registry import get_backend

    from .graph_guard import guard

    from .signing import check as check_signature

    manifest = check_artifact(path, required=lambda m: get_backend(m["backend"]).reads, copy_into=private)
    signed_by = check_signature(private, runtime.trust, str(path))  # over the copy: the bytes that will run
    backend = get_backend(manifest["backend"])
    module = backend.runtime()
    guard(module, private, manifest, f"artifact '{path}'")
    errors = module.load_errors() if hasattr(module, "load_errors") else ()
    try:
        runner = module.load(private, manifest, runtime)  # declares its manifest, arch and size range
        runner.signed_by = signed_by  # the --trust key that verified it, or None
        return runner
    except errors as exc:  # a file the runtime cannot load: the artifact's fault, not this code's
        raise ArtifactError(f"artifact '{path}': {backend.name} cannot load it "
                            f"({clean_text(str(exc))[:200]}); re-export it.") from None


def find_checkpoint(models: list[Path]) -> Path | None:
    """The FP32 reference for a set of models: the first checkpoint among them, else the first checkpoint an
    artifact's manifest names that exists here."""
    for m in models:
        if Path(m).is_file():
            return Path(m)
    for m in models:
        if (Path(m) / MANIFEST_NAME).exists():
            path = Path(read_manifest(Path(m)).get("checkpoint", {}).get("path", ""))
            if path.is_file():
                return path
    return None


def require_models_exist(models) -> None:
    """Every MODEL path named (a checkpoint file or an artifact folder) exists: one line naming the missing ones,
    before any model runs (not after the others have)."""
    from .errors import ScnetDeployError

    missing = [str(m) for m in models if isinstance(m, (str, Path)) and not Path(m).exists()]
    if missing:
        raise ScnetDeployError(f"MODEL {', '.join(repr(m) for m in missing)} does not exist: a MODEL is a checkpoint "
                               "file or an artifact folder (export writes them); nothing was run.")
