"""Keep extension modules that would corrupt the process out of a sandbox, before they run.

Two kinds, refused by a meta path finder first in every sandbox's ``sys.meta_path``:

- on CPython 3.12, the single-phase-init modules of the standard library (below);
- on every version, the standard library's modules that declare per-interpreter GIL support
  but define static types of their own (``SHARED_STATIC_TYPES_STDLIB``).

Single-phase modules on CPython 3.12:

An isolated interpreter cannot use an extension module without multi-phase init (PEP
489); CPython refuses it with ImportError. But 3.12 refuses it only *after* it has run the
module's init function inside the sandbox (CPython gh-117953; 3.13 runs that function in
the main interpreter first), and some of those functions leave what they made, with the
sandbox's allocator, in process-wide static state. Measured on 3.12.1, release build:
three sandboxes that each ``import datetime`` (which tries ``_datetime`` first) and are
destroyed, then the main interpreter's own ``import datetime``, abort the process
("double free or corruption"); ``import decimal`` (``_decimal``) the same; with the main
interpreter importing ``_datetime`` first, 60 sandboxes are clean.

So every 3.12 sandbox refuses these modules itself, with the ImportError CPython would
raise, before anything of theirs runs. The standard library's pure-Python fallbacks
(``_pydatetime``, ``_pydecimal``, ElementTree's Python parser) take over, as they already
did after CPython's refusal; ``_pydatetime``'s classes are renamed ``datetime`` as it loads,
so that its values pickle as the caller's (``_PublicModuleNames``). The list is every module of CPython 3.12.1's own build
(``lib-dynload`` and the built-in ones) that an isolated interpreter refuses as
single-phase; ``tests/test_single_phase.py`` checks it against the running Python.
Third-party single-phase modules cannot be known before their init runs: see
docs/security.md.

Static types of an extension module: a static type is one object for the whole process.
CPython keeps the state that subclassing and weak references write (``tp_subclasses``,
``tp_dict``, the weakref list) per interpreter only for its own static builtin types
(docs/type-guard.md); an extension module's static type keeps it in the type object, which
every interpreter that imports the module then writes without a common lock (and on 3.12
its reference count too: it is not immortal). A module with such types must not declare
``Py_MOD_PER_INTERPRETER_GIL_SUPPORTED``; CPython's example module ``xxsubtype`` does (3.12
to 3.15), and two sandboxes that subclass ``xxsubtype.spamdict`` at once abort the process
("double free or corruption", 3.12.1, 3.13.0, 3.14.7); so does CPython's ``_testcapi`` from
3.15 on (single-phase before, so refused by CPython). They are refused in every sandbox;
``tests/test_guard.py`` checks that no other extension module of the running Python that a
sandbox can import has a static type of its own. Third-party modules with that defect
cannot be known before they run: see docs/type-guard.md.
"""

from __future__ import annotations

import sys

# Imported in every sandbox: no typing (docs/lifecycle.md, "Memory of closed sandboxes").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.abc import Loader as _Loader
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any
else:
    _Loader = object   # importlib.abc is not imported in a sandbox for this

SINGLE_PHASE_STDLIB = frozenset({
    "_ctypes", "_curses", "_curses_panel", "_datetime", "_decimal", "_elementtree",
    "_lsprof", "_tkinter", "faulthandler", "nis", "ossaudiodev", "pyexpat", "readline",
    # CPython's test and example modules, also single-phase
    "_testbuffer", "_testcapi", "_testclinic", "_testimportmultiple", "_testsinglephase",
    "_xxtestfuzz", "xxlimited_35",
})


# xxsubtype on every version; _testcapi from 3.15, where it became multi-phase and declares
# per-interpreter GIL support but keeps ContainerNoGC and two more static types of its own
# (before, it is single-phase, and CPython itself refuses it in an isolated interpreter).
SHARED_STATIC_TYPES_STDLIB = frozenset({"xxsubtype"} | (
    {"_testcapi"} if sys.version_info >= (3, 15) else set()))

# The one place that says what is refused on which version.
_SINGLE_PHASE_REFUSED = SINGLE_PHASE_STDLIB if sys.version_info < (3, 13) else frozenset()


class _PublicModuleNames(_Loader):
    """Loader of ``_pydatetime`` in a 3.12 sandbox, where it stands in for ``_datetime``.

    Its classes say ``__module__ == '_pydatetime'``, so pickle wrote a sandbox's datetime
    as ``_pydatetime.datetime``: the caller, whose ``datetime`` is ``_datetime``'s, got a
    foreign class back, equal to none of its own datetimes. Named ``datetime``, as
    ``_datetime``'s classes are (and as ``_pydecimal`` names its own ``decimal``), they
    pickle as the caller's classes, whose constructors take the same pickled state.
    """

    def __init__(self, loader: _Loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)   # get_source, get_code... for tracebacks

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and value.__module__ == "_pydatetime":
                value.__module__ = "datetime"
        # The one class whose pickled form differs: _pydatetime's timezone pickles its
        # slots as state, which _datetime's refuses; both take (offset[, name]).
        module.timezone.__reduce__ = _timezone_reduce


def _timezone_reduce(self: Any) -> tuple[object, ...]:
    return (type(self), self.__getinitargs__())


# The pure-Python stand-ins whose classes are renamed as they load (3.12 only: from 3.13 on
# _datetime loads in sandboxes).
_RENAMED_FALLBACKS = frozenset({"_pydatetime"}) if sys.version_info < (3, 13) else frozenset()


class RefuseSinglePhase:
    """A meta path finder, first in ``sys.meta_path``, that raises an ImportError for the
    modules above before any finder locates them (so none of their code runs)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name in _RENAMED_FALLBACKS:
            from importlib.machinery import PathFinder

            spec = PathFinder.find_spec(name)
            if spec is not None and spec.loader is not None:
                spec.loader = _PublicModuleNames(spec.loader)
            return spec
        if name in _SINGLE_PHASE_REFUSED:
            raise ImportError(
                f"module {name} does not support loading in subinterpreters (subsandbox "
                "refuses it before its init function runs: on CPython 3.12 that function "
                "would run inside the sandbox and can corrupt the process's memory, "
                "CPython gh-117953)", name=name)
        if name in SHARED_STATIC_TYPES_STDLIB:
            raise ImportError(
                f"module {name} cannot be used in a sandbox: its static types are one "
                "object for every interpreter, which subclassing or weakly referencing "
                "them in two sandboxes at once corrupts; import it in the main "
                "interpreter only", name=name)
        return None


def install() -> None:
    """Put the finder first in this interpreter's ``sys.meta_path``."""
    if RefuseSinglePhase not in sys.meta_path:
        sys.meta_path.insert(0, RefuseSinglePhase)
