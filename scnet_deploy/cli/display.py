"""The one display of every verb's ``Progress`` events: a spinner with the current step (and a count where the
work is counted), the time so far, and a line of its own for each outcome (built, skipped, failed). Where the
console is not a terminal (a log file, a pipe, CI), the spinner draws nothing: the current step is printed as a line
every ``LOG_EVERY_S`` seconds of work."""

import contextlib

from rich.console import Console

from .. import interrupts
from ..door import shown

# Where the console is not a terminal, the current step is printed as a line at most this often: long work shows
# progress in a log or a pipe, and a quick command's output (one line for a user's mistake) stays as it is.
LOG_EVERY_S = 10.0
OUTCOME_STYLE = {"built": "[green]built[/green]", "skipped": "[yellow]skip[/yellow]", "failed": "[red]failed[/red]"}


@contextlib.contextmanager
def progress_display(on: Console, first: str, transient: bool = True):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=on, transient=transient) as bar:
        task = bar.add_task(shown(first), total=None)

        import time

        last = [time.monotonic()]

        def show(event) -> None:
            if interrupts.interrupted():  # a library turned the interrupt into its own error: stop here
                raise KeyboardInterrupt
            if event.kind in OUTCOME_STYLE:
                bar.console.print(f"{OUTCOME_STYLE[event.kind]} {shown(event.message)}")
                if event.done is not None:
                    bar.update(task, total=event.total, completed=event.done)
            else:
                bar.update(task, description=shown(event.message), total=event.total,
                           completed=event.done or 0)
                if not on.is_terminal and time.monotonic() - last[0] >= LOG_EVERY_S:  # a log or a pipe
                    last[0] = time.monotonic()
                    count = f" ({event.done}/{event.total})" if event.total else ""
                    on.print(f"{shown(event.message)}{count}", highlight=False, soft_wrap=True)

        yield show
