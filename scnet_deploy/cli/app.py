"""The Typer application and its two consoles (results on stdout, progress and errors on stderr)."""

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export, profile and validate SCNet super-resolution models.")
console = Console()
err_console = Console(stderr=True)
