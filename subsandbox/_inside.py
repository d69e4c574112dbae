"""The sandbox's side of the conversation: runs inside the sandbox, on its worker thread.

The creator starts the worker by running ``serve(parcel)`` as source code in the new
interpreter; the parcel holds two channels. Requests come on the first, answers go back
on the second, one at a time:

    request  ("call", task_id, payload, refs)   payload = pickled (fn, args, kwargs)
             ("pool", task_id, (tasks, answers, max_tasks), ())
                                                 become a SandboxPoolExecutor worker:
                                                 run _pool_inside.serve until it ends
             ("stop", 0, b"", ())
    answer   ("ready", interpreter_id, config)  once, first
             ("refused", message)                instead, when guard.check() fails here
             ("ok", payload, refs)               pickled result
             ("raised", payload, refs)           pickled (exception or None, type name,
                                                 message, formatted traceback)
             ("interrupted", b"", ())            Sandbox.interrupt() stopped the task

Only the standard library's pickle, marshal and this package's crossing code are
imported here, so a sandbox starts fast and its policy can forbid everything else.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from . import _core, _crossing


def _format_exception(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


def _raised(exc: BaseException) -> tuple[str, bytes, tuple[object, ...]]:
    formatted = _format_exception(exc)
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        # Drop the traceback: frames cannot cross, and its text is sent instead. An
        # exception that pickles but cannot be rebuilt (its __init__ takes other
        # arguments than .args) is caught here, where it is cheap to check.
        payload, refs = _crossing.dumps((exc.with_traceback(None), kind, str(exc), formatted),
                                        "the exception")
        _crossing.loads(payload, refs)
    except Exception:
        payload, refs = _crossing.dumps((None, kind, str(exc), formatted), "the exception")
    return "raised", payload, refs


def exec_source(source: str) -> None:
    """Sandbox.exec(): run source code in this interpreter's ``__main__``."""
    exec(compile(source, "<sandbox>", "exec"), sys.modules["__main__"].__dict__)


def _run(op: str, task_id: int, payload: Any, refs: tuple[object, ...],
         loads: Callable[[bytes, tuple[object, ...]], Any] = _crossing.loads) -> tuple[Any, ...]:
    try:
        fn, args, kwargs = loads(payload, refs)
        result = _core._run_task(task_id, fn, args, kwargs)
    except BaseException as exc:
        if _core._take_interrupted() and isinstance(exc, KeyboardInterrupt):
            return "interrupted", b"", ()
        return _raised(exc)
    try:
        data, out_refs = _crossing.dumps(result, "the result")
    except BaseException as exc:
        return _raised(exc)
    return "ok", data, out_refs


def _serve_pool(channels: tuple[Any, Any, int],
                loads: Callable[[bytes, tuple[object, ...]], Any]) -> tuple[Any, ...]:
    """The "pool" request: serve executor tasks until told to stop.

    A request of its own, not a call of ``_pool_inside.serve``: a policy would rightly
    refuse to unpickle a function of this package, and the tasks must be unpickled by
    the policy's loader (``loads``), never by the plain one.
    """
    from . import _pool_inside

    tasks, pool_answers, max_tasks = channels
    try:
        _pool_inside.serve(tasks, pool_answers, max_tasks, loads)
    except BaseException as exc:  # noqa: BLE001 - reported to the executor's driver
        return _raised(exc)
    return ("ok", *_crossing.dumps(None, "the result"))


def serve(parcel: int) -> None:
    requests, answers, policy = _core._parcel_take(parcel)
    # Refuse to start where the isolation properties do not hold (subsandbox.guard),
    # before the policy is installed: the check itself imports what it needs.
    from . import guard

    refusal = guard.refusal()
    if refusal is not None:
        answers.send(("refused", refusal))
        _join_threads()
        return
    loads = _crossing.loads
    if policy is not None:
        # The sandbox's policy (subsandbox.policy), installed before any request is read;
        # requests are then unpickled through it.
        from . import _enforce

        loads = _enforce.install(policy)
    _core._worker_enter()
    try:
        answers.send(("ready", _core.interpreter_id(), tuple(_core.interpreter_config().items())))
        while True:
            op, task_id, payload, refs = requests.recv()
            if op == "stop":
                break
            if op == "pool":
                answers.send(_serve_pool(payload, loads))
            else:
                answers.send(_run(op, task_id, payload, refs, loads))
    finally:
        _core._worker_exit()
        _join_threads()


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
