"""Pickle a task's function once per pool, when reusing the pickle changes nothing.

``Sandbox.call`` pickles a function for every call, so a ``__main__`` function always
takes along its globals' current bindings (the sandbox writes those it has not had yet:
``_crossing``, "globals by binding"). An executor sends the same function thousands of
times; pickling it by value costs more than the rest of the round trip. So a function is
pickled once and then named by a token, when the pickle it would get now is the same:

- it is importable: it crosses by name, whatever it refers to; or
- it crosses by value, and every value it takes along (the globals its code names, its
  closure cells, its defaults, and the same for each ``__main__`` function it uses) cannot
  change without changing identity (None, numbers, str, bytes, tuples and frozensets of
  them, modules, importable functions and classes, shared objects), and each is still the
  very object it was: checked by identity before every reuse.

A function that captures a list, a dict, an instance or a ``__main__`` class is pickled
for every task, as ``Sandbox.call`` does.
"""

from __future__ import annotations

import itertools
import threading
import types
from collections import OrderedDict
from typing import Any, Callable

from . import _core, _crossing

__all__ = ["Shipped", "FunctionCache"]

_PLAIN_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes})
_MISSING = object()
_tokens = itertools.count(1)
_names_cache: dict[types.CodeType, tuple[str, ...]] = {}


class Shipped:
    """A pickled function: its token (0: not cached), payload and by-reference objects."""

    __slots__ = ("fn", "token", "payload", "refs", "snapshot")

    def __init__(self, fn: Callable[..., Any], token: int, payload: bytes,
                 refs: tuple[object, ...], snapshot: list[tuple[Any, ...]] | None) -> None:
        self.fn = fn  # held, so that id(fn) is not reused while the entry lives
        self.token = token
        self.payload = payload
        self.refs = refs
        self.snapshot = snapshot  # None: importable, nothing to check


def _names_of(code: types.CodeType) -> tuple[str, ...]:
    names = _names_cache.get(code)
    if names is None:
        if len(_names_cache) >= 1024:
            _names_cache.clear()
        names = _names_cache[code] = tuple(_crossing._global_names(code))
    return names


def _is_stable(value: object) -> bool:
    kind = type(value)
    if kind in _PLAIN_TYPES or kind is types.ModuleType:
        return True
    if kind is tuple or kind is frozenset:
        return all(_is_stable(v) for v in value)  # type: ignore[attr-defined]
    if kind in (types.BuiltinFunctionType, types.FunctionType) or isinstance(value, type):
        return _crossing._importable(value)
    return bool(_core._is_reference(value))


def _by_value(value: object) -> bool:
    return type(value) is types.FunctionType and not _crossing._importable(value)


def _snapshot(fn: types.FunctionType, out: list[tuple[Any, ...]], seen: set[int]) -> bool:
    """Record what ``fn`` (and each by-value function it uses) takes along; False when
    some of it could change under the same identity."""
    if id(fn) in seen:
        return True
    seen.add(id(fn))
    if fn.__dict__ or fn.__kwdefaults__ is not None:  # both are mutable dicts
        return False
    code, defaults, fn_globals = fn.__code__, fn.__defaults__, fn.__globals__
    names = _names_of(code)
    values = tuple(fn_globals.get(name, _MISSING) for name in names)
    cells = fn.__closure__ or ()
    cell_values = tuple(_cell_value(cell) for cell in cells)
    out.append((fn, code, defaults, fn_globals, names, values, cells, cell_values))
    if defaults is not None and not _is_stable(defaults):
        return False
    for value in values + cell_values:
        if value is _MISSING:
            continue
        if _by_value(value):
            if not _snapshot(value, out, seen):
                return False
        elif not _is_stable(value):
            return False
    return True


def _cell_value(cell: types.CellType) -> object:
    try:
        return cell.cell_contents
    except ValueError:
        return _MISSING


def _unchanged(snapshot: list[tuple[Any, ...]]) -> bool:
    for fn, code, defaults, fn_globals, names, values, cells, cell_values in snapshot:
        if (fn.__code__ is not code or fn.__defaults__ is not defaults or fn.__dict__
                or fn.__kwdefaults__ is not None):
            return False
        get = fn_globals.get
        for name, value in zip(names, values):
            if get(name, _MISSING) is not value:
                return False
        for cell, value in zip(cells, cell_values):
            if _cell_value(cell) is not value:
                return False
    return True


class FunctionCache:
    """The pool's pickled functions, by id, least recently used dropped past ``size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[int, Shipped] = OrderedDict()
        self._lock = threading.Lock()

    def ship(self, fn: Callable[..., Any]) -> Shipped:
        entry = self._entries.get(id(fn))
        if entry is not None and entry.fn is fn and (entry.snapshot is None
                                                    or _unchanged(entry.snapshot)):
            return entry
        snapshot: list[tuple[Any, ...]] | None = None
        if (isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type))
                and _crossing._importable(fn)):
            cacheable = True
        elif type(fn) is types.FunctionType:
            snapshot = []
            cacheable = _snapshot(fn, snapshot, set())
        else:
            cacheable = False  # bound methods, partials, callable instances: by value
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        payload, refs = _crossing.dumps(fn, f"the function {name}")
        if not cacheable:
            return Shipped(fn, 0, payload, refs, None)
        entry = Shipped(fn, next(_tokens), payload, refs, snapshot)
        with self._lock:
            self._entries[id(fn)] = entry
            self._entries.move_to_end(id(fn))
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return entry
