"""The only module that touches CPython's interpreter APIs.

One small class per CPython line, chosen once at import:

- 3.14+: the standard library's ``concurrent.interpreters`` (PEP 734).
- 3.13: ``interpreters_backport`` from the ``interpreters-pep-734`` package, the same API.
- 3.12: ``_xxsubinterpreters``, CPython's own low-level module. (The backport's 3.12
  build, ``interpreters-3-12``, is compiled against internal headers of another 3.12
  release and segfaults on import on 3.12.1 and 3.12.3.)

Each creates interpreters with PEP 684's isolated config (own GIL, own object allocator,
only extensions that support it), runs source code in one, and destroys it. Everything
else (calls, values, interrupts) goes through subsandbox's own C core, the same on every
version.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Protocol

from . import _core
from .errors import AllocatorRaceWarning, TracemallocError

# CPython 3.12 only (errors.AllocatorRaceWarning says why; docs/lifecycle.md has the
# evidence). Said before the first interpreter made under a hooked raw allocator: the
# crash it warns of is CPython's, and would otherwise look like ours.
_ALLOCATOR_RACE = (
    "CPython 3.12 swaps the process-wide raw memory allocator to its default and back, "
    "without a lock, while it creates an interpreter, and this process's raw allocator is "
    "hooked (-X dev, PYTHONMALLOC=debug or pymalloc_debug, a debug build): "
    "a thread of any interpreter that allocates memory in that moment can corrupt the heap "
    "and crash the process (CPython gh-111924; 3.13 no longer swaps it there). Use CPython 3.13+, or on "
    "3.12 run without those hooks (python -X dev with PYTHONMALLOC=malloc keeps dev mode's "
    "other checks), or create sandboxes while no other thread runs."
)


_TRACEMALLOC = (
    "cannot create a sandbox while tracemalloc traces memory allocations: CPython {version} "
    "crashes {when} once an isolated interpreter made while tracing has been destroyed "
    "(tracemalloc keeps pointers to that interpreter's objects; CPython {issues}). Stop "
    "tracing first (tracemalloc.stop()), or run without -X tracemalloc and "
    "PYTHONTRACEMALLOC; sandboxes made before tracing starts are not protected either."
)


def refuse_under_tracemalloc() -> None:
    """Raise TracemallocError while tracemalloc traces; called before every creation.

    Every supported CPython crashes the process later (errors.TracemallocError says how);
    refusing here, before an interpreter exists, loses nothing. _tracemalloc is the
    builtin C module: always there, and cheap to import, unlike tracemalloc.py."""
    import _tracemalloc

    if not _tracemalloc.is_tracing():
        return
    if sys.version_info >= (3, 14):
        when, issues = "at the next interpreter creation or at exit", "gh-134604, gh-144172"
    else:
        when, issues = "at tracemalloc.stop() or at exit", "gh-110029, gh-144172"
    version = "%d.%d" % sys.version_info[:2]
    raise TracemallocError(_TRACEMALLOC.format(version=version, when=when, issues=issues))


class ExecFailed(Exception):
    """Source code run in an interpreter raised; ``formatted`` is its traceback text."""

    def __init__(self, message: str, formatted: str) -> None:
        super().__init__(message)
        self.formatted = formatted


class Backend(Protocol):
    name: str
    # Whether threads can still be started once the interpreter's exit has begun
    # (threading's exit hooks run): not on 3.12 (subsandbox._threads.SpareThread).
    threads_start_at_exit: bool

    def create(self) -> Any: ...
    def interpreter_id(self, handle: Any) -> int: ...
    def run(self, handle: Any, source: str) -> None: ...
    def destroy(self, handle: Any) -> None: ...


class _PEP734Backend:
    """Python 3.13 (backport) and 3.14+ (stdlib): ``create()`` is PEP 684's isolated config."""

    threads_start_at_exit = True

    def __init__(self, module: Any, name: str) -> None:
        self._interpreters = module
        self.name = name

    def create(self) -> Any:
        refuse_under_tracemalloc()
        return self._interpreters.create()

    def interpreter_id(self, handle: Any) -> int:
        return int(handle.id)

    def run(self, handle: Any, source: str) -> None:
        try:
            handle.exec(source)
        except self._interpreters.ExecutionFailed as exc:
            info = exc.excinfo
            formatted = getattr(info, "formatted", None) or str(exc)
            raise ExecFailed(str(exc), formatted) from None

    def destroy(self, handle: Any) -> None:
        handle.close()


class _XXSubinterpretersBackend:
    """Python 3.12: ``_xxsubinterpreters.create(isolated=True)``."""

    name = "_xxsubinterpreters (CPython 3.12)"
    threads_start_at_exit = False

    def __init__(self) -> None:
        import _xxsubinterpreters  # type: ignore[import-not-found]

        self._xx = _xxsubinterpreters
        self._warned_allocator_race = False

    def create(self) -> Any:
        refuse_under_tracemalloc()
        if not self._warned_allocator_race and _core._raw_allocator_hooked():
            warnings.warn(_ALLOCATOR_RACE, AllocatorRaceWarning, stacklevel=2)
            self._warned_allocator_race = True      # not when -W error made it raise
        return self._xx.create(isolated=True)

    def interpreter_id(self, handle: Any) -> int:
        return int(handle)

    def run(self, handle: Any, source: str) -> None:
        try:
            self._xx.run_string(handle, source)
        except self._xx.RunFailedError as exc:
            raise ExecFailed(str(exc), str(exc)) from None

    def destroy(self, handle: Any) -> None:
        self._xx.destroy(handle)


def _choose() -> Backend:
    if sys.version_info >= (3, 14):
        from concurrent import interpreters  # type: ignore[import-not-found,unused-ignore]

        return _PEP734Backend(interpreters, "concurrent.interpreters (stdlib)")
    elif sys.version_info >= (3, 13):
        # Installed without type information (import-untyped); not-found if it is not.
        from interpreters_backport import interpreters  # type: ignore[import-untyped,import-not-found,unused-ignore]

        return _PEP734Backend(interpreters, "interpreters_backport (interpreters-pep-734)")
    return _XXSubinterpretersBackend()


backend: Backend = _choose()
