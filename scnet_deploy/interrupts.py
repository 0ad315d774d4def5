"""Ctrl-C and SIGTERM end a verb as an interruption: exit 130, one line, temporaries cleaned on the way out.

Both signals raise KeyboardInterrupt, so ``finally:`` blocks run alike. A library may catch the interrupt and raise
its own error instead (torch.onnx does when it lands in a lazy import): ``interrupted()`` says the error is the
interruption. Inside an import the interrupt is deferred (see ``_terminate``).
"""

import signal
import sys

_state = {"interrupted": False}


def interrupted() -> bool:
    return _state["interrupted"]


def install() -> None:
    """Deliver SIGINT and SIGTERM as KeyboardInterrupt (``_terminate``)."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)


def _in_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _terminate(signum, frame):
    # Ctrl-C and SIGTERM (a kill from a build system) unwind alike, so temporary files are removed on the way out.
    # Remembered: a library may catch the KeyboardInterrupt and raise its own error instead (torch.onnx does when
    # the interrupt lands in one of its lazy imports); that error is then the interruption, not a failure.
    _state["interrupted"] = True
    if _in_import(frame) and hasattr(signal, "setitimer"):
        # Not inside an import: a C extension whose initialiser runs Python code (onnx's pybind11 module creating
        # enums) turns the exception into std::terminate, and the process aborts (-6). Deliver it 50 ms later,
        # again until the import is done.
        signal.signal(signal.SIGALRM, _terminate)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    cancel_deferred()
    raise KeyboardInterrupt


def cancel_deferred() -> None:
    # The interrupt is being handled: a re-delivery still pending (_terminate's timer) must not fire later, least of
    # all while the interpreter shuts down and SIGALRM's default action would kill the process (exit -14).
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)


def exit_interrupted(say) -> None:
    """Say so (``say``: how the CLI prints a line) and exit 130."""
    cancel_deferred()
    say("interrupted; nothing half-written was left behind")
    # A KeyboardInterrupt that passed through code a library ran from a string (exec/eval: dataclasses, namedtuple,
    # lazy imports) set CPython's "unhandled KeyboardInterrupt" flag although we handled it; under `python -m` the
    # interpreter would then kill itself with SIGINT after this exit (exit -2, not 130). Running any string resets
    # that flag (run_eval_code_obj in CPython 3.8-3.13).
    exec("")
    sys.exit(130)
