"""Sandbox: one isolated interpreter with its own GIL, and the thread that runs it.

A sandbox owns one worker thread. The thread enters the new interpreter once, runs
``subsandbox._inside.serve`` there, and from then on answers requests that arrive on a
channel: no source code is compiled per call and no thread state is created per call.
Callers in any number of threads are served one at a time (``_lock``); different
sandboxes run in parallel, each under its own GIL.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
import time
import weakref
from typing import Any, Callable, ParamSpec, TypeVar

from . import _core, _crossing, _inside, _lifecycle, _untrusted
from ._backend import ExecFailed, backend
from ._threads import SpareThread, worker_thread
from .channel import Channel
from .policy import Policy, resolve
from .errors import (
    BrokenSandbox,
    IsolationError,
    RemoteError,
    RemoteTraceback,
    _TRACEBACK_ESCAPES,
    SandboxClosed,
    TaskInterrupted,
)

__all__ = ["Sandbox"]

T = TypeVar("T")
P = ParamSpec("P")  # the arguments are checked against fn's parameters

_BOOT = """\
import sys
sys.path[:] = {path!r}
from subsandbox import _inside
_inside.serve({parcel})
"""

_task_ids = itertools.count(1)

# How long a timeout waits for its interrupt to be delivered before it is raised anyway.
# Delivered, the call is stopped where it stands: a channel wait it was in has failed
# without taking an item, so nothing the caller sends next is taken by the call it gave
# up. Delivery takes the sandbox's GIL, which running Python code hands over within the
# switch interval (5 ms) and a C call only when it returns (a huge pow: seconds).
_DELIVERY_GRACE_S = 0.1


def _send_interrupt(sandbox_id: int, task: int) -> bool:
    """``_core._interrupt``: whether the task was interrupted (or will be as it starts).
    A sandbox going away has nothing left to stop: True."""
    try:
        return bool(_core._interrupt(sandbox_id, task))
    except RuntimeError:
        return True


def _interrupt_in_background(sandbox_id: int, task: int, *, name: str,
                             done: Callable[[bool], object] | None = None
                             ) -> threading.Thread | None:
    """Send the interrupt from a short-lived thread, since _core._interrupt waits for the
    sandbox's GIL, which a long C call (a huge ``pow``, a regex) holds to its end; then
    ``done(delivered)`` on that thread, whatever happened. Where no thread can start (a
    3.12 exit) it is sent from this one, and None is returned."""

    def send() -> None:
        delivered = True
        try:
            delivered = _send_interrupt(sandbox_id, task)
        finally:
            if done is not None:
                done(delivered)

    try:
        sender = worker_thread(send, name=name, daemon=True)
        sender.start()
    except RuntimeError:
        send()
        return None
    return sender


# Sandboxes not yet closed; closed at interpreter exit (_lifecycle.close_all_at_exit).
_live: weakref.WeakSet[Sandbox] = weakref.WeakSet()
_live_lock = threading.Lock()


def _refuse_inside_a_sandbox(what: str) -> None:
    """Raise RuntimeError if this runs inside a sandbox, where ``what`` cannot be made.

    It never worked (an extension module the machinery needs refuses to load in a
    subinterpreter), and the lifetime rules assume one creator: say so at once.
    """
    if _core.interpreter_id() != 0:
        raise RuntimeError(f"{what} can only be made by the main interpreter, not inside "
                           f"a sandbox: make it in the caller and pass work to it through "
                           f"a Channel")


class Sandbox:
    """An isolated interpreter with its own GIL, driven from the interpreter that made it.

    ``call(fn, *args, **kwargs)`` runs ``fn`` inside and returns its result; ``exec``
    runs source code in the sandbox's ``__main__``. Use it as a context manager, or call
    ``close()``: closing waits for a running call to finish (``interrupt()`` stops one).

    ``policy`` (a ``subsandbox.Policy``) limits what the sandbox may import and do; the
    default, None, is ``Policy.unrestricted()``. See docs/security.md.
    """

    def __init__(self, policy: Policy | None = None) -> None:
        self._start(policy, None)

    @classmethod
    def _on_thread(cls, policy: Policy | None, thread: SpareThread | None) -> Sandbox:
        """A sandbox served on ``thread``, a started thread (the executor's, on 3.12, where
        no thread starts during exit; None: a new one); the caller releases it if this
        fails. Not a keyword of __init__: the public signature stays Sandbox(policy)."""
        sandbox = cls.__new__(cls)
        sandbox._start(policy, thread)
        return sandbox

    def _start(self, policy: Policy | None, spare: SpareThread | None) -> None:
        _refuse_inside_a_sandbox("a Sandbox")
        self._policy = resolve(policy)
        # What comes out of a sandbox under a policy is untrusted data: it is loaded
        # without running code that the sandbox chose (subsandbox._untrusted).
        self._loads = (_crossing.loads if self._policy.is_unrestricted
                       else _untrusted.loader(self._policy))
        self._lock = threading.Lock()          # one request at a time
        self._closing = False
        self._closed = False
        self._running_task = 0
        self._unanswered = 0                   # answers owed to abandoned requests
        self._owed_task = 0                    # the last abandoned one, maybe still running
        self._failure: BaseException | None = None
        self._closed_why = "the sandbox is closed"
        self._requests = Channel()
        self._answers = Channel()
        with _lifecycle.interpreter_change():
            self._handle = backend.create()
            _lifecycle.tracked(backend.interpreter_id(self._handle))
        try:
            parcel = _core._parcel_put((self._requests, self._answers, self._policy.spec()))
            source = _BOOT.format(path=list(sys.path), parcel=parcel)
            if spare is not None:
                self._thread = spare.run(self._serve, source)
            else:
                self._thread = worker_thread(self._serve, args=(source,),
                                             name="subsandbox-worker",
                                             # Not joined by threading at exit: the
                                             # atexit hook closes it after the program's
                                             # own threads ended (_lifecycle).
                                             daemon=True)
                self._thread.start()
            kind, *rest = self._answers.recv()
            if kind == "refused":  # issue #4: the sandbox's guard.check() failed inside
                raise IsolationError(rest[0])
            if kind != "ready":
                raise BrokenSandbox("the sandbox failed to start") from self._failure
        except BaseException:
            self._closed = True
            self._requests.close()
            thread = getattr(self, "_thread", None)
            if thread is not None and thread.ident is not None:  # it did start
                thread.join()
            # Always: a thread that could not start (CPython 3.12 starts none during
            # exit) must not leave its interpreter behind, which would abort the exit.
            self._destroy_interpreter()
            raise
        self._id: int = rest[0]
        self._config: dict[str, object] = dict(rest[1])
        self._thread.name = f"subsandbox-worker-{self._id}"
        with _live_lock:
            _live.add(self)

    # -- the worker thread ---------------------------------------------------------------

    def _serve(self, source: str) -> None:
        try:
            backend.run(self._handle, source)
        except ExecFailed as exc:
            self._failure = BrokenSandbox(f"the sandbox's interpreter failed:\n{exc.formatted}")
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            self._failure = exc
        finally:
            # Whoever waits for an answer learns that none will come.
            try:
                self._answers.send(("dead",))
            except Exception:
                pass

    # -- properties ----------------------------------------------------------------------

    @property
    def id(self) -> int:
        """The interpreter's id (unique in the process, never reused)."""
        return self._id

    @property
    def config(self) -> dict[str, object]:
        """The interpreter's PEP 684 settings as the runtime holds them.

        ``config["gil"] == "own"`` and ``config["use_main_obmalloc"] is False`` for
        every sandbox: its own GIL and its own object allocator.
        """
        return dict(self._config)

    @property
    def policy(self) -> Policy:
        """The policy this sandbox runs under."""
        return self._policy

    @property
    def closed(self) -> bool:
        """Whether the sandbox is closed: its interpreter is gone and it runs nothing more."""
        return self._closed

    def __repr__(self) -> str:
        thread = getattr(self, "_thread", None)
        if self._closed:
            state = "closed"
        elif thread is not None and thread.ident is not None and not thread.is_alive():
            # Its worker stopped by itself: every call fails until close().
            state = "broken"
        elif self._closing:
            state = "closing"
        else:
            # A given-up call (a timeout, Ctrl-C) runs on until its answer arrives.
            running = self._running_task or self._unanswered > self._answers.qsize()
            state = "running" if running else "idle"
        return f"<subsandbox.Sandbox id={getattr(self, '_id', '?')} {state}>"

    # -- running code --------------------------------------------------------------------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in the sandbox and return its result.

        ``fn`` may be an importable function, or a function, lambda or class defined in
        ``__main__``, a notebook or a nested scope: those cross as code plus the values
        they use. Shared objects cross by pointer. An exception raised inside is raised
        here, with the sandbox's traceback as its ``__cause__``.
        """
        return self._call("call", fn, args, kwargs, None)  # type: ignore[no-any-return]

    def call_with_timeout(self, timeout: float | None, fn: Callable[P, T], /, *args: P.args,
                          **kwargs: P.kwargs) -> T:
        """``call(fn, *args, **kwargs)``, given up after ``timeout`` seconds.

        When the time is up, the call is interrupted, as ``interrupt()`` does, and
        ``TimeoutError`` is raised once the interrupt is delivered: a channel wait the
        call was in has then failed without taking an item. The sandbox stays usable.
        Delivery takes the sandbox's GIL, which a C call holding it (a huge ``pow``)
        gives up only when it returns: the error is then raised 0.1 s after the timeout,
        and the interrupt lands later. Code blocked in C (a sleep, a read) is interrupted
        only when it returns to Python; until then the sandbox is busy, and its next
        call waits for it. The time counts from this
        method's start, so it includes waiting for another thread's call, or for an
        earlier timed-out one, to end: if that takes all of it, nothing is sent.
        """
        return self._call("call_with_timeout", fn, args, kwargs,  # type: ignore[no-any-return]
                          _check_timeout(timeout))

    def _call(self, method: str, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any], timeout: float | None) -> Any:
        if not callable(fn):
            raise TypeError(f"Sandbox.{method}() needs a callable, not {type(fn).__name__}")
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        payload, refs = _crossing.dumps((fn, args, kwargs), f"the call {name}(...)",
                                        (None, "args", "kwargs"))
        return self._request("call", payload, refs, timeout)

    def exec(self, source: str, /, *, timeout: float | None = None) -> None:
        """Run source code in the sandbox's ``__main__`` module; with ``timeout``, given
        up after that many seconds as ``call_with_timeout`` does."""
        if not isinstance(source, str):
            raise TypeError(f"Sandbox.exec() needs source code as str, "
                            f"not {type(source).__name__}")
        seconds = _check_timeout(timeout)
        # Sent as a call of a function that the sandbox already has: one path for all
        # requests. (A separate "exec" request that ran the code straight from the
        # worker loop corrupted 3.12.1's tuple free list at exit; not understood yet.)
        payload, refs = _crossing.dumps((_inside.exec_source, (source,), {}), "exec()")
        self._request("call", payload, refs, seconds)

    def _prepare_for_gate(self) -> None:
        """Before an executor's driver enters this sandbox through a gate (_inside)."""
        self._request("gate", b"", ())

    def interrupt(self) -> bool:
        """Interrupt the Python code of the running call, if any.

        The call then raises ``TaskInterrupted`` in its caller and the sandbox stays
        usable; a call sent but not started yet fails as soon as it starts. Code blocked
        inside a C function is interrupted when it returns to Python (a wait in
        ``Channel.send``/``recv`` is woken, and fails before it moves an item); code
        that catches ``KeyboardInterrupt`` may ignore it, so callers that must stop a
        task repeat the interrupt until the call returns. A call given up by
        ``call_with_timeout`` (or Ctrl-C) that still runs is interrupted too. Returns
        whether a call was interrupted.
        """
        # A call given up (timeout, Ctrl-C) may still run: code that caught the first
        # interrupt, or that was blocked in C. It is the one to stop then.
        task = self._running_task or self._owed_task
        if not task or self._closed:
            return False
        return bool(_core._interrupt(self._id, task))

    def _request(self, op: str, payload: Any, refs: tuple[object, ...],
                 timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        # (Without a timeout, every argument is left out: Sandbox.call's path, ~30 us in
        # all, is where keyword parsing would show.)
        if timeout is None:
            self._lock.acquire()
        elif not self._lock.acquire(timeout=timeout):
            raise TimeoutError(f"the sandbox was busy with another call for the whole "
                               f"timeout ({timeout} s): the call was not sent")
        try:
            if self._closing:
                raise SandboxClosed(self._closed_why)
            try:
                if self._unanswered:
                    self._collect_unanswered(None if deadline is None else _left(deadline))
            except TimeoutError:
                raise TimeoutError(
                    f"the sandbox was still running an earlier call that was given up "
                    f"for the whole timeout ({timeout} s): the call was not sent (code "
                    f"blocked in C stops when it returns to Python)") from None
            task = next(_task_ids)
            # Set before sending: interrupt() may then come before the sandbox starts the
            # task, and the C side interrupts the task as it starts.
            self._running_task = task
            try:
                # From the send on, an answer is owed whatever stops us: KeyboardInterrupt
                # (Ctrl-C) can be raised at any bytecode, even right after send() returns.
                # If the worker died, its "dead" message is the answer.
                self._requests.send((op, task, payload, refs))
                answer = (self._answers.recv() if deadline is None
                          else self._answers.recv(timeout=_left(deadline)))
            except BaseException as exc:
                # Interrupted while waiting (Ctrl-C), or the time is up: remember the
                # owed answer first (a second Ctrl-C must not lose the count), so the
                # next request does not read it as its own; then stop the task too.
                self._unanswered += 1
                self._owed_task = task
                timed_out = deadline is not None and isinstance(exc, TimeoutError)
                self._interrupt_given_up(task, wait=not timed_out)
                if timed_out:
                    raise TimeoutError(
                        f"the call ran longer than its timeout ({timeout} s) and was "
                        f"interrupted; the sandbox stays usable") from None
                raise
            finally:
                self._running_task = 0
        finally:
            self._lock.release()
        return self._unpack(answer)

    def _interrupt_given_up(self, task: int, wait: bool) -> None:
        """Interrupt a call its caller gave up. ``wait=False`` (a timeout, which must
        raise on time): from another thread, waited for at most _DELIVERY_GRACE_S."""
        if wait:
            _send_interrupt(self._id, task)
            return
        sender = _interrupt_in_background(self._id, task,
                                          name=f"subsandbox-interrupt-{self._id}")
        if sender is not None:
            sender.join(_DELIVERY_GRACE_S)

    def _collect_unanswered(self, timeout: float | None = None) -> None:
        """Read the answers owed to given-up calls; ``timeout`` bounds the whole wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._unanswered:
            answer = self._answers.recv(
                timeout=None if deadline is None else _left(deadline))
            self._unanswered -= 1
            if not self._unanswered:
                self._owed_task = 0
            if answer[0] == "dead":
                self._closing = True
                raise BrokenSandbox("the sandbox's worker stopped") from self._failure

    def _unpack(self, answer: tuple[Any, ...]) -> Any:
        kind = answer[0]
        if kind == "ok":
            return self._loads(answer[1], answer[2])
        if kind == "raised":
            raise _remote_exception(self._loads, answer[1], answer[2],
                                    not self.policy.is_unrestricted)
        if kind == "interrupted":
            if _lifecycle.exit_began():
                raise TaskInterrupted(
                    "the call was interrupted because the program is exiting: subsandbox "
                    "interrupts the calls still running then (close the sandbox, or let "
                    "its call end, before the program exits)")
            raise TaskInterrupted("the call was interrupted by Sandbox.interrupt()")
        self._closing = True
        raise BrokenSandbox("the sandbox's worker stopped") from self._failure

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Destroy the interpreter; waits for a running call to finish. Idempotent."""
        self._close(None)

    def _close(self, timeout: float | None) -> bool:
        """close(), giving up after ``timeout`` seconds (None: never); whether it closed.

        Interpreter exit uses the timeout (_lifecycle): a task blocked in C would make it
        wait forever. Giving up leaves the sandbox closing, not closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float:
            return -1 if deadline is None else max(0.0, deadline - time.monotonic())

        with _live_lock:
            if self._closing and self._closed:
                return True
            self._closing = True
        if not self._lock.acquire(timeout=left()):
            return False
        try:
            if self._closed:
                return True
            try:
                self._collect_unanswered(None if deadline is None else left())
            except BrokenSandbox:
                pass
            except TimeoutError:
                return False
            if self._thread.is_alive():
                self._requests.send(("stop", 0, b"", ()))
            self._thread.join(None if deadline is None else left())
            if self._thread.is_alive():
                return False
            self._destroy_interpreter()
            self._closed = True
            _core._interpreter_destroyed(self._id)
        finally:
            self._lock.release()
        with _live_lock:
            _live.discard(self)
        return True

    def _destroy_interpreter(self) -> None:
        with _lifecycle.interpreter_change():
            backend.destroy(self._handle)
            _lifecycle.untracked(backend.interpreter_id(self._handle))

    def _abandon_after_fork(self) -> None:
        # In the child of a fork: the interpreter and its thread are the parent's. Mark
        # the sandbox closed without touching either (see _lifecycle).
        self._lock = threading.Lock()
        self._closing = self._closed = True
        self._running_task = 0
        self._unanswered = 0
        self._owed_task = 0
        self._closed_why = ("the sandbox belongs to the parent process: sandboxes do not "
                            "cross fork(); make a new Sandbox in this process")

    @classmethod
    def start_many(cls, count: int, *, policy: Policy | None = None) -> list[Sandbox]:
        """``count`` sandboxes, started in parallel: each start builds an interpreter under
        its own GIL, so N of them take about as long as one where there are N cores.

        If any fails to start, the ones that did are closed and its error is raised.
        """
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"start_many(count): count must be an int, not "
                            f"{type(count).__name__} {count!r}")
        if count < 0:
            raise ValueError(f"start_many(count): count must be an int >= 0, not {count!r}")
        made: list[Sandbox | None] = [None] * count
        errors: list[BaseException] = []

        def start(i: int) -> None:
            try:
                made[i] = cls(policy)
            except BaseException as exc:  # reraised in the caller's thread below
                errors.append(exc)

        threads = [worker_thread(start, args=(i,), name=f"subsandbox-start-{i}")
                   for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        started = [sandbox for sandbox in made if sandbox is not None]
        if errors:
            for sandbox in started:
                sandbox.close()
            raise errors[0]
        return started

    def __enter__(self) -> Sandbox:
        # As a closed file does: a closed sandbox refuses the block, not its first call.
        if self._closing:
            raise SandboxClosed(self._closed_why)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# What to do about an exception that cannot cross back (in RemoteError's message).
_REBUILD_HINT = ("an exception class whose __init__ takes other arguments than its args "
                 "needs a __reduce__")


# The most of a policy sandbox's traceback text the caller keeps (characters).
_TRACEBACK_MAX = 1 << 20


def _remote_exception(loads: Callable[[bytes, tuple[object, ...]], Any], payload: bytes,
                      refs: tuple[object, ...], untrusted: bool = False) -> BaseException:
    """The exception a call or a pool's task raised, as the caller raises it: its own
    class with the sandbox's traceback as ``__cause__``, or a RemoteError that says why
    it could not be rebuilt.

    ``untrusted``: the sandbox runs under a policy, and all of this is its code's choice.
    Then only an ``Exception`` comes out as itself (a SystemExit or KeyboardInterrupt
    would end or interrupt the caller: a RemoteError), its traceback's text has its
    terminal controls escaped; the loader has defused what the caller's traceback module
    would act on in every exception it made (_untrusted.defuse_exception): an
    ImportError's ``name_from``, from which it would import the module ``name`` names to
    suggest a name (a red-team run, round 12, ran a module's top-level code in the caller
    so)."""
    try:
        # (exc, type, message, traceback), or (None, the same, why it would not cross)
        exc, type_name, message, formatted, *why = loads(payload, refs)
    except Exception as exc_loading:  # noqa: BLE001 - e.g. its class does not exist here
        error = RemoteError(
            "<exception that could not be rebuilt>",
            f"could not be made again here: {type(exc_loading).__name__}: {exc_loading}",
            f"its class must be importable here; {_REBUILD_HINT}")
        error.__cause__ = exc_loading
        return error
    if untrusted:
        type_name, message, formatted = (
            text if type(text) is str else "<not a str>"
            for text in (type_name, message, formatted))
        if len(formatted) > _TRACEBACK_MAX:
            # The sandbox's own traceback text: its code chose how long (a SyntaxError's
            # carets on 3.12: 300 MB for one end_offset). Its two ends are what matter.
            half = _TRACEBACK_MAX // 2
            formatted = (f"{formatted[:half]}\n... [{len(formatted) - 2 * half:,} "
                         f"characters cut] ...\n{formatted[-half:]}")
        formatted = formatted.translate(_TRACEBACK_ESCAPES)
        if exc is not None and (not isinstance(exc, Exception)
                                or isinstance(exc, (StopIteration, StopAsyncIteration))):
            # Not an exception instance at all (a red-team run sent back a caller's class,
            # whose __cause__ the line below then set), or one that is not an error of the
            # call: SystemExit, KeyboardInterrupt, GeneratorExit; nor StopIteration, which
            # would end the caller's loop over calls silently (round 14).
            why = [f"a sandbox under a policy raised {type_name}, which reaches the caller "
                   f"only as a RemoteError" if isinstance(exc, BaseException)
                   else f"it came back as a {type(exc).__name__}, not an exception"]
            exc = None
    if exc is None:
        # The sandbox found that it would not cross (_inside._raised): it did not pickle,
        # or its pickle did not load. Its class and text still come, with its traceback.
        exc = RemoteError(type_name, message,
                          f"could not be made again outside the sandbox: {why[0]}; "
                          f"{_REBUILD_HINT}")
    exc.__cause__ = RemoteTraceback(formatted)
    return exc  # type: ignore[no-any-return]


def _left(deadline: float) -> float:
    """Seconds left until ``deadline`` (time.monotonic()), 0 once it has passed."""
    return max(0.0, deadline - time.monotonic())


def _check_timeout(timeout: object) -> float | None:
    """A timeout in seconds as the caller gave it, checked: None (or inf) for no limit."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, "
                        f"not {type(timeout).__name__}")
    if not timeout >= 0:
        raise ValueError("timeout must be a non-negative number of seconds")
    if timeout == math.inf:
        return None                     # no limit, as the caller says
    if timeout > threading.TIMEOUT_MAX:
        raise ValueError(f"timeout must be at most threading.TIMEOUT_MAX "
                         f"({threading.TIMEOUT_MAX:.0f} s), or None (or inf) for no limit")
    return float(timeout)


def _live_sandboxes() -> list[Sandbox]:
    with _live_lock:
        return list(_live)


_lifecycle.close_all_at_exit(_live_sandboxes)


def _abandon_all_after_fork() -> None:
    global _live_lock
    _live_lock = threading.Lock()   # may have been held by a thread the child lacks
    for sandbox in list(_live):
        sandbox._abandon_after_fork()
    _live.clear()


_lifecycle.on_fork_child(_abandon_all_after_fork)
