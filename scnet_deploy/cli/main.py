"""The command's entry point: user mistakes (ScnetDeployError, a missing export stack, a full or read-only disk)
print one line and exit 2; an interruption exits 130; anything else is a bug and keeps its traceback."""

import errno
import sys


from .. import interrupts
from ..door import shown
from ..errors import EXPORT_STACK, ScnetDeployError, needs_export_stack
from .app import app, err_console


# Failures of the user's machine, not of this code: a read-only or full disk, a path that is a folder, no permission.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EISDIR,
                      errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG, errno.EMLINK}


def environment_error(exc: OSError) -> str:
    where = f"'{exc.filename}': " if exc.filename else ""
    fix = {errno.ENOSPC: "free space there or choose another output", errno.EDQUOT: "free space there or choose "
           "another output", errno.EISDIR: "name a file, not a folder", errno.ENOTDIR: "a part of the path is a file",
           errno.EEXIST: "choose another output or remove it"}.get(exc.errno, "check the path and its permissions")
    return f"{where}{exc.strerror or exc}; {fix}."


def _exit_interrupted() -> None:
    interrupts.exit_interrupted(err_console.print)


def main() -> None:
    # A KeyboardInterrupt that escapes the handlers below (raised by a signal that lands inside one of them, or by a
    # library between its own handlers) must still end as an interruption: exit 130, never death by SIGINT (-2).
    try:
        _main()
    except KeyboardInterrupt:
        _exit_interrupted()


def _main() -> None:
    import warnings

    interrupts.install()
    warnings.showwarning = lambda message, category, *a, **k: err_console.print(
        f"[yellow]warning:[/yellow] {shown(str(message))}", highlight=False, soft_wrap=True)
    try:
        code = app(standalone_mode=False)  # typer.Exit(n) comes back as n in this mode
        if interrupts.interrupted():  # typer turns a KeyboardInterrupt into a silent Exit(130)
            _exit_interrupted()
        if isinstance(code, int) and code:
            sys.exit(code)
    except KeyboardInterrupt:
        _exit_interrupted()
    except ScnetDeployError as exc:
        if interrupts.interrupted():
            _exit_interrupted()
        err_console.print(f"[red]error:[/red] {shown(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:
        if interrupts.interrupted():
            _exit_interrupted()
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        err_console.print(f"[red]error:[/red] {shown(environment_error(exc))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        if interrupts.interrupted():
            _exit_interrupted()
        if (exc.name or "").split(".")[0] not in EXPORT_STACK:
            raise
        what = f"scnet-deploy {sys.argv[1]}" if len(sys.argv) > 1 else "this"
        err_console.print(f"[red]error:[/red] {shown(str(needs_export_stack(what, exc.name.split('.')[0])))}",
                          highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        # Matched by name and shape, not by import: the click that typer uses is vendored in some typer versions.
        if interrupts.interrupted() or type(exc).__name__ == "Abort":  # Ctrl-C / SIGTERM, after every finally:
            _exit_interrupted()
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # a usage error (unknown option, missing argument)
            sys.exit(exc.exit_code)
        raise

