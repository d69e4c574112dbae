"""A SandboxPoolExecutor worker's loop, running inside its sandbox.

The executor starts it once per worker sandbox with a "pool" request (``_inside``); from
then on the sandbox pulls tasks from its own channel and pushes answers to the pool's
shared answer channel, so a task costs one crossing each way and no thread in the main
interpreter stands between the caller and the sandbox.

    task    ("call" | "chunk", task_id, token, fn_payload, fn_refs, drop, native, a, b)
              token       a number for the function in this worker's cache (0: none)
              fn_payload  the pickled function, or None when the worker has ``token``
              drop        a token to forget (the executor's cache for us is full), or 0
              native      True: a = args tuple, b = kwargs as pairs, both channel values
                          False: a, b = pickled (args, kwargs) and its by-reference objects
              "chunk": args is a tuple of argument tuples, the answer a tuple of results
            ("stop",)
    answer  (task_id, "ok", True, result)              the result crossed as it is
            (task_id, "ok", False, payload, refs)      the result, pickled
            (task_id, "raised", payload, refs)         as _inside._raised makes it
            (task_id, "interrupted")                   the executor interrupted it

Each task runs through ``_core._run_task(task_id, ...)``, so the executor can interrupt
exactly that task (``_core._interrupt(interpreter_id, task_id)``) and nothing else.
"""

from __future__ import annotations

from typing import Any, Callable

from . import _core, _crossing, _inside


def _run_chunk(fn: Callable[..., Any], chunk: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    return tuple([fn(*args) for args in chunk])


Loads = Callable[[bytes, tuple[object, ...]], Any]


def _answer(functions: dict[int, Callable[..., Any]], task: tuple[Any, ...],
            loads: Loads) -> tuple[Any, ...]:
    kind, task_id, token, fn_payload, fn_refs, drop, native, a, b = task
    if drop:
        functions.pop(drop, None)
    try:
        if fn_payload is None:
            fn = functions[token]
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
        if _core._take_interrupted() and isinstance(exc, KeyboardInterrupt):
            return (task_id, "interrupted")
        return (task_id, *_inside._raised(exc))
    return (task_id, "ok", True, result)


def serve(tasks: Any, answers: Any, max_tasks: int, loads: Loads = _crossing.loads) -> None:
    """Run tasks until told to stop, or until ``max_tasks`` (0: no limit) have run.

    ``loads`` unpickles functions and arguments: the sandbox policy's loader, if any.
    """
    functions: dict[int, Callable[..., Any]] = {}
    done = 0
    while not max_tasks or done < max_tasks:
        task = tasks.recv()
        if task[0] == "stop":
            return
        answer = _answer(functions, task, loads)
        try:
            answers.send(answer)
        except _core.NotShareableError:
            # The result is not a channel value (a list, an instance...): pickle it.
            task_id, _, _, result = answer
            try:
                payload, refs = _crossing.dumps(result, "the result")
                answers.send((task_id, "ok", False, payload, refs))
            except BaseException as exc:  # noqa: BLE001
                answers.send((task_id, *_inside._raised(exc)))
        del answer
        done += 1
