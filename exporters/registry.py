"""The registry of export formats, keyed by name: the one place that maps a format name to its code."""

from dataclasses import dataclass
from typing import Callable

from scnet_deploy.errors import ExportError


@dataclass(frozen=True)
class Format:
    name: str
    # build(checkpoint, export_options, workdir) -> manifest fields; writes its files into workdir
    build: Callable
    description: str


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    if fmt.name in _FORMATS:
        raise ValueError(f"export format {fmt.name!r} is registered twice")
    _FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    _load_builtin()
    if name not in _FORMATS:
        raise ExportError(f"--format {name!r} is not available; choose one of {sorted(_FORMATS)}.")
    return _FORMATS[name]


def format_names() -> list[str]:
    _load_builtin()
    return sorted(_FORMATS)


def _load_builtin() -> None:
    # Importing a format module registers it; heavy imports stay inside each module's functions.
    from scnet_deploy.exporters import onnx_format  # noqa: F401
