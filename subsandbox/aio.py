"""asyncio on sandboxes: ``await subsandbox.aio.run(fn, *args)``, stopped by cancellation.

Runs the call on one shared ``SandboxPoolExecutor`` (as many workers as usable CPUs),
created on first use and shut down at interpreter exit with the other pools. For a pool
of your own, ``loop.run_in_executor(executor, fn, *args)`` works with any
``SandboxPoolExecutor``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, ParamSpec, TypeVar

from . import _lifecycle
from .executor import SandboxPoolExecutor

__all__ = ["default_executor", "run"]

T = TypeVar("T")
P = ParamSpec("P")  # the arguments are checked against fn's parameters

_default: SandboxPoolExecutor | None = None
_default_lock = threading.Lock()


def default_executor() -> SandboxPoolExecutor:
    """The shared pool that ``run`` uses: made on first call, and made again if it was
    shut down (or broke) since, so that ``run`` keeps working."""
    global _default
    with _default_lock:
        if _default is None or _default._pool.shutdown_requested or _default._pool.broken:
            _default = SandboxPoolExecutor()
        return _default


def _forget_after_fork() -> None:
    # The parent's pool refuses work in the child (its sandboxes are the parent's): the
    # child makes its own at its first run(). The lock may have been held at the fork.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


_lifecycle.on_fork_child(_forget_after_fork)


async def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` in a sandbox of the shared pool and return its result.

    Cancelling the awaiting task (``task.cancel()``, ``asyncio.timeout()``,
    ``asyncio.wait_for()``) cancels the call, and interrupts it if it is running, as a
    ``SandboxPoolExecutor.schedule()`` task's ``cancel()`` does: the worker is kept.
    """
    loop = asyncio.get_running_loop()
    # schedule(), not submit(): wrap_future() cancels the pool's future when the awaiting
    # task is cancelled, and only a scheduled task's future stops running code then.
    future = default_executor().schedule(fn, args, kwargs)
    return await asyncio.wrap_future(future, loop=loop)
