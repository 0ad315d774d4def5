"""The ``scnet-deploy`` command: a thin Typer layer, one library call per verb.

One module per group of verbs (``about``, ``build``, ``measure``, ``run``, ``pipeline``), each command parsing its
options, calling one library function (or the device layer's, with ``--on``) and printing; option groups declared
once (``groups``); tables and result files (``output``); the progress display (``display``); exit codes
(``main``).
"""

from . import about, build, measure, pipeline, run  # noqa: F401  (each registers its commands on ``app``)
from .app import app
from .main import environment_error, main

__all__ = ["app", "environment_error", "main"]
