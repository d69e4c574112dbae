"""The threads subsandbox starts leave process signals to the main thread.

A signal sent to the process (Ctrl-C, ``kill``) is delivered by the kernel to any one
thread that does not block it. Python runs the handler later, in the main thread; but a
main thread asleep in a lock (``future.result()``, ``concurrent.futures.wait``,
``Channel.recv``) is woken only when the signal lands on that very thread (the wait fails
with EINTR and the handler runs). Linux prefers the main thread, but not when it already
has a signal pending, and other systems choose freely: a worker thread then takes the
Ctrl-C and the main thread sleeps on until its wait ends. Every thread of ours blocks
those signals, so the kernel gives them to a thread that can act on them.

Synchronous signals (SIGSEGV, SIGFPE, ...) are never blocked: they belong to the thread
that caused them, as does SIGPIPE (sent to the thread whose write failed; Python ignores
it). Profiling timers (SIGPROF, SIGVTALRM) are left alone too: samplers want
them in whichever thread is running.
"""

from __future__ import annotations

import queue
import signal
import threading
from typing import Any, Callable

_PROCESS_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2",
                 "SIGCHLD", "SIGWINCH")
    if hasattr(signal, name)
)


def block_process_signals() -> None:
    """Block, in the calling thread, the signals meant for the process as a whole."""
    if hasattr(signal, "pthread_sigmask"):      # not on Windows: there, only the main
        signal.pthread_sigmask(signal.SIG_BLOCK, _PROCESS_SIGNALS)  # thread gets them


def worker_thread(target: Callable[..., object], *, name: str, args: tuple[Any, ...] = (),
                  daemon: bool | None = None) -> threading.Thread:
    """A ``threading.Thread`` (not started) that blocks process signals before it runs
    ``target``; threads it starts inherit the mask. ``daemon`` as for ``Thread``: None
    inherits the creating thread's."""

    def run(*call_args: Any) -> None:
        block_process_signals()
        target(*call_args)

    return threading.Thread(target=run, args=args, name=name, daemon=daemon)


class SpareThread:
    """A thread started now that runs one function given later, or ends unused.

    CPython 3.12 starts no thread once its exit has begun (``interp->finalizing`` is set
    before ``threading`` joins the program's threads), while 3.13+ still can then. A pool
    that must start a sandbox (and so the sandbox's thread) to run tasks submitted just
    before the program ended starts the thread beforehand, at submit(), and hands it its
    work when the time comes."""

    def __init__(self, *, name: str, daemon: bool | None = None) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]] | None]
        self._work = queue.SimpleQueue()
        self._used = False
        self.thread = worker_thread(self._wait, name=name, daemon=daemon)
        self.thread.start()

    def _wait(self) -> None:
        work = self._work.get()
        if work is not None:
            target, args = work
            target(*args)

    def run(self, target: Callable[..., object], *args: Any) -> threading.Thread:
        """Run ``target(*args)`` on the thread (once); returns the thread."""
        self._used = True
        self._work.put((target, args))
        return self.thread

    def release(self) -> None:
        """End the thread, unused, and wait for it (no-op after run(): the thread is its
        target's then)."""
        if not self._used:
            self._used = True
            self._work.put(None)
            self.thread.join()
