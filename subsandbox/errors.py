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
    """A SandboxPoolExecutor cannot run tasks any more.

    Its initializer failed, or a worker sandbox could not be started or entered (the
    cause is in ``__cause__``: ``TracemallocError`` while tracemalloc traces), or the
    pool belongs to the parent of a fork.
    """


class TaskInterrupted(Exception):
    """The task's Python code was interrupted from outside (Sandbox.interrupt())."""


class PolicyError(PermissionError):
    """The sandbox's policy does not allow this effect; the message names it."""


# Characters that drive a terminal (C0 and C1 controls, bidirectional overrides), as the
# escapes that show them instead, for text a sandbox under a policy chose that lands on the
# caller's terminal or log: its stderr lines (tab kept), and the traceback of what it
# raised (tab and newline kept).
_TERMINAL_ESCAPES = {
    code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in (*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F),
                 *range(0x2066, 0x206A))
    if code != 0x09
}
_TRACEBACK_ESCAPES = {code: text for code, text in _TERMINAL_ESCAPES.items() if code != 0x0A}


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

    ``type_name`` is the qualified name of its class, ``message`` its ``str()``,
    ``reason`` why it could not be rebuilt and what to do (also in the message). When
    the caller failed to load it, that error is the ``__cause__``; otherwise the
    ``__cause__`` is the sandbox's traceback (``RemoteTraceback``).
    """

    def __init__(self, type_name: str, message: str, reason: str = "") -> None:
        text = f"{type_name}: {message}" if message else type_name
        super().__init__(f"{text} ({reason})" if reason else text)
        self.type_name = type_name
        self.message = message
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # Exception's own reduce calls cls(*self.args): one formatted string, which
        # __init__ does not take. (A RemoteError a program logs through a process pool,
        # or keeps with pickle, must load.) The traceback chain is not pickled, as for
        # every exception.
        return (type(self), (self.type_name, self.message, self.reason), self.__dict__)


class TracemallocError(RuntimeError):
    """A sandbox was asked for while tracemalloc traces memory allocations.

    No CPython we support survives an isolated interpreter created while tracemalloc
    traces: tracemalloc keeps pointers to that interpreter's objects (the file names of
    its code) after the interpreter is destroyed and reads or frees them later. 3.12 and
    3.13 abort at ``tracemalloc.stop()`` or at exit (CPython gh-110029, gh-144172), 3.14
    crashes at the next interpreter creation or at exit (gh-134604). ``Sandbox()`` refuses
    before any interpreter exists, so nothing is lost; stop tracing
    (``tracemalloc.stop()``, or run without ``-X tracemalloc`` and ``PYTHONTRACEMALLOC``)
    to create sandboxes (docs/lifecycle.md).
    """


class AllocatorRaceWarning(RuntimeWarning):
    """CPython 3.12 is about to create an interpreter while the raw allocator is hooked.

    3.12 swaps the process-wide raw memory allocator to its default and back, without a
    lock, while it creates any interpreter (``_Py_ClearStandardStreamEncoding``; 3.13 no
    longer does, CPython gh-111924). That is harmless with the default allocators; with
    the debug hooks (``-X dev``, ``PYTHONMALLOC=debug``, a debug build), a thread of any
    interpreter that allocates in that moment can corrupt the heap and crash the process.
    Issued once per process, by the first sandbox created in those conditions
    (docs/lifecycle.md). Under tracemalloc, which hooks the allocator too, no sandbox is
    created at all (``TracemallocError``).
    """
