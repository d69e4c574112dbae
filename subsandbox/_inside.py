"""The sandbox's side of the conversation: runs inside the sandbox, on its worker thread.

The creator starts the worker by running ``serve(parcel)`` as source code in the new
interpreter; the parcel holds two channels. Requests come on the first, answers go back
on the second, one at a time:

    request  ("call", task_id, payload, refs)   payload = pickled (fn, args, kwargs)
             ("gate", 0, b"", ())                a pool's gate is about to enter
             ("stop", 0, b"", ())
    answer   ("ready", interpreter_id, config)  once, first
             ("refused", message)                instead, when guard.check() fails here
             ("ok", payload, refs)               pickled result
             ("raised", payload, refs)           pickled (exception, type name, message,
                                                 formatted traceback), or (None, the same,
                                                 why it could not cross)
             ("interrupted", b"", ())            Sandbox.interrupt() stopped the task

Only the standard library's pickle, marshal and this package's crossing code are
imported here, so a sandbox starts fast and its policy can forbid everything else.

A SandboxPoolExecutor runs its tasks through a gate instead (``_ext/gate.c``): its
driver thread enters the sandbox and calls the handler that ``gate_handlers()`` gives.
"""

from __future__ import annotations

import _pickle
import sys

# Not `import typing`: a sandbox that imports it keeps ~1,300 more strings for good
# once destroyed (docs/lifecycle.md, "Memory of closed sandboxes").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

from . import _core, _crossing


# This package's own files: the frames of its machinery (the task's caller, exec_source)
# lead every traceback and tell the user nothing.
_PACKAGE_DIR = __file__.rpartition("/")[0] + "/"


def _format_exception(exc: BaseException) -> str:
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    if tb is None:
        tb = exc.__traceback__  # raised by the machinery itself: its frames are the story
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _safe_str(exc: BaseException) -> str:
    """str(exc), or a placeholder when the exception's __str__ itself fails (as
    traceback does): the task's error must reach its caller whatever its __str__ does."""
    try:
        return str(exc)
    except _core._Interrupt:
        raise
    except BaseException:  # noqa: BLE001
        return f"<exception str() failed: {type(exc).__qualname__}>"


def _raised(exc: BaseException) -> tuple[str, bytes, tuple[object, ...]]:
    if _explain is not None:
        _explain(exc)
    try:
        formatted = _format_exception(exc)
    except _core._Interrupt:
        raise
    except BaseException:  # noqa: BLE001 - e.g. RecursionError on a very long chain
        formatted = f"{type(exc).__qualname__}: {_safe_str(exc)}\n"
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    text = _safe_str(exc)
    try:
        # Drop the traceback: frames cannot cross, and its text is sent instead. An
        # exception that pickles but cannot be rebuilt (its __init__ takes other
        # arguments than .args) is caught here, where it is cheap to check. The trial
        # load goes through this sandbox's own loader: under a policy, the pickle is the
        # sandbox code's choice, and the unrestricted loader would rebuild its functions
        # with the real globals of any module they claim to come from.
        payload, refs = _crossing.dumps((exc.with_traceback(None), kind, text, formatted),
                                        "the exception")
        # A plain PolicyError rebuilds from its message: no trial load. Once the policy's
        # seal is broken, the trial load itself is refused, and the caller should still be
        # told why in a PolicyError. (errors.py is loaded only where a policy is.)
        errors = sys.modules.get("subsandbox.errors")
        if errors is None or type(exc) is not errors.PolicyError or vars(exc):
            _loads(payload, refs)
    except _core._Interrupt:
        raise       # interrupt() stopped this pickling: the task is interrupted
    except BaseException as failure:  # noqa: BLE001 - a __reduce__ may raise SystemExit too
        # Why, for the caller's RemoteError (its message says what to do about it).
        why = f"{type(failure).__qualname__}: {_safe_str(failure)}"
        try:
            payload, refs = _crossing.dumps((None, kind, text, formatted, why),
                                            "the exception")
        except _core._Interrupt:
            raise
        except BaseException:  # noqa: BLE001
            # Even that failed (once a policy's seal is broken, any import our pickler
            # would make is refused): plain strings, which C's pickle writes unaided. The
            # worker must answer, whatever happened to the policy.
            payload, refs = _pickle.dumps(
                (None, str(kind), str(text), str(formatted), str(why)), protocol=5), ()
    return "raised", payload, refs


def exec_source(source: str) -> None:
    """Sandbox.exec(): run source code in this interpreter's ``__main__``."""
    exec(compile(source, "<sandbox>", "exec"), sys.modules["__main__"].__dict__)


def _answer(fn: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Run the call and make its answer, both as the task (_core._run_task): pickling the
    result or the exception runs code the sandbox chose (a __reduce__, a __str__), which
    interrupt() and the caller's timeouts must be able to stop as well."""
    try:
        result = fn(*args, **kwargs)
        data, out_refs = _crossing.dumps(result, "the result")
    except KeyboardInterrupt:
        # An interrupt, or the task's own: told apart once the task is over (_run), when
        # no second interrupt can land any more.
        raise
    except BaseException as exc:
        return _raised(exc)
    return "ok", data, out_refs


def _run(op: str, task_id: int, payload: Any, refs: tuple[object, ...],
         loads: Callable[[bytes, tuple[object, ...]], Any] = _crossing.loads) -> tuple[Any, ...]:
    try:
        fn, args, kwargs = loads(payload, refs)
        answer: tuple[Any, ...] = _core._run_task(task_id, _answer, (fn, args, kwargs), None)
        return answer
    except BaseException as exc:
        # An interrupt that lands while _answer answers (or before the task started),
        # the task's own KeyboardInterrupt, or an error of the request's own unpickling.
        if _core._take_interrupted() and isinstance(exc, KeyboardInterrupt):
            return "interrupted", b"", ()
        # Not an interrupt: its answer is made as the task again (same id), since
        # pickling the exception runs code the task chose (a __reduce__, a __str__),
        # which interrupt() must be able to stop.
        try:
            raised: tuple[Any, ...] = _core._run_task(task_id, _raised, (exc,), None)
            return raised
        except KeyboardInterrupt:
            _core._take_interrupted()
            return "interrupted", b"", ()


# How requests are unpickled here: the policy's loader once serve() installed one.
_loads: Callable[[bytes, tuple[object, ...]], Any] = _crossing.loads
# Under a policy: adds to a task's exception what the policy has to do with it.
_explain: Callable[[BaseException], None] | None = None


def gate_handlers() -> tuple[Any, ...]:
    """The task handlers for a gate that a pool's driver opened (gate.c).

    The handlers unpickle through the sandbox's policy, as requests are.
    """
    from . import _pool_inside

    return _pool_inside.gate_handlers(_loads)


def serve(parcel: int) -> None:
    global _loads, _explain
    requests, answers, policy = _core._parcel_take(parcel)
    # Before anything else imports: CPython 3.12 must never run a single-phase module's
    # init function in here, and no version a module with static types of its own
    # (subsandbox._single_phase).
    from . import _single_phase

    _single_phase.install()
    # Refuse to start where the isolation properties do not hold (subsandbox.guard),
    # before the policy is installed: the check itself imports what it needs.
    from . import guard

    refusal = guard.refusal()
    if refusal is not None:
        answers.send(("refused", refusal))
        _join_threads()
        return
    loads: Callable[[bytes, tuple[object, ...]], Any] = _crossing.loads
    if policy is not None:
        # The sandbox's policy (subsandbox.policy), installed before any request is read;
        # requests are then unpickled through it.
        from . import _enforce

        loads = _enforce.install(policy)
        _explain = _enforce.explain_missing_builtin
    _loads = loads
    if policy is not None:
        # Last: no global of ours may be rebound once the enforcement's state is sealed.
        _enforce.seal()
    _core._worker_enter()
    try:
        answers.send(("ready", _core.interpreter_id(), tuple(_core.interpreter_config().items())))
        while True:
            op, task_id, payload, refs = requests.recv()
            if op == "stop":
                break
            if op == "gate":
                _prepare_for_gate()
                answers.send(("ok", *_crossing.dumps(None, "the result")))
            else:
                answers.send(_run(op, task_id, payload, refs, loads))
    finally:
        _core._worker_exit()
        _join_threads()


def _prepare_for_gate() -> None:
    """Before a pool's driver first enters through a gate, on this worker thread.

    CPython 3.12's ``threading`` takes the thread that imports it first for the
    interpreter's main thread and ties it to that thread's state. A task that imports it
    through a gate would tie it to the gate's thread state, deleted when the gate closes,
    and the interpreter's shutdown would then fail on it. Imported here, the main thread
    is this worker's, which _join_threads() shuts down.
    """
    if sys.version_info < (3, 13):
        import threading  # noqa: F401


def _join_threads() -> None:
    """Wait for the sandbox's own threads while still on the worker thread.

    CPython 3.12's ``_xxsubinterpreters`` runs every thread on the interpreter's first
    thread state (gh-109860). If ``threading`` was imported here, it took this worker
    for the interpreter's main thread, whose "finished" lock is released only when that
    shared thread state is deleted, which happens *after* the join in
    ``Py_EndInterpreter``: destroying the interpreter would wait forever. Shutting
    ``threading`` down from here, where it expects to run, joins the user's threads and
    marks this one finished. 3.13+ give each OS thread its own thread state.
    """
    if sys.version_info < (3, 13) and "threading" in sys.modules:
        sys.modules["threading"]._shutdown()
