"""The kinds of worker the suites compare, behind one small interface.

A ``Runner`` runs a list of calls ``fn(*args)`` on its workers and returns the results in
order. Made once, warmed up, then timed many times, then closed.

- ``sequential``: a plain loop in the calling thread (the baseline: no pool at all).
- ``threads``: ``ThreadPoolExecutor``.
- ``processes-fork`` / ``processes-forkserver``: ``ProcessPoolExecutor`` with that start
  method. A fork-based pool must start its workers before any subinterpreter exists in
  the process (the child hangs or aborts otherwise, CPython 3.12 and 3.13); the suites
  make these first, and the harness gives every suite a fresh process.
- ``interpreters``: the standard ``InterpreterPoolExecutor`` (3.14) or the backport's
  (3.13); absent on 3.12.
- ``sandboxes``: plain ``subsandbox.Sandbox`` objects, one per worker thread, tasks taken
  from a shared queue (what an executor does, without depending on one).
- ``sandbox-pool``: ``subsandbox.SandboxPoolExecutor``, where this build has it.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import harness

Call = tuple[Callable[..., Any], tuple[Any, ...]]

_made_interpreters = False  # set before the first subinterpreter of this process is made


class Runner:
    label = "runner"

    def map(self, calls: Sequence[Call]) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Sequential(Runner):
    label = "sequential"

    def map(self, calls: Sequence[Call]) -> list[Any]:
        return [fn(*args) for fn, args in calls]


class OnExecutor(Runner):
    def __init__(self, label: str, executor: Executor) -> None:
        self.label = label
        self.executor = executor

    def map(self, calls: Sequence[Call]) -> list[Any]:
        futures = [self.executor.submit(fn, *args) for fn, args in calls]
        return [f.result() for f in futures]

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class OnSandboxes(Runner):
    """One thread per sandbox; each takes the next call from a shared queue."""

    label = "sandboxes"

    def __init__(self, sandboxes: Sequence[Any]) -> None:
        self.sandboxes = list(sandboxes)

    def map(self, calls: Sequence[Call]) -> list[Any]:
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(calls)):
            todo.put(i)
        results: list[Any] = [None] * len(calls)
        errors: list[BaseException] = []

        def work(sandbox: Any) -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                fn, args = calls[i]
                try:
                    results[i] = sandbox.call(fn, *args)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=work, args=(sb,)) for sb in self.sandboxes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


def make_sandboxes(count: int) -> list[Any]:
    """``count`` sandboxes, created in parallel (each creation holds its own thread)."""
    import subsandbox

    global _made_interpreters
    _made_interpreters = True
    return subsandbox.Sandbox.start_many(count)


def process_pool(method: str, workers: int, initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = ()) -> Runner:
    if method == "fork" and _interpreters_exist():
        raise RuntimeError("a fork-based process pool cannot start while subinterpreters "
                           "exist in this process (the children hang or abort); make it "
                           "first, or use forkserver")
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                   initializer=initializer, initargs=initargs)
    return OnExecutor(f"processes-{method}", executor)


def interpreter_pool(workers: int, setup_source: str = "") -> Runner | None:
    """The stdlib/backport InterpreterPoolExecutor, or None where there is none.

    Its workers are fresh interpreters whose ``sys.path`` is the process's initial one, so
    the initializer (``exec`` of a small script: a builtin pickles by name) puts bench/ on
    it before any task imports ``kernels``.
    """
    global _made_interpreters
    cls = harness.interpreter_pool_executor()
    if cls is None:
        return None
    _made_interpreters = True
    source = f"import sys\nsys.path.insert(0, {str(harness.BENCH_DIR)!r})\n{setup_source}"
    return OnExecutor("interpreters", cls(workers, initializer=exec, initargs=(source, {})))


def sandbox_pool(workers: int) -> Runner | None:
    global _made_interpreters
    if not harness.subsandbox_has("SandboxPoolExecutor"):
        return None
    import subsandbox

    _made_interpreters = True

    return OnExecutor("sandbox-pool", subsandbox.SandboxPoolExecutor(workers))


def _interpreters_exist() -> bool:
    """Whether this module has made a subinterpreter in this process (they outlive their
    pools only until closed, but one forgotten open would hang a forked child)."""
    return _made_interpreters


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    t = os.times()
    return t.user + t.system
