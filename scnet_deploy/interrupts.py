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


def abandoned() -> bool:
    """An inference was left computing in its thread (``run_stoppable``): its engine must not be freed under it."""
    return bool(_state.get("abandoned"))


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
    if _state.get("abandoned"):
        # an inference that could not be cancelled still computes in native code: the interpreter's shutdown would
        # wait on it or abort (-6) under it; every finally: has run, so leave now
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(130)


def run_stoppable(call, stop=None, grace_s: float = 0.5):
    """``call()``, stoppable by Ctrl-C or SIGTERM within a second even while it sits in native code (an inference in
    ONNX Runtime, OpenVINO, ncnn), where Python's handlers would only run after it returns: it runs in a helper
    thread while this thread waits, interruptibly. On an interrupt ``stop()`` asks the runtime to end the run (ONNX
    Runtime's ``RunOptions.terminate``, OpenVINO's request cancel), the helper gets ``grace_s`` to finish (a runtime
    checks its flag between operators, and one large operator can outlast it: the grace, not the operator, bounds
    the stop), and the interrupt goes on; a runtime that cannot be cancelled is left computing in its daemon thread, which does not
    keep the process from exiting. Outside the main thread (which alone receives signals) it is a plain call."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return call()
    box, done = {}, threading.Event()  # an Event, not join(): a join cut by an interrupt loses track (3.11)

    def target():
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller, whatever it is
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="inference", daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        if stop is not None:
            try:
                stop()
            except Exception:  # the interrupt is what matters; a runtime that cannot stop is abandoned
                pass
        if not done.wait(grace_s if stop is not None else 0):
            _state["abandoned"] = True  # exit_interrupted leaves without waiting for it
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]


class deferred:
    """A block that Ctrl-C and SIGTERM do not cut short (removing what a run left on a device): an interrupt that
    arrives inside it is held and raised when it ends, unless an exception is already on its way out."""

    def __enter__(self):
        import threading

        self._main = threading.current_thread() is threading.main_thread()
        self._held = []
        if self._main:
            self._previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            for s in self._previous:
                signal.signal(s, lambda signum, frame: self._held.append(signum))
        return self

    def __exit__(self, kind, exc, tb):
        if self._main:
            for s, handler in self._previous.items():
                signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if self._held and kind is None:
            _state["interrupted"] = True
            raise KeyboardInterrupt
        return False
