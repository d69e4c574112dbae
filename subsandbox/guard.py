"""The isolation guard: the properties sandboxes rely on, checked on the running Python.

In 2005 the objection to sandboxed threads was that "newstyle classes keep weak references
to all their subclasses ... every time you subclass 'dict', you're modifying the 'dict'
class". On CPython 3.12+ that is no longer so, and subsandbox depends on it. ``check()``
verifies, in a few microseconds, that:

- a sandbox runs with its own GIL, its own object allocator, and only extensions that
  support subinterpreters (PEP 684), as the runtime itself records it;
- CPython's builtin static types (``object``, ``type``, ``dict``, ``str``, ``int``,
  ``BaseException``...) are flagged static-builtin, which is what makes CPython keep their
  ``__dict__``, ``__subclasses__()`` and weak references per interpreter (3.12+);
- no Python code can write a static type object (shared by every interpreter) through
  the setter of ``type.__abstractmethods__``, the one setter of ``type`` that CPython lets
  write an immutable type (``_core`` replaces it when the main interpreter imports it);
- ``frozendict`` and ``immutableset``, whose instances are shared by pointer, cannot be
  subclassed, mutated or weakly referenced at instance level, and their type state is
  per interpreter here (``_core._guard_info``: the slot that 3.13's managed static types,
  or 3.12's emulation of them, give each interpreter);
- the type of every kind of shared object is immortal, so reading a shared object from
  many interpreters never writes a reference count that another GIL guards.

Every sandbox runs ``check()`` before it accepts work (``subsandbox._inside.serve``) and
refuses to start with ``IsolationError`` when one of them does not hold. What the checks
stand for is tested across interpreters in tests/test_guard.py and tests/test_type_guard.py.
"""

from __future__ import annotations

import sys

# Not `import typing`: a sandbox that imports it keeps ~1,300 more strings for good
# once destroyed (docs/lifecycle.md, "Memory of closed sandboxes").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from . import _core

# errors.py imports concurrent.futures (and threading): a sandbox checks itself at start,
# where imports must stay cheap, so IsolationError is imported only when it is raised.
__all__ = ["IsolationError", "check", "problems", "refusal"]

# CPython's type flags (Include/object.h, the same on 3.12 and 3.13).
_STATIC_BUILTIN = 1 << 1     # _Py_TPFLAGS_STATIC_BUILTIN: per-interpreter type state
_IMMUTABLETYPE = 1 << 8
_BASETYPE = 1 << 10
# An immortal object's reference count reads at least this much (3.12: 2**32 - 1).
_IMMORTAL_REFCOUNT = 1 << 30

_BUILTIN_TYPES: tuple[type, ...] = (object, type, dict, list, set, tuple, str, bytes, int,
                                    float, complex, BaseException, Exception)
_OUR_TYPES: tuple[type, ...] = (_core.frozendict, _core.immutableset)
_SHARED_TYPES: tuple[type, ...] = (type(None), bool, int, float, complex, str, bytes, tuple,
                                   *_OUR_TYPES)
_SANDBOX_CONFIG = {"gil": "own", "use_main_obmalloc": False,
                   "check_multi_interp_extensions": True}


def _interpreter_problems() -> list[str]:
    if _core.interpreter_id() == 0:
        return []  # the main interpreter is not a sandbox: it has the main allocator
    config = _core.interpreter_config()
    return [f"this sandbox runs with {key}={config.get(key)!r}, not {want!r}"
            for key, want in _SANDBOX_CONFIG.items() if config.get(key) != want]


def _builtin_type_problems() -> list[str]:
    found = [f"builtin type {tp.__name__} is not a static builtin type, so CPython keeps "
             f"its __subclasses__() and weak references in one place for every interpreter"
             for tp in _BUILTIN_TYPES if not tp.__flags__ & _STATIC_BUILTIN]
    if not _core._guard_info(_core.frozendict)["abstractmethods_guarded"]:
        found.append("type.__abstractmethods__ can be set on a static type, which writes "
                     "the type object that every interpreter shares")
    return found


def _our_type_problems() -> list[str]:
    found = []
    for tp in _OUR_TYPES:
        name = tp.__name__
        if tp.__flags__ & _BASETYPE:
            found.append(f"{name} can be subclassed")
        if not tp.__flags__ & _IMMUTABLETYPE:
            found.append(f"{name} can be mutated (not an immutable type)")
        if tp.__weakrefoffset__ or tp.__dictoffset__:
            found.append(f"{name} instances accept weak references or attributes")
        info = _core._guard_info(tp)
        if not (info["static_builtin_flag"] and info["has_slot_here"]):
            found.append(f"{name} has no per-interpreter type state in this interpreter "
                         f"({info['mechanism']})")
        if not (info["type_immortal"] and info["mro_immortal"]):
            found.append(f"{name} or its __mro__ is not immortal")
        if not info["version_tag"]:
            found.append(f"{name} has no version tag (every lookup would assign one, "
                         f"writing the shared type)")
    return found


def _shared_type_problems() -> list[str]:
    return [f"type {tp.__name__} of shared objects is not immortal"
            for tp in _SHARED_TYPES if sys.getrefcount(tp) < _IMMORTAL_REFCOUNT]


def problems() -> list[str]:
    """Every isolation property that does not hold here, said in words (empty: all hold)."""
    return (_interpreter_problems() + _builtin_type_problems() + _our_type_problems()
            + _shared_type_problems())


def refusal() -> str | None:
    """The message of the ``IsolationError`` that ``check()`` would raise, or None."""
    found = problems()
    if not found:
        return None
    version = sys.version.split()[0]
    return (f"subsandbox cannot isolate sandboxes on this Python ({version}): "
            + "; ".join(found)
            + ". Use a CPython 3.12+ release build with per-interpreter GILs, and report "
              "this at the subsandbox issue tracker if you are on one.")


def check() -> None:
    """Raise ``IsolationError`` naming every isolation property that does not hold here."""
    message = refusal()
    if message is not None:
        from .errors import IsolationError

        raise IsolationError(message)


def __getattr__(name: str) -> Any:
    if name == "IsolationError":
        from .errors import IsolationError

        return IsolationError
    raise AttributeError(f"module 'subsandbox.guard' has no attribute {name!r}")
