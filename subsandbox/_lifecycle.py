"""What sandboxes do when the process forks, and when the interpreter exits.

Fork. ``os.fork()`` (and ``multiprocessing``'s "fork" start method, and ``subprocess``
with ``preexec_fn``) copies the process with only the forking thread alive. CPython's
after-fork code in the child (``PyOS_AfterFork_Child`` → ``_PyInterpreterState_DeleteExceptMain``)
then clears and frees every subinterpreter from that thread, while their GILs and thread
states belong to threads that do not exist in the child: on 3.12.1 the child hangs or
crashes, on 3.13.0 it aborts. A ``before`` hook cannot refuse the fork (``run_at_forkers``
reports its exception and forks anyway), so subsandbox makes fork work instead:

- before: no sandbox interpreter is being created or destroyed (``_interpreters_lock``),
  the C core holds its worker registry and records the sandbox interpreters; inside
  ``fork()`` itself (C ``pthread_atfork`` handlers, see ``_ext/lifecycle.c``) it takes its
  leaf locks and takes those interpreters out of the runtime's list of interpreters, so
  the child's cleanup never sees them;
- parent: they are put back and the locks released; running calls never stopped;
- child: the interpreters stay out of the list (their copies are never touched or freed),
  every sandbox and channel inherited from the parent is closed for good, and the child
  may make new sandboxes.

Exit. Sandbox worker threads are daemon threads, so the interpreter does not wait for
them; ``close_all_at_exit`` is an ``atexit`` hook, which runs after the program's own
non-daemon threads have ended (their calls complete as they would in any Python program)
and while the runtime is whole: it interrupts the calls still running (those of daemon
threads, or abandoned by Ctrl-C) and closes every sandbox; if a task does not end within
``EXIT_GRACE`` seconds (code blocked in C cannot be interrupted), it says which on stderr
and ends the process with status 1, so that exit never hangs on a sandbox.

Churn. CPython keeps most of the object allocator's memory of every destroyed isolated
interpreter (see ``_ext/pyinternal.c``); ``untracked()`` gives back what is provably dead.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from . import _core

__all__ = ["EXIT_GRACE", "close_all_at_exit", "exiting_by_ctrl_c", "interpreter_change",
           "on_fork_child", "tracked", "untracked"]

EXIT_GRACE = 5.0
"""Seconds that interpreter exit waits for interrupted tasks to end before giving up."""
_MIN_CLOSE = 0.5    # what each sandbox still gets once EXIT_GRACE is spent

# Held while a sandbox's interpreter is created or destroyed, and from the before-fork
# hook to the after-fork hooks: the list of sandbox interpreters cannot change meanwhile.
_interpreters_lock = threading.Lock()
_interpreter_ids: set[int] = set()      # interpreters made by sandboxes, not yet destroyed
_child_callbacks: list[Callable[[], None]] = []
_holding_for_fork = False


@contextmanager
def interpreter_change() -> Iterator[None]:
    """Hold around creating or destroying a sandbox's interpreter (not across fork)."""
    with _interpreters_lock:
        yield


def tracked(interp_id: int) -> None:
    """Record an interpreter a sandbox made (call inside ``interpreter_change()``)."""
    _interpreter_ids.add(interp_id)


def untracked(interp_id: int) -> None:
    """Forget an interpreter once destroyed (call inside ``interpreter_change()``), and
    give back the memory CPython keeps of it: the empty pools of its object allocator."""
    _interpreter_ids.discard(interp_id)
    _core._reclaim_interpreter(interp_id)


def on_fork_child(callback: Callable[[], None]) -> None:
    """Run ``callback()`` in the child of a fork, after the C core has let go."""
    _child_callbacks.append(callback)


def _before_fork() -> None:
    global _holding_for_fork
    _interpreters_lock.acquire()
    _holding_for_fork = True
    _core._fork_prepare(tuple(_interpreter_ids))


def _after_fork_in_parent() -> None:
    global _holding_for_fork
    if not _holding_for_fork:
        return
    _core._fork_parent()
    _holding_for_fork = False
    _interpreters_lock.release()


def _after_fork_in_child() -> None:
    global _holding_for_fork, _interpreters_lock
    # Everything below is the parent's: this process has none of those interpreters.
    _interpreter_ids.clear()
    _core._fork_child()
    _interpreters_lock = threading.Lock()
    _holding_for_fork = False
    for callback in _child_callbacks:
        callback()


class _Closable(Protocol):
    @property
    def closed(self) -> bool: ...  # read-only: Sandbox.closed is a property

    def interrupt(self) -> bool: ...
    def _close(self, timeout: float | None) -> bool: ...


def _close_all(sandboxes: Sequence[_Closable], grace: float) -> list[_Closable]:
    """Interrupt every running task, then close every sandbox; return those that could
    not be closed within ``grace`` seconds in all. (No helper threads: 3.12 refuses to
    start threads at shutdown.)"""
    for sandbox in sandboxes:
        sandbox.interrupt()
    deadline = time.monotonic() + grace
    stuck = []
    for sandbox in sandboxes:
        try:
            # One stuck sandbox must not leave the others no time at all.
            closed = sandbox._close(max(_MIN_CLOSE, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - exiting anyway; keep closing the others
            closed = sandbox.closed
        if not closed:
            stuck.append(sandbox)
    return stuck


def close_all_at_exit(live: Callable[[], Sequence[_Closable]]) -> None:
    """At interpreter exit, close the sandboxes that ``live()`` returns.

    An ``atexit`` hook: it runs after threading has joined the program's non-daemon
    threads (and after concurrent.futures' exit hooks), before modules are torn down, so
    every interpreter is destroyed while the runtime is whole. A task blocked in C code
    cannot be interrupted:
    if one is still running ``EXIT_GRACE`` seconds later, waiting could last forever, so
    the process says which sandboxes and why on stderr and ends with status 1 at once.
    """
    def close_all() -> None:
        global _exit_began
        _exit_began = True
        sandboxes = live()
        stuck = _close_all(sandboxes, EXIT_GRACE) if sandboxes else []
        # Every sandbox is closed now: none of ours runs code again in this process.
        _keep_ctrl_c_exit()
        if not stuck:
            return
        names = ", ".join(repr(sandbox) for sandbox in stuck)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream must not stop the exit
                pass
        os.write(2, (
            f"subsandbox: exiting without closing {names}: its task did not end within "
            f"{EXIT_GRACE:g} s of being interrupted (code blocked in C is interrupted only "
            f"when it returns to Python). Close sandboxes, or let their tasks end, before "
            f"the program exits.\n").encode("utf-8", "replace"))
        os._exit(1)

    atexit.register(close_all)


_exit_began = False


def exit_began() -> bool:
    """Whether the exit hook has begun interrupting and closing every sandbox: a call
    interrupted from now on was interrupted by the exit, not by Sandbox.interrupt()."""
    return _exit_began


def exiting_by_ctrl_c() -> bool:
    """Whether the interpreter exits because of an unhandled KeyboardInterrupt.

    CPython's top level (PyErr_Print) stores the exception that ends the program in
    ``sys.last_exc`` (3.12+) before finalization runs the exit hooks. An interactive
    session stores there every error it printed, and goes on: a Ctrl-C that stopped one
    statement long ago does not end the session, so there ``sys.last_exc`` says nothing
    about how it ends (it ends by EOF or exit(), and its tasks are awaited)."""
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return False
    return isinstance(getattr(sys, "last_exc", None), KeyboardInterrupt)


def _keep_ctrl_c_exit() -> None:
    """A program that dies of Ctrl-C exits by SIGINT (status 130 in a shell), as CPython
    decides after finalization from a process-wide flag that the main module's run set.
    On 3.12/3.13 every run of source in *any* interpreter resets that flag first: a
    sandbox started, or an ``exec()`` of a string in a sandbox, while the program exits
    made it exit with status 1 instead. Set it again, on the condition CPython set it on
    (an unhandled exception of exactly KeyboardInterrupt: Python/pythonrun.c
    run_eval_code_obj, Modules/main.c pymain_run_module)."""
    if exiting_by_ctrl_c() and type(getattr(sys, "last_exc", None)) is KeyboardInterrupt:
        _core._keep_ctrl_c_exit()


def _install_fork_hooks() -> None:
    # Only the main interpreter can fork (an isolated interpreter may not), and each
    # interpreter has its own list of hooks.
    if _core.interpreter_id() != 0 or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


_install_fork_hooks()
