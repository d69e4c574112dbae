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
from typing import Any, Protocol


class ExecFailed(Exception):
    """Source code run in an interpreter raised; ``formatted`` is its traceback text."""

    def __init__(self, message: str, formatted: str) -> None:
        super().__init__(message)
        self.formatted = formatted


class Backend(Protocol):
    name: str

    def create(self) -> Any: ...
    def interpreter_id(self, handle: Any) -> int: ...
    def run(self, handle: Any, source: str) -> None: ...
    def destroy(self, handle: Any) -> None: ...


class _PEP734Backend:
    """Python 3.13 (backport) and 3.14+ (stdlib): ``create()`` is PEP 684's isolated config."""

    def __init__(self, module: Any, name: str) -> None:
        self._interpreters = module
        self.name = name

    def create(self) -> Any:
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

    def __init__(self) -> None:
        import _xxsubinterpreters  # type: ignore[import-not-found]

        self._xx = _xxsubinterpreters

    def create(self) -> Any:
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
    if sys.version_info >= (3, 13):
        from interpreters_backport import interpreters  # type: ignore[import-not-found]

        return _PEP734Backend(interpreters, "interpreters_backport (interpreters-pep-734)")
    return _XXSubinterpretersBackend()


backend: Backend = _choose()
