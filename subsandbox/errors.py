"""Every exception subsandbox raises, in one place.

The C core defines the exceptions that its own code raises (a channel cannot wait for a
Python module to be imported); they are re-exported here so users import them all from one
module, and ``except subsandbox.NotShareableError`` works in every interpreter.
"""

from __future__ import annotations

from concurrent.futures import BrokenExecutor

from ._core import ChannelClosed, ChannelEmpty, ChannelFull, NotShareableError

__all__ = [
    "AllocatorRaceWarning",
    "BrokenSandbox",
    "BrokenSandboxPool",
    "ChannelClosed",
    "ChannelEmpty",
    "ChannelFull",
    "IsolationError",
    "NotShareableError",
    "PolicyError",
    "RemoteError",
    "RemoteTraceback",
    "SandboxClosed",
    "TaskInterrupted",
    "UnsupportedPython",
]


class UnsupportedPython(ImportError):
    """This interpreter cannot run sandboxes (wrong version, or a build without own GILs)."""


class IsolationError(RuntimeError):
    """An isolation property that sandboxes rely on does not hold on this Python build.

    Raised by ``subsandbox.guard.check()``, and by ``Sandbox()`` when the new sandbox's
    own check fails (it then refuses to start). The message names every property missing.
    """


class SandboxClosed(RuntimeError):
    """The sandbox was closed: it runs nothing more."""


class BrokenSandbox(RuntimeError):
    """The sandbox's interpreter failed in a way that leaves it unusable.

    The failure is in ``__cause__``. Close the sandbox and make a new one.
    """


class BrokenSandboxPool(BrokenExecutor):
    """A SandboxPoolExecutor cannot run tasks any more (its initializer failed)."""


class TaskInterrupted(Exception):
    """The task's Python code was interrupted from outside (Sandbox.interrupt())."""


class PolicyError(PermissionError):
    """The sandbox's policy does not allow this effect; the message names it."""


class RemoteTraceback(Exception):
    """Carries the traceback of an exception raised inside a sandbox.

    It is attached as ``__cause__`` of the exception re-raised in the caller, so the
    sandbox's frames print under "The above exception was the direct cause of ...".
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class RemoteError(Exception):
    """An exception raised in a sandbox that could not be rebuilt in the caller.

    ``type_name`` is the qualified name of its class, ``message`` its ``str()``.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message


class AllocatorRaceWarning(RuntimeWarning):
    """CPython 3.12 is about to create an interpreter while the raw allocator is hooked.

    3.12 swaps the process-wide raw memory allocator to its default and back, without a
    lock, while it creates any interpreter (``_Py_ClearStandardStreamEncoding``; 3.13 no
    longer does, CPython gh-111924). That is harmless with the default allocators; with
    the debug hooks (``-X dev``, ``PYTHONMALLOC=debug``, a debug build) or tracemalloc, a
    thread of any interpreter that allocates in that moment can corrupt the heap and crash
    the process. Under tracemalloc, 3.12 also crashes at ``tracemalloc.stop()`` or at exit
    once an isolated interpreter has existed (CPython gh-110029). Issued once per process,
    by the first sandbox created in those conditions (docs/lifecycle.md).
    """
