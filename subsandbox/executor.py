"""SandboxPoolExecutor: a concurrent.futures executor whose workers are sandboxes.

Each worker is one :class:`~subsandbox.Sandbox` (its own interpreter and GIL) with a
driver thread in the main interpreter. The driver takes the next pending task and runs
it inside its sandbox itself, through a *gate* (``_ext/gate.c``): it enters the sandbox
on a thread state of its own (the sandbox's GIL, not the main one), calls the sandbox's
task handler (``_pool_inside``), comes back with the answer and completes the future. So
a task costs two thread wake-ups, as in ``ThreadPoolExecutor``: the submitting thread
wakes an idle driver, the driver wakes whoever waits on the future.

Cost of a crossing, and how it is kept small:

- Arguments made only of channel values (None, bool, int, float, complex, str, bytes,
  tuples of them, shared objects, channels) cross as they are, without pickle. Anything
  else is pickled by ``_crossing`` (so lambdas and ``__main__`` functions work, and shared
  objects still cross by pointer). Results are treated the same way.
- A function is pickled once per pool and shipped once per worker, then named by a token,
  when that cannot change what the worker runs: it is importable (it crosses by name), or
  everything it captures (the globals it names, closure cells, defaults, and the same for
  the functions it calls) is immutable and still the very same object. Otherwise it is
  pickled for every task, as ``Sandbox.call`` does, so its globals are always current.
- ``map(..., chunksize=n)`` sends n calls per crossing.
- The common task, a function the worker already holds called with positional channel
  values, takes the gate's fast path (``_core._gate_run``): the arguments cross as they
  are, the sandbox calls the function it cached itself, and a channel-value result comes
  back bare; no pickle and no Python code of ours runs inside the sandbox. With a policy
  the cached function is the one its loader built, so the fast path changes nothing there.

Stopping tasks: ``schedule(fn, args, kwargs, timeout=...)`` returns a future whose task is
interrupted when it has run longer than ``timeout`` seconds (the future fails with
``TimeoutError``), or when the future is cancelled while it runs. The interrupt raises
in the task's Python code at its next bytecode; code blocked inside a C function (a
``time.sleep``, a lock, a long C loop) is interrupted only when it returns to Python.
The worker is not replaced: it takes the next task.

Lifecycle and locking follow ``concurrent/futures/thread.py``: ``_lock`` guards the pool's
state; nothing that can run user code or block (pickling, sending, setting a future) runs
under it. Interpreter exit shuts every pool down and waits for its tasks, like
``ThreadPoolExecutor``.

Ctrl-C and fork (docs/lifecycle.md): a ``KeyboardInterrupt`` that leaves a ``with`` block,
interrupts a ``shutdown(wait=True)``, or ends the program cancels pending tasks and
interrupts running ones instead of waiting for them. In the child of a fork, a pool of
the parent refuses work (``BrokenSandboxPool``) and its futures fail; the child may make
pools of its own.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, InvalidStateError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, NamedTuple, ParamSpec, TypeVar

from . import _core, _crossing, _lifecycle, _untrusted
from ._shipping import FunctionCache, Shipped
from ._backend import backend
from ._threads import SpareThread, worker_thread
from .policy import Policy, resolve
from .errors import (
    BrokenSandbox,
    BrokenSandboxPool,
    TaskInterrupted,
)
from .sandbox import (
    _DELIVERY_GRACE_S,
    Sandbox,
    _check_timeout,
    _interrupt_in_background,
    _refuse_inside_a_sandbox,
    _send_interrupt,
    _remote_exception,
    _task_ids,
)

__all__ = ["SandboxPoolExecutor"]

T = TypeVar("T")
P = ParamSpec("P")  # the arguments are checked against fn's parameters

# How many functions each worker keeps by token (and the pool keeps pickled).
_FUNCTION_CACHE_SIZE = 64
# How often an interrupt that found nothing to stop is retried while its task is still
# registered as running (its answer is on the way, or its worker is being replaced): the
# C core itself covers a task taken by a driver but not started yet.
_INTERRUPT_RETRY_S = 0.002

# -- interpreter exit (as thread.py: before threads are joined) ------------------------------

_pools: weakref.WeakSet[_Pool] = weakref.WeakSet()
_global_shutdown = False
_global_shutdown_lock = threading.Lock()


def _python_exit() -> None:
    global _global_shutdown
    with _global_shutdown_lock:
        _global_shutdown = True
        pools = list(_pools)
    # Ctrl-C / exit (issue #8): a program that dies of an unhandled KeyboardInterrupt
    # wants its tasks stopped, not awaited (a `while True` task would hang the exit).
    stop = _lifecycle.exiting_by_ctrl_c()
    for pool in pools:
        pool.shutdown(wait=False, cancel_futures=stop, interrupt_running=stop)
    for pool in pools:
        pool.join()


# Registered after sandbox.py's hook (this module imports it), so it runs first: the
# threading module calls these hooks in reverse order. Our workers' sandboxes close here;
# sandbox.py's hook would otherwise wait forever on a worker loop that never returns.
threading._register_atexit(_python_exit)  # type: ignore[attr-defined]


# -- what crosses -------------------------------------------------------------------------

# Whether a value crosses a channel as it is (exact builtin scalars, tuples of them,
# shared objects, channels: xvalue.c), without pickle.
_is_channel_value: Callable[[object], bool] = _core._crosses_as_is


# -- futures and work items ---------------------------------------------------------------

_DONE_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)

# How long the main thread sleeps at a time while it waits for a task (see _PoolFuture).
_SIGNAL_SLICE = 0.1


def _in_main_thread() -> bool:
    # Not current_thread(): this runs on every result() of the main thread.
    return threading.get_ident() == threading.main_thread().ident


class _PoolFuture(Future):  # type: ignore[type-arg]
    """The executor's futures: ``result()`` and ``exception()`` called in the main thread
    wait in slices and run pending signal handlers between them.

    A Ctrl-C must reach a main thread asleep in a future's lock: CPython wakes it by
    interrupting that sleep, or through the main interpreter's eval breaker. With driver
    threads switching between interpreters, a SIGINT was seen to do neither (CPython
    3.12.1: the handler's flag set, the eval breaker clear, the main thread asleep for
    good, about one Ctrl-C in a hundred). _core._run_signal_handlers reads the flag
    itself, so a Ctrl-C is raised within one slice whatever woke or failed to wake us.

    Their condition is _core._FutureCondition (futurecond.c): a threading.Condition
    over an RLock in C, since a trivial task's round trip goes through its future's
    condition six times. The waiting takes one pass under the condition per wake-up,
    and a result already there is returned without taking the condition.
    """

    def __init__(self) -> None:
        # Future.__init__'s fields (test_executor checks they are the same), with the
        # condition in C: not the threading.Condition typeshed declares, but its methods.
        self._condition = _FutureCondition()  # type: ignore[assignment]
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future[Any]], object]] = []

    def result(self, timeout: float | None = None) -> Any:
        # FINISHED is final and set after _result/_exception (Future.set_*), so a future
        # seen FINISHED can be read without its lock.
        if self._state != FINISHED:
            timeout = self._wait(timeout)
        if self._state == FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != FINISHED:
            timeout = self._wait(timeout)
        return super().exception(timeout)

    def __repr__(self) -> str:
        # Future's own (<Future at 0x... state=pending>): to its users it is a Future.
        text = super().__repr__()
        return "<Future" + text[text.index(" "):]

    def _wait(self, timeout: float | None) -> float | None:
        """Wait as result() does before the base class looks; the timeout it has left."""
        if _in_main_thread():
            # Done, or the timeout spent: the base class must not wait a second time.
            _wait_handling_signals(self, timeout)
            return 0
        return timeout


_FutureCondition = _core._FutureCondition


def _wait_handling_signals(future: Future[Any], timeout: float | None) -> None:
    """Wait until ``future`` is done or ``timeout`` passes, in slices, running pending
    signal handlers between them (see _PoolFuture)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    condition = future._condition
    while True:
        with condition:
            if future._state in _DONE_STATES:
                return
            if deadline is None:
                condition.wait(_SIGNAL_SLICE)
            else:
                wait = min(_SIGNAL_SLICE, deadline - time.monotonic())
                if wait <= 0:
                    return
                condition.wait(wait)
            done = future._state in _DONE_STATES
        # Outside the lock: a handler may use the future (cancel it, add a callback).
        _core._run_signal_handlers()
        if done:
            return


def _wait_event_handling_signals(event: threading.Event) -> None:
    """``event.wait()``; in the main thread, in slices (see _PoolFuture)."""
    if not _in_main_thread():
        event.wait()
        return
    while not event.wait(_SIGNAL_SLICE):
        _core._run_signal_handlers()


class _InterruptibleFuture(_PoolFuture):
    """A future from ``schedule()``: ``cancel()`` also stops it while it runs."""

    _on_cancel_running: Callable[[], None] | None = None

    def cancel(self) -> bool:
        with self._condition:
            if self._state != RUNNING or self._on_cancel_running is None:
                return super().cancel()
            # Cancelled now, as a pending future is; the worker is freed when the
            # interrupt lands. Waiters (wait, as_completed) learn it at once.
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
            stop = self._on_cancel_running
            self._on_cancel_running = None
        self._invoke_callbacks()  # type: ignore[attr-defined]
        stop()
        return True


class _WorkItem:
    __slots__ = ("future", "kind", "shipped", "native", "a", "b", "timeout", "fast",
                 "task_id", "sandbox_id", "stop_reason")

    def __init__(self, future: Future[Any], kind: str, shipped: Shipped, native: bool,
                 a: object, b: object, timeout: float | None) -> None:
        self.future = future
        self.kind = kind
        self.shipped = shipped
        self.native = native
        self.a = a
        self.b = b
        self.timeout = timeout
        # A cached function on positional channel values: the gate's fast path
        # (_core._gate_run) runs it once the worker holds the function.
        self.fast = native and not b and shipped.token != 0 and kind == "call"
        self.task_id = 0
        self.sandbox_id = 0
        self.stop_reason: str | None = None  # "timeout" or "cancel" once asked to stop


class _Worker:
    """One worker sandbox, from its start to its close. (A recycled or broken worker is
    replaced by a new _Worker on the same driver thread.)"""

    __slots__ = ("slot", "sandbox", "sandbox_id", "gate", "known", "done")

    def __init__(self, slot: int) -> None:
        self.slot = slot                        # its driver's slot in the task queue
        self.sandbox: Sandbox | None = None
        self.sandbox_id = 0
        self.gate: _core._Gate | None = None    # _core gate into the sandbox (gate.c)
        self.known: OrderedDict[int, None] = OrderedDict()  # tokens this sandbox holds
        self.done = 0


# -- the pool -----------------------------------------------------------------------------

class _Pool:
    """The executor's state and threads; threads hold it, not the executor, so that an
    executor dropped without shutdown() is collected and its pool shut down."""

    def __init__(self, max_workers: int, initializer: Callable[..., object] | None,
                 initargs: tuple[Any, ...], max_tasks_per_worker: int | None,
                 policy: Policy | None, thread_name_prefix: str = "") -> None:
        self.max_workers = max_workers
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks = max_tasks_per_worker or 0
        self.policy = resolve(policy)
        # What comes out of a worker under a policy is untrusted data, loaded as
        # Sandbox.call loads it (subsandbox._untrusted).
        self.loads = (_crossing.loads if self.policy.is_unrestricted
                      else _untrusted.loader(self.policy))
        self.lock = threading.Lock()
        # Pending tasks, and None once the pool ends (each driver that takes it puts it
        # back for the next): thread.py's design, in C (taskqueue.c). It keeps thread.py's
        # idle tokens (put() says whether it took one), and the task each driver holds
        # (get(slot)), for the child of a fork.
        self.queue = _core._TaskQueue(max_workers)
        self.threads: list[threading.Thread] = []  # a driver thread per worker slot
        self.alive = 0                          # driver threads not yet finished
        self.no_driver = threading.Event()      # set while alive == 0 (see join())
        self.no_driver.set()
        self.serving = 0                        # workers whose sandbox is up
        self.running: dict[int, _WorkItem] = {}
        self.interrupting = False               # running tasks are being stopped for good
        self.shutdown_requested = False
        self.broken: str | None = None
        self.broken_cause: BaseException | None = None
        self.watchdog: _Watchdog | None = None
        self.functions = FunctionCache(_FUNCTION_CACHE_SIZE)
        self.number = next(_pool_numbers)
        # The threads' names, as ThreadPoolExecutor makes them: "<prefix>_<slot>".
        self.thread_name_prefix = thread_name_prefix or f"SandboxPoolExecutor-{self.number}"

    # -- submitting --------------------------------------------------------------------

    def prepare(self, future: Future[Any], kind: str, fn: Callable[..., Any],
                args: tuple[Any, ...], kwargs: dict[str, Any],
                timeout: float | None) -> _WorkItem:
        """Everything that can fail or run user code (pickling), before any lock."""
        if not callable(fn):
            raise TypeError(f"a task needs a callable, not {type(fn).__name__}")
        shipped = self.functions.ship(fn)
        if not kwargs:
            pairs: tuple[tuple[str, Any], ...] = ()
            if _is_channel_value(args):
                return _WorkItem(future, kind, shipped, True, args, pairs, timeout)
        else:
            pairs = tuple(kwargs.items())
            if _is_channel_value(args) and _is_channel_value(pairs):
                return _WorkItem(future, kind, shipped, True, args, pairs, timeout)
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        payload, refs = _crossing.dumps((args, kwargs), f"the arguments of {name}",
                                        ("args", "kwargs"))
        return _WorkItem(future, kind, shipped, False, payload, refs, timeout)

    def _refuse_if_closed_locked(self) -> None:
        if self.broken is not None:
            raise BrokenSandboxPool(self.broken) from self.broken_cause
        if self.shutdown_requested:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if _global_shutdown:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    def refuse_if_closed(self) -> None:
        """The error submit() would raise now, before prepare() pickles anything: a pool
        that is shut down says so, whatever the arguments."""
        with self.lock, _global_shutdown_lock:
            self._refuse_if_closed_locked()

    def submit(self, item: _WorkItem) -> None:
        with self.lock, _global_shutdown_lock:
            self._refuse_if_closed_locked()
            if not self.queue.put(item) and len(self.threads) < self.max_workers:
                self._start_worker_locked()
            if isinstance(item.future, _InterruptibleFuture) and self.watchdog is None:
                # Started now, by the submitting thread: the first running task that
                # needs it may start during exit, when 3.12 starts no thread.
                self.watchdog = _Watchdog(self)

    def _start_worker_locked(self) -> None:
        slot = len(self.threads)
        spare = self._spare_thread(slot)
        thread = worker_thread(self._drive, args=(slot, spare),
                               name=f"{self.thread_name_prefix}_{slot}")
        try:
            thread.start()
        except BaseException:
            if spare is not None:
                spare.release()
            raise
        self.alive += 1
        self.no_driver.clear()
        self.threads.append(thread)

    def _next_task(self, worker: _Worker) -> _WorkItem | None:
        """The next task for ``worker``, marked running; None when the pool is done."""
        tasks, slot = self.queue, worker.slot
        while True:
            item: _WorkItem | None = tasks.get(slot)
            if item is None:
                self.queue.put(None)  # for the next driver
                return None
            if item.future.set_running_or_notify_cancel():
                break
        # Published without the pool's lock: the dict's own operations are atomic, and
        # whoever stops tasks (stop_task, shutdown, the watchdog) takes the lock to decide
        # and then asks the C core, which interrupts only a task that still runs.
        item.task_id = task_id = next(_task_ids)
        item.sandbox_id = worker.sandbox_id
        self.running[task_id] = item
        if self.interrupting:
            self._interrupt_if_unmarked(item)
        if isinstance(item.future, _InterruptibleFuture):
            item.future._on_cancel_running = (
                lambda item=item: self.stop_task(item, "cancel"))
        if item.timeout is not None:
            self._watchdog().watch(item, time.monotonic() + item.timeout)
        return item

    def _task_message(self, worker: _Worker, item: _WorkItem) -> tuple[Any, ...]:
        shipped = item.shipped
        drop = 0
        if not shipped.token:
            token, fn_payload, fn_refs = 0, shipped.payload, shipped.refs
        elif shipped.token in worker.known:
            worker.known.move_to_end(shipped.token)
            token, fn_payload, fn_refs = shipped.token, None, ()
        else:
            worker.known[shipped.token] = None
            if len(worker.known) > _FUNCTION_CACHE_SIZE:
                drop = worker.known.popitem(last=False)[0]
            token, fn_payload, fn_refs = shipped.token, shipped.payload, shipped.refs
        return (item.kind, item.task_id, token, fn_payload, fn_refs, drop,
                item.native, item.a, item.b)

    def _run_slow(self, worker: _Worker, gate: _core._Gate,
                  item: _WorkItem) -> tuple[Any, ...]:
        """Run ``item`` through ``worker``'s gate with its whole message (_pool_inside):
        the function's pickle when the worker lacks it, pickled arguments, chunks."""
        answer = _core._gate_call(gate, self._task_message(worker, item))
        if not answer:
            # The worker does not hold the function we thought it held (its first
            # unpickling there failed): send it again, with its pickle.
            worker.known.pop(item.shipped.token, None)
            answer = _core._gate_call(gate, self._task_message(worker, item))
        return answer

    # -- stopping a task ---------------------------------------------------------------

    def stop_task(self, item: _WorkItem, reason: str) -> None:
        with self.lock:
            if item.task_id not in self.running or item.stop_reason is not None:
                return
            item.stop_reason = reason
        self._watchdog().interrupt(item)

    def _watchdog(self) -> _Watchdog:
        with self.lock:
            if self.watchdog is None:
                self.watchdog = _Watchdog(self)
            return self.watchdog

    # -- completing futures ------------------------------------------------------------

    def _complete(self, item: _WorkItem, answer: tuple[Any, ...]) -> None:
        future = item.future
        if isinstance(future, _InterruptibleFuture):
            future._on_cancel_running = None
        if len(answer) == 1:            # _core._gate_run's bare result
            _settle(future, result=answer[0])
            return
        kind = answer[1]
        if kind == "ok":
            if answer[2]:
                _settle(future, result=answer[3])
                return
            try:
                result = self.loads(answer[3], answer[4])
            except BaseException as exc:  # noqa: BLE001
                _settle(future, exc=exc)
            else:
                _settle(future, result=result)
        elif kind == "raised":
            _settle(future, exc=_remote_exception(self.loads, answer[2], answer[3],
                                                  not self.policy.is_unrestricted))
        elif kind == "failed here":
            _settle(future, exc=answer[2])
        elif item.stop_reason == "timeout":
            self.time_out(item)         # settled at the deadline already (the watchdog)
        elif item.stop_reason != "cancel":
            _settle(future, exc=TaskInterrupted("the task was interrupted"))

    def time_out(self, item: _WorkItem) -> None:
        """Fail a task's future because its deadline passed (a no-op once settled)."""
        future = item.future
        if isinstance(future, _InterruptibleFuture):
            future._on_cancel_running = None
        _settle(future, exc=FuturesTimeoutError(
            f"the task ran longer than its timeout ({item.timeout} s) and was "
            f"interrupted"))

    # -- the drivers: one thread per worker slot ----------------------------------------

    def _spare_thread(self, slot: int) -> SpareThread | None:
        """On 3.12, a started thread for this driver's next sandbox (SpareThread): a
        sandbox started during exit, for tasks submitted just before the program ended or
        to replace a recycled worker then, needs its thread started beforehand. None where
        threads start at exit anyway, or when none can start now."""
        if backend.threads_start_at_exit:
            return None
        try:
            return SpareThread(name=f"{self.thread_name_prefix}_{slot}-spare",
                               daemon=True)
        except RuntimeError:        # exiting already: the sandbox start will say so
            return None

    def _drive(self, slot: int, spare: SpareThread | None) -> None:
        spares = [spare]            # this driver's spare thread, if any (a cell)
        try:
            while self._run_one_sandbox(_Worker(slot), spares):
                pass
        finally:
            if spares[0] is not None:
                spares[0].release()
            with self.lock:
                self.alive -= 1
                last = self.alive == 0 and (self.shutdown_requested or self.broken is not None)
                watchdog = self.watchdog
                if self.alive == 0:
                    self.no_driver.set()
            if last and watchdog is not None:
                watchdog.stop(join=False)

    def _run_one_sandbox(self, worker: _Worker, spares: list[SpareThread | None]) -> bool:
        """Start a sandbox in ``worker``, run tasks in it, close it. Whether to go on.
        ``spares[0]``: a started thread for the sandbox (3.12), replaced once used."""
        spare, spares[0] = spares[0], None
        try:
            sandbox = Sandbox._on_thread(self.policy, spare)
        except BaseException as exc:  # noqa: BLE001
            if spare is not None:
                spare.release()     # unused if the sandbox failed before it needed it
            with self.lock:
                others_serve = self.serving > 0
            if not (_global_shutdown and others_serve):
                self._fail_pool("a worker sandbox could not be started", exc)
            # else: CPython 3.12 starts no thread during exit, so no sandbox either; the
            # workers that run finish the pending tasks.
            return False
        if spare is not None:
            spares[0] = self._spare_thread(worker.slot)     # for the next sandbox
        worker.sandbox = sandbox
        worker.sandbox_id = sandbox.id
        with self.lock:
            self.serving += 1
        try:
            if self.initializer is not None:
                try:
                    sandbox.call(self.initializer, *self.initargs)
                except BaseException as exc:  # noqa: BLE001
                    self._fail_pool("a sandbox initializer failed, the pool is not usable "
                                    "anymore", exc)
                    return False
            try:
                sandbox._prepare_for_gate()
                worker.gate = gate = _core._gate_open(sandbox.id)
            except BaseException as exc:  # noqa: BLE001
                self._fail_pool("a worker sandbox could not be entered", exc)
                return False
            return self._serve(worker, gate)
        finally:
            with self.lock:
                self.serving -= 1
            if worker.gate is not None:
                _core._gate_close(worker.gate)
                worker.gate = None
            try:
                sandbox.close()
            except BaseException:  # noqa: BLE001 - a broken sandbox may fail to close
                pass

    def _serve(self, worker: _Worker, gate: _core._Gate) -> bool:
        """Run tasks through ``worker``'s gate until the pool is done (False) or the
        worker must be replaced (True: recycled, or broken)."""
        running, known = self.running, worker.known
        gate_run = _core._gate_run
        while True:
            item = self._next_task(worker)
            if item is None:
                return False
            task_id = item.task_id
            try:
                token = item.shipped.token
                if item.fast and token in known:
                    # The common task: no pickle, no Python handler (gate.c's fast path).
                    known.move_to_end(token)
                    # item.fast: `a` is the arguments tuple, not a pickle's bytes.
                    answer = gate_run(gate, task_id, token, item.a)  # type: ignore[arg-type]
                    if not answer:
                        answer = self._run_slow(worker, gate, item)
                else:
                    answer = self._run_slow(worker, gate, item)
            except _core._GateFailed as exc:
                running.pop(task_id, None)
                error = BrokenSandbox(
                    f"worker sandbox {item.sandbox_id} stopped working while it ran this "
                    f"task; the pool replaced it")
                error.__cause__ = exc
                _settle(item.future, exc=error)
                return True
            except BaseException as exc:  # noqa: BLE001
                # Raised here, in the main interpreter: the task's arguments could not
                # cross into the sandbox, or its answer could not be rebuilt. The task
                # fails with that error; the sandbox is untouched and serves on.
                answer = (task_id, "failed here", exc)
            running.pop(task_id, None)
            if item.timeout is not None:
                # The watchdog keeps the item until its deadline: let its data go now.
                item.shipped = None  # type: ignore[assignment]
                item.a = item.b = None
            if len(answer) == 1 and type(item.future) is _PoolFuture:
                # The common answer: a channel value that a submit() task returned.
                try:
                    item.future.set_result(answer[0])
                except InvalidStateError:
                    pass
            else:
                self._complete(item, answer)
            del item, answer
            worker.done += 1
            if (self.max_tasks and worker.done >= self.max_tasks
                    and (backend.threads_start_at_exit or not _global_shutdown)):
                # (Not during a 3.12 exit: the new sandbox's thread could not start, and
                # the tasks left would fail; memory no longer matters then.)
                return True

    def _fail_pool(self, message: str, cause: BaseException) -> None:
        with self.lock:
            if self.broken is None:
                self.broken = message
                self.broken_cause = cause
            failed = self._drain_locked()
            self.queue.put(None)
        for item in failed:
            if item.future.set_running_or_notify_cancel():
                error = BrokenSandboxPool(message)
                error.__cause__ = cause
                _settle(item.future, exc=error)

    # -- shutting down -----------------------------------------------------------------

    def shutdown(self, wait: bool = True, cancel_futures: bool = False,
                 interrupt_running: bool = False) -> None:
        with self.lock:
            self.shutdown_requested = True
            cancelled = self._drain_locked() if cancel_futures else []
            self.queue.put(None)
            stopping = self._mark_running_stopped_locked() if interrupt_running else []
        for item in cancelled:
            item.future.cancel()
            item.future.set_running_or_notify_cancel()
        self._interrupt_tasks(stopping)
        if wait:
            try:
                self.join()
            except KeyboardInterrupt:
                # Ctrl-C while waiting for the tasks (issue #8): stop them rather than
                # leave them running behind the exception.
                self._stop_everything()
                raise

    # -- Ctrl-C and interrupting shutdown (issue #8) -----------------------------------

    def _mark_running_stopped_locked(self) -> list[_WorkItem]:
        """The running tasks not yet asked to stop, now marked as asked (under lock)."""
        # list(): drivers add and remove their tasks without the lock. One that adds its
        # task after this look sees `interrupting` and interrupts it itself (_next_task).
        self.interrupting = True
        stopping = [item for item in list(self.running.values()) if item.stop_reason is None]
        for item in stopping:
            item.stop_reason = "shutdown"   # its future fails with TaskInterrupted
        return stopping

    def _interrupt_tasks(self, items: list[_WorkItem]) -> None:
        """Interrupt ``items`` through the watchdog: an interrupt waits for the
        sandbox's GIL, which a long C call (a big pow, a regex) holds to its end, and the
        caller (shutdown(wait=False), terminate_workers()) must not wait for that. From
        this thread where none can start (a 3.12 exit). _core._interrupt also catches a
        task sent but not started (it is interrupted as it starts); False means it has
        ended."""
        if not items:
            return
        try:
            watchdog = self._watchdog()
        except RuntimeError:
            watchdog = None
        if watchdog is not None:
            for item in items:
                watchdog.interrupt(item)
            return
        for item in items:
            _send_interrupt(item.sandbox_id, item.task_id)

    def _interrupt_if_unmarked(self, item: _WorkItem) -> None:
        """A task published as shutdown(interrupt_running=True) or a Ctrl-C looked at the
        running ones: it is one of them. The C core interrupts a task sent but not started
        as it starts, so it never runs on."""
        with self.lock:
            if item.stop_reason is not None:
                return
            item.stop_reason = "shutdown"
        self._interrupt_tasks([item])

    def _stop_everything(self, until_they_end: bool = False) -> None:
        """No new tasks, pending ones cancelled, running ones interrupted; no wait.
        ``until_they_end`` (kill_workers): the running tasks' futures fail at once, and
        the tasks are interrupted again and again until they end."""
        with self.lock:
            self.shutdown_requested = True
            cancelled = self._drain_locked()
            self.queue.put(None)
            stopping = self._mark_running_stopped_locked()
            # Those asked to stop before (a timeout, cancel(), terminate_workers()) too.
            running = list(self.running.values()) if until_they_end else []
        for item in cancelled:
            item.future.cancel()
            item.future.set_running_or_notify_cancel()
        # Settled before any interrupt: an interrupt waits for the sandbox's GIL, which
        # a long C call holds to its end, and kill_workers() must not wait for that.
        for item in running:
            future = item.future
            if isinstance(future, _InterruptibleFuture):
                future._on_cancel_running = None
            _settle(future, exc=TaskInterrupted("the task was stopped by kill_workers()"))
        if running:
            try:
                self._watchdog().keep_interrupting(running)     # its thread interrupts
                return
            except RuntimeError:    # no thread starts during a 3.12 exit: once is all
                pass
        self._interrupt_tasks(stopping)

    # -- fork (issue #8) ------------------------------------------------------------------

    def abandon_after_fork(self) -> None:
        """In the child of a fork: the workers, threads and channels are the parent's
        (the sandboxes are marked closed by sandbox.py's hook, the channels by the C
        core). Make the pool refuse work with an error that says so, and fail the
        futures the child inherited, which would otherwise wait forever."""
        self.lock = threading.Lock()    # a parent thread may have held it at the fork
        self.broken = ("this SandboxPoolExecutor belongs to the parent process: its "
                       "worker sandboxes do not cross fork(); make a new "
                       "SandboxPoolExecutor in this process")
        self.broken_cause = None
        self.shutdown_requested = True
        # Every future not done: queued, or held by a driver (running, or between the
        # queue and `running`: the queue keeps each driver's task). The parent's queue
        # is read without its lock, which a parent thread may have held; then a fresh
        # one, ended.
        orphans = list({id(item.future): item.future
                        for item in self.queue._after_fork_child()
                        if item is not None and not item.future.done()}.values())
        self.queue = _core._TaskQueue(self.max_workers)
        self.queue.put(None)
        self.running.clear()
        # Nothing left to stop or join: shutdown() and join() do nothing.
        self.threads = []
        self.alive = self.serving = 0
        self.no_driver = threading.Event()
        self.no_driver.set()
        self.watchdog = None
        for future in orphans:
            # Only this thread exists in the child; the future's lock may have been
            # held by a thread of the parent at the instant of the fork.
            future._condition = threading.Condition()
            if isinstance(future, _InterruptibleFuture):
                future._on_cancel_running = None
            if future.done() or not (future.running()
                                     or future.set_running_or_notify_cancel()):
                continue
            _settle(future, exc=BrokenSandboxPool(
                "the task was submitted in the parent process and runs there, not in "
                "this child of fork()"))

    def _drain_locked(self) -> list[_WorkItem]:
        return [item for item in self.queue.drain() if item is not None]

    def join(self) -> None:
        current = threading.current_thread()
        if current not in self.threads:
            # Wait on an event first, not in Thread.join(): on 3.12, a Ctrl-C that
            # interrupts Thread.join() may mark the running thread stopped (bpo-45274's
            # handler releases the thread's own lock), and no later join() waits for it.
            _wait_event_handling_signals(self.no_driver)
        for thread in list(self.threads):
            if thread is not current:
                thread.join()
        watchdog = self.watchdog
        if watchdog is not None:
            watchdog.stop()


_pool_numbers = itertools.count()


def _abandon_pools_after_fork() -> None:
    # Fork (issue #8): the child's pools are unusable copies; the child's own exit must
    # not wait for them, and it may make new ones.
    global _global_shutdown_lock
    _global_shutdown_lock = threading.Lock()   # may have been held by a parent thread
    pools = list(_pools)
    _pools.clear()
    for pool in pools:
        pool.abandon_after_fork()


_lifecycle.on_fork_child(_abandon_pools_after_fork)


def _settle(future: Future[Any], *, result: object = None,
            exc: BaseException | None = None) -> None:
    """Complete ``future`` unless it was cancelled meanwhile (a running scheduled task)."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class _Round(NamedTuple):
    """What the watchdog does in one round."""
    due: list[_WorkItem]            # past their deadline now
    late: list[_WorkItem]           # timed out, their interrupt not delivered in the grace
    retry: list[_WorkItem]          # to interrupt once
    persistent: list[_WorkItem]     # to interrupt until they end (kill_workers)


class _Watchdog:
    """One thread per pool: fails tasks past their deadline, and sends the interrupts
    that stop tasks (timeouts, cancel(), shutdown, kill_workers()), retrying those that
    found their task not yet started.

    It never waits for an interrupt itself: _core._interrupt waits for the sandbox's GIL,
    which a long C call (a big pow, a regex) holds to its end. Each interrupt goes out
    from a short-lived thread of its own, at most one per task at a time, so no other
    deadline or interrupt of the pool waits with it.

    A task past its deadline fails once its interrupt is delivered, as
    Sandbox.call_with_timeout raises (_DELIVERY_GRACE_S): a channel wait it was in has
    then failed without taking an item, so what the caller sends next is not taken by
    the task it gave up. A C call holding its GIL delays delivery: the future fails
    after the grace all the same."""

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._cond = threading.Condition(threading.Lock())
        self._deadlines: list[tuple[float, int, _WorkItem]] = []
        self._retry: list[_WorkItem] = []           # to interrupt now
        self._again: list[_WorkItem] = []           # found nothing to stop: retry later
        self._persistent: list[_WorkItem] = []      # interrupted until they end
        self._sending: set[int] = set()             # task ids with an interrupt in flight
        self._unsettled: dict[int, _WorkItem] = {}  # timed out, their interrupt not sent
        self._grace: list[tuple[float, int, _WorkItem]] = []    # when they fail anyway
        self._next_pass = 0.0       # when the retries and persistent interrupts go again
        self._stopped = False
        self._thread = worker_thread(self._run, daemon=False,
                                     name=f"{pool.thread_name_prefix}-watchdog")
        self._thread.start()

    def watch(self, item: _WorkItem, deadline: float) -> None:
        with self._cond:
            heapq.heappush(self._deadlines, (deadline, item.task_id, item))
            self._cond.notify()

    def interrupt(self, item: _WorkItem) -> None:
        with self._cond:
            self._retry.append(item)
            self._cond.notify()

    def keep_interrupting(self, items: list[_WorkItem]) -> None:
        """Interrupt ``items`` every few ms until each has ended (kill_workers): code
        that catches KeyboardInterrupt cannot go on for long."""
        with self._cond:
            self._persistent.extend(items)
            self._cond.notify()

    def stop(self, join: bool = True) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if join and self._thread is not threading.current_thread():
            self._thread.join()

    def _next_round_locked(self) -> _Round | None:
        """Wait for work, or None once stopped. Retries and persistent interrupts go
        every _INTERRUPT_RETRY_S."""
        while True:
            if self._stopped:
                return None
            now = time.monotonic()
            due = []
            while self._deadlines and self._deadlines[0][0] <= now:
                due.append(heapq.heappop(self._deadlines)[2])
            late = []
            while self._grace and self._grace[0][0] <= now:
                item = heapq.heappop(self._grace)[2]
                if self._unsettled.pop(item.task_id, None) is not None:
                    late.append(item)
            paced = bool(self._again or self._persistent)
            if paced and now >= self._next_pass:
                self._next_pass = now + _INTERRUPT_RETRY_S
                retry = self._retry + self._again
                self._retry, self._again = [], []
                return _Round(due, late, retry, list(self._persistent))
            if due or late or self._retry:
                retry, self._retry = self._retry, []
                return _Round(due, late, retry, [])
            waits = [heap[0][0] - now for heap in (self._deadlines, self._grace) if heap]
            if paced:
                waits.append(self._next_pass - now)
            # A deadline is at most TIMEOUT_MAX ahead (schedule() checks), but an
            # OverflowError here would kill the watchdog and every timeout and cancel()
            # of the pool with it: clamp.
            self._cond.wait(min(min(waits), threading.TIMEOUT_MAX) if waits else None)

    def _run(self) -> None:
        pool = self._pool
        while True:
            with self._cond:
                work = self._next_round_locked()
            if work is None:
                return
            due, late, retry, persistent = work
            timed_out = []
            for item in due:
                with pool.lock:
                    if item.task_id not in pool.running or item.stop_reason is not None:
                        continue
                    item.stop_reason = "timeout"
                timed_out.append(item)
            if timed_out:
                with self._cond:
                    # Failed once its interrupt is sent (_send), or at the latest then.
                    at_the_latest = time.monotonic() + _DELIVERY_GRACE_S
                    for item in timed_out:
                        self._unsettled[item.task_id] = item
                        heapq.heappush(self._grace, (at_the_latest, item.task_id, item))
            # Interrupts not delivered within the grace (a C call holds the GIL): the
            # future fails now all the same, and the worker stays busy until the call
            # returns, as it does for code blocked in C (a sleep, a read).
            for item in late:
                pool.time_out(item)
            for item in timed_out + retry:
                with pool.lock:
                    running = item.task_id in pool.running
                if running:
                    self._send(item, retry_if_missed=True)
            ended = []
            for item in persistent:
                with pool.lock:
                    running = item.task_id in pool.running
                if running:
                    self._send(item, retry_if_missed=False)
                else:
                    ended.append(item)
            if ended:
                with self._cond:
                    for item in ended:
                        self._persistent.remove(item)
            del due, late, retry, persistent, timed_out, ended, work

    def _send(self, item: _WorkItem, retry_if_missed: bool) -> None:
        """Interrupt ``item``'s task from a thread of its own, unless an interrupt of it
        is still in flight. One that finds nothing to stop (queued in its channel, or
        its answer on the way) is retried while the task is still registered as
        running, when ``retry_if_missed``."""
        with self._cond:
            if item.task_id in self._sending:
                return
            self._sending.add(item.task_id)

        def sent(delivered: bool) -> None:
            # Whatever happened, later interrupts of this task must not be skipped.
            with self._cond:
                self._sending.discard(item.task_id)
                if not delivered and retry_if_missed:
                    self._again.append(item)
                    self._cond.notify()
                timed_out = self._unsettled.pop(item.task_id, None)
            if timed_out is not None:   # settled outside the lock: callbacks run
                self._pool.time_out(timed_out)

        _interrupt_in_background(item.sandbox_id, item.task_id, done=sent,
                                 name=f"{self._pool.thread_name_prefix}-interrupt")


# More workers than any machine can hold sandboxes for (each is an interpreter with its
# own thread and a few MiB); the task queue makes a slot for each up front.
MAX_WORKERS = 1 << 16


def _usable_cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# -- the public class ---------------------------------------------------------------------

class SandboxPoolExecutor(Executor):
    """An executor that runs each task in one of a pool of sandboxes.

    A drop-in for ``ThreadPoolExecutor``/``ProcessPoolExecutor`` code, whose workers run
    Python in parallel on every core (each sandbox has its own GIL), take the same
    callables as ``Sandbox.call`` (lambdas and ``__main__`` functions included), and share
    ``subsandbox.share()`` objects by pointer. ``schedule()`` adds what no standard
    executor can do: stop a running task (timeout, or ``cancel()``), keeping its worker.

    ``max_workers`` defaults to the number of CPUs this process may use. ``initializer``
    runs in each new worker sandbox (its failure breaks the pool: ``BrokenSandboxPool``).
    ``max_tasks_per_worker`` closes and replaces a worker after that many tasks.
    ``policy`` is given to every worker sandbox. ``thread_name_prefix`` names the
    threads that drive the workers (``<prefix>_<slot>``), as ``ThreadPoolExecutor``'s and
    ``InterpreterPoolExecutor``'s do.
    """

    # The positional parameters are ThreadPoolExecutor's and InterpreterPoolExecutor's,
    # in their order, so that code calling those positionally runs unchanged.
    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), *,
                 max_tasks_per_worker: int | None = None,
                 policy: Policy | None = None) -> None:
        # As Sandbox() does; its workers would fail only at the first submit().
        _refuse_inside_a_sandbox("a SandboxPoolExecutor")
        if max_workers is None:
            max_workers = _usable_cpu_count()
        elif not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise TypeError(f"max_workers must be an int, not {type(max_workers).__name__}")
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if max_workers > MAX_WORKERS:
            # The task queue has a slot per possible worker, made up front (a
            # ThreadPoolExecutor(len(items)) idiom asked for 10**8: 7 s and 3.4 GB).
            raise ValueError(f"max_workers={max_workers} is more than a "
                             f"SandboxPoolExecutor takes ({MAX_WORKERS}): each worker is a "
                             f"sandbox, an interpreter with its own thread and memory; "
                             f"pass None for one worker per CPU")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        try:
            initargs = tuple(initargs)
        except TypeError:
            raise TypeError(f"initargs must be a tuple of arguments for the initializer, "
                            f"not {type(initargs).__name__}") from None
        if max_tasks_per_worker is not None:
            if not isinstance(max_tasks_per_worker, int) or isinstance(max_tasks_per_worker,
                                                                       bool):
                raise TypeError("max_tasks_per_worker must be an int or None, not "
                                f"{type(max_tasks_per_worker).__name__}")
            if max_tasks_per_worker <= 0:
                raise ValueError("max_tasks_per_worker must be >= 1")
        if not isinstance(thread_name_prefix, str):
            raise TypeError(f"thread_name_prefix must be a str, "
                            f"not {type(thread_name_prefix).__name__}")
        self._max_workers = max_workers
        self._pool = _Pool(max_workers, initializer, initargs, max_tasks_per_worker,
                           policy, thread_name_prefix)
        with _global_shutdown_lock:
            _pools.add(self._pool)
        # An executor dropped without shutdown() lets its workers go once idle.
        self._finalizer = weakref.finalize(self, self._pool.shutdown, False)
        self._finalizer.atexit = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in a worker sandbox; returns its Future.

        Raises ``TypeError`` at once when the function or the arguments cannot cross.
        """
        self._pool.refuse_if_closed()
        future: Future[T] = _PoolFuture()
        self._pool.submit(self._pool.prepare(future, "call", fn, args, kwargs, None))
        return future

    def schedule(self, fn: Callable[..., T], args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, *,
                 timeout: float | None = None) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` as a task that can be stopped while it runs.

        If it runs longer than ``timeout`` seconds (counted from when a worker starts
        it), the task's Python code is interrupted and the future fails with
        ``TimeoutError`` as soon as the interrupt is delivered: a channel wait the task
        was in has then failed without taking an item. ``future.cancel()`` interrupts it
        while it runs too, and the future ends cancelled at once. Either way the worker
        stays and runs the next task. Code blocked inside a C function (``time.sleep``,
        a lock, a C extension's loop) is interrupted only when it returns to Python: its
        future fails on time all the same, and its worker takes the next task once that
        code has returned. A C call that holds its sandbox's GIL (a huge ``pow``) delays
        the delivery itself: its future fails 0.1 s after the deadline.
        """
        timeout = _check_timeout(timeout)
        if kwargs is None:
            kwargs = {}
        elif not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict or None, not {type(kwargs).__name__}")
        if isinstance(args, (str, bytes, bytearray)):
            # tuple("abc") would call fn('a', 'b', 'c')
            raise TypeError(f"args must be a tuple of arguments, not "
                            f"{type(args).__name__}: for one argument, pass (value,)")
        try:
            args = tuple(args)
        except TypeError:
            raise TypeError(f"args must be a tuple (or another iterable) of arguments, not "
                            f"{type(args).__name__}: for one argument, pass (value,)") from None
        self._pool.refuse_if_closed()
        future: Future[T] = _InterruptibleFuture()
        self._pool.submit(self._pool.prepare(future, "call", fn, args, kwargs, timeout))
        return future

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any],  # type: ignore[override,unused-ignore]
            timeout: float | None = None, chunksize: int = 1,
            buffersize: int | None = None) -> Iterator[T]:
        """Like ``Executor.map`` (3.14's, on every version): ``chunksize`` calls cross
        into a worker at once; with ``buffersize``, at most that many tasks (chunks)
        are submitted and not yet yielded, and the iterables are read as results are
        consumed."""
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError(f"chunksize must be an int, not {type(chunksize).__name__}")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and (isinstance(buffersize, bool)
                                       or not isinstance(buffersize, int)):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        # The clock starts before anything is submitted, as in Executor.map.
        end_time = None if timeout is None else timeout + time.monotonic()
        self._pool.refuse_if_closed()
        work: Iterator[tuple[Any, ...]] = zip(*iterables)
        if chunksize > 1:
            work = itertools.batched(work, chunksize)
        pool = self._pool

        kind = "chunk" if chunksize > 1 else "call"

        def submit(args: tuple[Any, ...]) -> Future[Any]:
            # As submit() does, through the pool: the executor itself is held weakly.
            future: Future[Any] = _PoolFuture()
            pool.submit(pool.prepare(future, kind, fn, args, {}, None))
            return future

        if buffersize:
            futures: collections.deque[Future[Any]] = collections.deque(
                submit(args) for args in itertools.islice(work, buffersize))
        else:
            futures = collections.deque(submit(args) for args in work)
        # The result iterator holds the executor weakly, as Executor.map's does, so
        # that an executor dropped while its results are read is collected.
        return _results(weakref.ref(self), futures, work if buffersize else None,
                        submit, end_time, chunked=chunksize > 1)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False,
                 interrupt_running: bool = False) -> None:
        """Like ``Executor.shutdown``: no new tasks; pending ones run unless
        ``cancel_futures``; with ``wait``, returns once every worker sandbox is closed.

        ``interrupt_running=True`` also interrupts the tasks that are running (their
        futures fail with ``TaskInterrupted``), as ``schedule()``'s timeouts do: code
        blocked in C stops when it returns to Python, and code that catches
        ``KeyboardInterrupt`` may go on. A ``KeyboardInterrupt`` (Ctrl-C) while
        ``wait`` waits does the same as ``cancel_futures=True, interrupt_running=True``
        and is raised without waiting further.
        """
        self._pool.shutdown(wait, cancel_futures, interrupt_running)

    def terminate_workers(self) -> None:
        """As 3.14's ``ProcessPoolExecutor.terminate_workers()``: stop everything now.

        No new tasks are accepted, pending ones are cancelled, and running ones are
        interrupted once (their futures fail with ``TaskInterrupted``), without waiting:
        ``shutdown(wait=False, cancel_futures=True, interrupt_running=True)``. As a
        process may handle SIGTERM, a task may catch the ``KeyboardInterrupt`` to clean
        up; ``kill_workers()`` does not let it go on. The pool is then shut down.
        """
        self._pool.shutdown(False, True, True)

    def kill_workers(self) -> None:
        """As 3.14's ``ProcessPoolExecutor.kill_workers()``: ``terminate_workers()``,
        and more, as SIGKILL is more than SIGTERM: the running tasks' futures fail at
        once with ``TaskInterrupted``, and the tasks are interrupted again every few
        milliseconds until they end, so that a cleanup in an ``except
        KeyboardInterrupt`` or ``finally`` block is interrupted too.

        A sandbox is a thread of this process, not a process that can be killed: code
        that catches ``KeyboardInterrupt`` in a loop and goes on is not stopped, and
        code blocked inside a C function ends only when that function returns to
        Python. Until they end, their workers are busy, and ``shutdown(wait=True)``
        and the program's exit wait for them.
        """
        self._pool._stop_everything(until_they_end=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: object,
                 exc_tb: object) -> None:
        """Waits for the tasks, as every executor does, except on Ctrl-C: a
        ``KeyboardInterrupt`` leaving the ``with`` block cancels the pending tasks and
        interrupts the running ones before waiting for the workers to close, so that
        Ctrl-C ends a ``with`` block of runaway tasks at once."""
        stop = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.shutdown(wait=True, cancel_futures=stop, interrupt_running=stop)

    def __repr__(self) -> str:
        pool = self._pool
        state = ("broken" if pool.broken else "shut down" if pool.shutdown_requested
                 else "running")
        # Tasks not started and not cancelled: the queue also holds cancelled ones (until
        # a driver drops them), the drivers' stop mark (None) after a shutdown or a
        # failure, and the task each driver holds (pending until it starts it).
        futures = {id(item.future): item.future for item in pool.queue.unsettled()
                   if item is not None}
        pending = sum(future._state == PENDING for future in futures.values())
        return (f"<subsandbox.SandboxPoolExecutor max_workers={self._max_workers} "
                f"workers={pool.alive} pending={pending} {state}>")


def _result_or_cancel(future: Future[Any], timeout: float | None) -> Any:
    """concurrent.futures._base._result_or_cancel: the result, the future cancelled."""
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future      # the exception it raised would keep it in a cycle


def _results(executor: weakref.ref[SandboxPoolExecutor], futures: collections.deque[Future[Any]],
             more: Iterator[tuple[Any, ...]] | None, submit: Callable[[tuple[Any, ...]], Future[Any]],
             end_time: float | None, chunked: bool) -> Iterator[Any]:
    """Executor.map's result iterator (3.14's, buffersize included): results in order,
    each future cancelled once read or when the iterator is closed; ``more`` (with a
    buffer) gives the arguments of the next task to submit as each result is read;
    chunks' results are flattened."""

    def results() -> Iterator[Any]:
        try:
            while futures:
                if more is not None and executor() is not None:
                    args = next(more, None)
                    if args is not None:
                        futures.append(submit(args))
                remaining = None if end_time is None else end_time - time.monotonic()
                # Never bound to a name here: a result yielded is the caller's alone.
                if chunked:
                    yield from _result_or_cancel(futures.popleft(), remaining)
                else:
                    yield _result_or_cancel(futures.popleft(), remaining)
        finally:
            for future in futures:
                future.cancel()

    return results()


