"""Sandbox: one isolated interpreter with its own GIL, and the thread that runs it.

A sandbox owns one worker thread. The thread enters the new interpreter once, runs
``subsandbox._inside.serve`` there, and from then on answers requests that arrive on a
channel: no source code is compiled per call and no thread state is created per call.
Callers in any number of threads are served one at a time (``_lock``); different
sandboxes run in parallel, each under its own GIL.
"""

from __future__ import annotations

import itertools
import sys
import threading
import weakref
from typing import Any, Callable, TypeVar

from . import _core, _crossing, _inside
from ._backend import ExecFailed, backend
from .channel import Channel
from .errors import (
    BrokenSandbox,
    IsolationError,
    RemoteError,
    RemoteTraceback,
    SandboxClosed,
    TaskInterrupted,
)

__all__ = ["Sandbox"]

T = TypeVar("T")

_BOOT = """\
import sys
sys.path[:] = {path!r}
from subsandbox import _inside
_inside.serve({parcel})
"""

_task_ids = itertools.count(1)

# Sandboxes not yet closed; closed at interpreter shutdown before threads are joined.
_live: weakref.WeakSet[Sandbox] = weakref.WeakSet()
_live_lock = threading.Lock()


class Sandbox:
    """An isolated interpreter with its own GIL, driven from the interpreter that made it.

    ``call(fn, *args, **kwargs)`` runs ``fn`` inside and returns its result; ``exec``
    runs source code in the sandbox's ``__main__``. Use it as a context manager, or call
    ``close()``: closing waits for a running call to finish (``interrupt()`` stops one).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()          # one request at a time
        self._closing = False
        self._closed = False
        self._running_task = 0
        self._unanswered = 0                   # answers owed to abandoned requests
        self._failure: BaseException | None = None
        self._requests = Channel()
        self._answers = Channel()
        self._handle = backend.create()
        try:
            parcel = _core._parcel_put((self._requests, self._answers))
            source = _BOOT.format(path=list(sys.path), parcel=parcel)
            self._thread = threading.Thread(target=self._serve, args=(source,),
                                            name="subsandbox-worker")
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
            if thread is not None:
                thread.join()
            backend.destroy(self._handle)
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
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._running_task else "idle"
        return f"<subsandbox.Sandbox id={getattr(self, '_id', '?')} {state}>"

    # -- running code --------------------------------------------------------------------

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in the sandbox and return its result.

        ``fn`` may be an importable function, or a function, lambda or class defined in
        ``__main__``, a notebook or a nested scope: those cross as code plus the values
        they use. Shared objects cross by pointer. An exception raised inside is raised
        here, with the sandbox's traceback as its ``__cause__``.
        """
        if not callable(fn):
            raise TypeError(f"Sandbox.call() needs a callable, not {type(fn).__name__}")
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        payload, refs = _crossing.dumps((fn, args, kwargs), f"the call {name}(...)")
        return self._request("call", payload, refs)  # type: ignore[no-any-return]

    def exec(self, source: str, /) -> None:
        """Run source code in the sandbox's ``__main__`` module."""
        if not isinstance(source, str):
            raise TypeError(f"Sandbox.exec() needs source code as str, "
                            f"not {type(source).__name__}")
        # Sent as a call of a function that the sandbox already has: one path for all
        # requests. (A separate "exec" request that ran the code straight from the
        # worker loop corrupted 3.12.1's tuple free list at exit; not understood yet.)
        payload, refs = _crossing.dumps((_inside.exec_source, (source,), {}), "exec()")
        self._request("call", payload, refs)

    def interrupt(self) -> bool:
        """Interrupt the Python code of the running call, if any.

        The call then raises ``TaskInterrupted`` in its caller and the sandbox stays
        usable. Code blocked inside a C function is interrupted when it returns to
        Python. Returns whether a running call was interrupted.
        """
        task = self._running_task
        if not task or self._closed:
            return False
        return bool(_core._interrupt(self._id, task))

    def _request(self, op: str, payload: Any, refs: tuple[object, ...]) -> Any:
        with self._lock:
            if self._closing:
                raise SandboxClosed("the sandbox is closed")
            self._collect_unanswered()
            task = next(_task_ids)
            self._requests.send((op, task, payload, refs))
            self._running_task = task
            try:
                answer = self._answers.recv()
            except BaseException:
                # Interrupted while waiting (Ctrl-C): stop the task too, and remember that
                # its answer is owed, so the next request does not read it as its own.
                _core._interrupt(self._id, task)
                self._unanswered += 1
                raise
            finally:
                self._running_task = 0
        return self._unpack(answer)

    def _collect_unanswered(self) -> None:
        while self._unanswered:
            answer = self._answers.recv()
            self._unanswered -= 1
            if answer[0] == "dead":
                self._closing = True
                raise BrokenSandbox("the sandbox's worker stopped") from self._failure

    def _unpack(self, answer: tuple[Any, ...]) -> Any:
        kind = answer[0]
        if kind == "ok":
            return _crossing.loads(answer[1], answer[2])
        if kind == "raised":
            try:
                exc, type_name, message, formatted = _crossing.loads(answer[1], answer[2])
            except Exception as exc_loading:  # the class does not exist on this side
                raise RemoteError("<exception that could not be rebuilt>",
                                  str(exc_loading)) from exc_loading
            if exc is None:
                exc = RemoteError(type_name, message)
            exc.__cause__ = RemoteTraceback(formatted)
            raise exc
        if kind == "interrupted":
            raise TaskInterrupted("the call was interrupted by Sandbox.interrupt()")
        self._closing = True
        raise BrokenSandbox("the sandbox's worker stopped") from self._failure

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Destroy the interpreter; waits for a running call to finish. Idempotent."""
        with _live_lock:
            if self._closing and self._closed:
                return
            self._closing = True
        with self._lock:
            if self._closed:
                return
            try:
                self._collect_unanswered()
            except BrokenSandbox:
                pass
            if self._thread.is_alive():
                self._requests.send(("stop", 0, b"", ()))
            self._thread.join()
            backend.destroy(self._handle)
            self._closed = True
            _core._interpreter_destroyed(self._id)
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _close_all_at_exit() -> None:
    """Close every sandbox before the interpreter joins its threads and finalizes.

    Runs from ``threading._shutdown`` (before non-daemon threads are joined, like
    concurrent.futures' own exit hook), so worker threads end and every interpreter is
    destroyed while the runtime is whole.
    """
    with _live_lock:
        sandboxes = list(_live)
    for sandbox in sandboxes:
        sandbox.interrupt()
    for sandbox in sandboxes:
        try:
            sandbox.close()
        except Exception:  # noqa: BLE001 - exiting anyway; keep closing the others
            pass


threading._register_atexit(_close_all_at_exit)  # type: ignore[attr-defined]
