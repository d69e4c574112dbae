"""CPython 3.12: keep single-phase-init extension modules out of a sandbox before they run.

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
did after CPython's refusal. The list is every module of CPython 3.12.1's own build
(``lib-dynload`` and the built-in ones) that an isolated interpreter refuses as
single-phase; ``tests/test_single_phase.py`` checks it against the running Python.
Third-party single-phase modules cannot be known before their init runs: see
docs/security.md.
"""

from __future__ import annotations

import sys

# Imported in every sandbox: no typing (docs/lifecycle.md, "Memory of closed sandboxes").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

SINGLE_PHASE_STDLIB = frozenset({
    "_ctypes", "_curses", "_curses_panel", "_datetime", "_decimal", "_elementtree",
    "_lsprof", "_tkinter", "faulthandler", "nis", "ossaudiodev", "pyexpat", "readline",
    # CPython's test and example modules, also single-phase
    "_testbuffer", "_testcapi", "_testclinic", "_testimportmultiple", "_testsinglephase",
    "_xxtestfuzz", "xxlimited_35",
})


class RefuseSinglePhase:
    """A meta path finder, first in ``sys.meta_path``, that raises CPython's ImportError
    for the modules above before any finder locates them (so no init function runs)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name in SINGLE_PHASE_STDLIB:
            raise ImportError(
                f"module {name} does not support loading in subinterpreters (subsandbox "
                "refuses it before its init function runs: on CPython 3.12 that function "
                "would run inside the sandbox and can corrupt the process's memory, "
                "CPython gh-117953)", name=name)
        return None


def install() -> None:
    """Put the finder first in this interpreter's ``sys.meta_path`` (3.12 only)."""
    if sys.version_info < (3, 13) and RefuseSinglePhase not in sys.meta_path:
        sys.meta_path.insert(0, RefuseSinglePhase)
