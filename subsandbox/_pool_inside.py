"""A SandboxPoolExecutor worker's task handler, running inside its sandbox.

The executor's driver thread enters its worker sandbox through a gate (``_ext/gate.c``)
and calls ``handle(task)`` there for each task, on its own thread: no other thread stands
between the thread that submits a task and the one that runs it.

    task    ("call" | "chunk", task_id, token, fn_payload, fn_refs, drop, native, a, b)
              token       a number for the function in this worker's cache (0: none)
              fn_payload  the pickled function, or None when the worker has ``token``
              drop        a token to forget (the executor's cache for us is full), or 0
              native      True: a = args tuple, b = kwargs as pairs, both channel values
                          False: a, b = pickled (args, kwargs) and its by-reference objects
              "chunk": args is a tuple of argument tuples, the answer a tuple of results
    answer  (task_id, "ok", True, result)              the result crossed as it is
            (task_id, "ok", False, payload, refs)      the result, pickled
            (task_id, "raised", payload, refs)         as _inside._raised makes it
            (task_id, "interrupted")                   the executor interrupted it
            ()                                         fn_payload is None and this worker
                                                       does not hold ``token``: the
                                                       executor sends the function again

The gate tries the first form of an answer and, when the result is not a channel value
(a list, an instance...), asks ``pickled(task_id, result)`` for the second.

The common task, a function this worker holds called with channel values as positional
arguments, does not come here at all: ``_core._gate_run`` takes the function from
``functions`` (the cache ``handle`` fills) and calls it itself, and asks ``failed`` or
``pickled`` only for an exception or a result that is not a channel value.

Each task runs through ``_core._run_task(task_id, ...)``, so the executor can interrupt
exactly that task (``_core._interrupt(interpreter_id, task_id)``) and nothing else.
"""

from __future__ import annotations

from . import _core, _crossing, _inside

# Not `import typing`: a sandbox that imports it keeps ~1,300 more strings for good
# once destroyed (docs/lifecycle.md, "Memory of closed sandboxes").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    Loads = Callable[[bytes, tuple[object, ...]], Any]
    Handlers = tuple[Callable[[Any], Any], Callable[[int, object], Any],
                     dict[int, Callable[..., Any]], Callable[[int, BaseException], Any]]


def _run_chunk(fn: Callable[..., Any], chunk: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    return tuple([fn(*args) for args in chunk])


def _answer(functions: dict[int, Callable[..., Any]], task: tuple[Any, ...],
            loads: Loads) -> tuple[Any, ...]:
    kind, task_id, token, fn_payload, fn_refs, drop, native, a, b = task
    if drop:
        functions.pop(drop, None)
    try:
        if fn_payload is None:
            fn = functions.get(token)
            if fn is None:
                return ()
        else:
            fn = loads(fn_payload, fn_refs)
            if token:
                functions[token] = fn
        if native:
            args, kwargs = a, dict(b)
        else:
            args, kwargs = loads(a, b)
        if kind == "chunk":
            result = _core._run_task(task_id, _run_chunk, (fn, args), None)
        else:
            result = _core._run_task(task_id, fn, args, kwargs)
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: it fails the task only
        return _failed(task_id, exc)
    return (task_id, "ok", True, result)


def _failed(task_id: int, exc: BaseException) -> tuple[Any, ...]:
    """The answer of a task that raised ``exc`` (or that the executor interrupted)."""
    if _core._take_interrupted() and isinstance(exc, KeyboardInterrupt):
        return (task_id, "interrupted")
    return _as_task(task_id, _raised_answer, task_id, exc)


def _pickled(task_id: int, result: object) -> tuple[Any, ...]:
    """The answer of a task whose result is not a channel value: pickled."""
    return _as_task(task_id, _pickled_answer, task_id, result)


def _as_task(task_id: int, make: Callable[..., tuple[Any, ...]],
             *args: Any) -> tuple[Any, ...]:
    """``make(*args)`` run as the task again (_core._run_task, same id): pickling a result
    or an exception runs code the task chose (a __reduce__, a __str__), which the
    executor's timeouts and cancel() must stop as they stop the task itself."""
    try:
        answer: tuple[Any, ...] = _core._run_task(task_id, make, args, None)
        return answer
    except KeyboardInterrupt:
        _core._take_interrupted()
        return (task_id, "interrupted")


def _raised_answer(task_id: int, exc: BaseException) -> tuple[Any, ...]:
    return (task_id, *_inside._raised(exc))


def _pickled_answer(task_id: int, result: object) -> tuple[Any, ...]:
    try:
        payload, refs = _crossing.dumps(result, "the result")
    except _core._Interrupt:
        raise
    except BaseException as exc:  # noqa: BLE001
        return (task_id, *_inside._raised(exc))
    return (task_id, "ok", False, payload, refs)


def gate_handlers(loads: Loads) -> Handlers:
    """``(handle, pickled, functions, failed)`` for one gate; ``loads`` unpickles
    functions and arguments (the sandbox policy's loader, if any): every function in
    ``functions`` came through it. The function cache lives as long as the gate."""
    functions: dict[int, Callable[..., Any]] = {}

    def handle(task: tuple[Any, ...]) -> tuple[Any, ...]:
        return _answer(functions, task, loads)

    return handle, _pickled, functions, _failed
