"""The isolation guard (issue #4), through the public Sandbox API.

tests/test_type_guard.py drives raw interpreters to check the C side of the type guard;
these tests check what a user of Sandbox sees: subclassing, weak-referencing and caching
attributes of builtin types in one sandbox is invisible to the others and to main; our
shared types resist every interpreter; ``guard.check()`` passes here, names what fails
when a property is made to fail, and a sandbox refuses to start when its own check fails.
"""

from __future__ import annotations

import importlib.util
import threading
import weakref
from typing import Any

import pytest

import subsandbox
from subsandbox import IsolationError, Sandbox, guard
from subsandbox import _core
from subsandbox._single_phase import SHARED_STATIC_TYPES_STDLIB

from conftest import run_script

BUILTINS = (dict, object, type, str, int, Exception)


# -- run inside sandboxes (importable by reference) ---------------------------------------

def builtin_state() -> dict[str, list[int]]:
    """How many subclasses and weak references each builtin type has here."""
    return {tp.__name__: [len(type.__subclasses__(tp)), weakref.getweakrefcount(tp)]
            for tp in BUILTINS}


def subclass_and_weakref_builtins(tag: str) -> dict[str, list[str]]:
    """Subclass each builtin, weakly reference it, keep all that; report what is seen."""
    global _kept
    _kept = []
    for tp in BUILTINS:
        sub = type(f"{tag}_{tp.__name__}", (tp,), {})
        _kept += [sub, weakref.ref(tp), weakref.ref(tp, lambda r: None)]
    return {tp.__name__: sorted(c.__name__ for c in type.__subclasses__(tp)
                                if c.__name__.startswith(("A_", "B_")))
            for tp in BUILTINS}


def cached_lookups(tag: str, rounds: int) -> list[str]:
    """Class attribute lookups through the per-interpreter type cache, with the class
    modified between rounds (each change gives it a new version tag)."""

    class Number(int):
        where = tag

    class Failure(Exception):
        where = tag

    seen = set()
    for i in range(rounds):
        if i % 100 == 0:
            Number.where = f"{tag}{i}"
            Failure.where = f"{tag}{i}"
        seen.add(Number.where[0])
        seen.add(Number(3).where[0])
        seen.add(Failure.where[0])
        seen.add(int.bit_length.__name__[0])
    return sorted(seen)


def attack_our_types(shared: Any) -> list[str]:
    """Try every way to write to frozendict / immutableset; name the ones that worked."""
    from subsandbox import frozendict, immutableset

    worked = []
    for tp in (frozendict, immutableset):
        attempts = {
            "subclass": lambda: type("Sub", (tp,), {}),
            "set attribute": lambda: setattr(tp, "x", 1),
            "replace method": lambda: setattr(tp, "__len__", lambda self: 0),
            "weakref instance": lambda: weakref.ref(tp()),
            "instance attribute": lambda: setattr(tp(), "x", 1),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
            except (TypeError, AttributeError):
                continue
            worked.append(f"{tp.__name__}: {name}")
    for name, attempt in {
        "weakref shared": lambda: weakref.ref(shared),
        "attribute on shared": lambda: setattr(shared, "x", 1),
        "change __class__ of shared": lambda: setattr(shared, "__class__", dict),
    }.items():
        try:
            attempt()
        except (TypeError, AttributeError):
            continue
        worked.append(name)
    return worked


# -- builtin types: what one sandbox does stays there ----------------------------------------

def test_subclassing_and_weakrefs_of_builtins_stay_in_their_sandbox() -> None:
    with Sandbox() as a, Sandbox() as b:
        for sb in (a, b):  # first calls import what the helpers need: do that first
            sb.call(builtin_state)
        b_before = b.call(builtin_state)
        main_before = builtin_state()
        a_before = a.call(builtin_state)

        seen_in_a = a.call(subclass_and_weakref_builtins, "A")
        a_after = a.call(builtin_state)

        assert all(seen_in_a[tp.__name__] == [f"A_{tp.__name__}"] for tp in BUILTINS)
        for name, (subs, refs) in a_after.items():  # it did happen in A ...
            assert subs >= a_before[name][0] + 1 and refs >= a_before[name][1] + 1, name
        assert b.call(builtin_state) == b_before  # ... and nowhere else
        assert builtin_state() == main_before


def test_concurrent_sandboxes_see_only_their_own_subclasses() -> None:
    with Sandbox() as a, Sandbox() as b:
        results: dict[str, Any] = {}
        t = threading.Thread(target=lambda: results.update(
            A=a.call(subclass_and_weakref_builtins, "A")))
        t.start()
        results["B"] = b.call(subclass_and_weakref_builtins, "B")
        t.join()
    for tag in ("A", "B"):
        assert results[tag] == {tp.__name__: [f"{tag}_{tp.__name__}"] for tp in BUILTINS}
    assert not any(c.__name__.startswith(("A_", "B_")) for c in dict.__subclasses__())


def test_type_attribute_caches_are_per_interpreter() -> None:
    # Both sandboxes look up attributes of same-named subclasses of int and Exception at
    # once, changing them as they go; each must only ever see its own values.
    rounds = 20_000
    with Sandbox() as a, Sandbox() as b:
        results: dict[str, list[str]] = {}
        t = threading.Thread(target=lambda: results.update(A=a.call(cached_lookups, "A", rounds)))
        t.start()
        results["B"] = b.call(cached_lookups, "B", rounds)
        t.join()
    assert results == {"A": ["A", "b"], "B": ["B", "b"]}


def test_a_sandbox_cannot_make_builtin_types_abstract_elsewhere() -> None:
    # type.__abstractmethods__'s setter is the one that CPython lets write a static type,
    # shared by every interpreter: without the guard, object() fails everywhere after this.
    # A process of its own: without the guard, this one would be left broken.
    out = run_script("""
        import subsandbox
        from subsandbox import frozendict

        def make_abstract():
            refused = []
            for tp in (object, int, dict, frozendict):
                try:
                    type.__dict__["__abstractmethods__"].__set__(tp, frozenset({"f"}))
                except TypeError as exc:
                    refused.append(str(exc))
            return refused

        def usable():
            out = []
            for make in (object, int, dict, frozendict):
                try:
                    make()
                    out.append("ok")
                except Exception as exc:
                    out.append(type(exc).__name__)
            return out

        with subsandbox.Sandbox() as a, subsandbox.Sandbox() as b:
            print(a.call(make_abstract))
            print(usable(), b.call(usable), a.call(usable))
    """)
    assert out.returncode == 0, out.stderr
    refused, usable = out.stdout.splitlines()
    assert refused == repr([
        f"cannot set '__abstractmethods__' attribute of immutable type '{name}'"
        for name in ("object", "int", "dict", "subsandbox._core.frozendict")])
    assert usable == repr(["ok"] * 4) + " " + repr(["ok"] * 4) + " " + repr(["ok"] * 4)


def static_types_of_extension_modules(names: list[str]) -> dict[str, list[str]]:
    """Import each module that this interpreter lets import; name the static types of its
    own that it exposes (not heap types, not CPython's per-interpreter static builtins)."""
    import importlib
    import sys

    found: dict[str, list[str]] = {}
    for name in names:
        if name in ("__main__", "sys", "builtins"):
            continue
        try:
            module = importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - refused, or needs what is not here
            continue
        values = list(vars(module).values())
        kinds = {v for v in values if isinstance(v, type)} | {type(v) for v in values}
        own = sorted(tp.__qualname__ for tp in kinds
                     if not tp.__flags__ & (1 << 9)         # Py_TPFLAGS_HEAPTYPE
                     and not tp.__flags__ & (1 << 1)        # _Py_TPFLAGS_STATIC_BUILTIN
                     and tp.__module__ == module.__name__)
        if own:
            found[name] = own
    del sys
    return found


def extension_module_names() -> list[str]:
    import sys
    from pathlib import Path

    dynload = Path(sys.base_prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                   "lib-dynload")
    names = {f.name.split(".")[0] for f in dynload.glob("*.so")} | set(sys.builtin_module_names)
    return sorted(names)


def test_no_extension_module_a_sandbox_imports_has_static_types_of_its_own(
        sandbox: Sandbox) -> None:
    # A static type of an extension module (not flagged static builtin) keeps its subclass
    # list, tp_dict and weak references in the type object: every interpreter writes them.
    names = extension_module_names()
    assert "_datetime" in names and "_io" in names  # the walk sees the modules
    assert sandbox.call(static_types_of_extension_modules, names) == {}
    if "xxsubtype" in names:  # CPython's example module, where the build has it
        # what the check finds there: it is refused in sandboxes for these two
        assert static_types_of_extension_modules(["xxsubtype"]) == {
            "xxsubtype": ["spamdict", "spamlist"]}


def import_module_named(name: str) -> str:
    import importlib

    return importlib.import_module(name).__name__


@pytest.mark.parametrize("name", sorted(SHARED_STATIC_TYPES_STDLIB))
def test_stdlib_modules_with_shared_static_types_are_refused_in_sandboxes(name: str) -> None:
    # Their static types are shared, and they declare per-interpreter GIL support all the
    # same (xxsubtype; _testcapi from 3.15): two sandboxes subclassing xxsubtype.spamdict
    # at once aborted the process.
    why = f"module {name} cannot be used in a sandbox: its static types are one object"
    with Sandbox() as a:
        with pytest.raises(ImportError, match=why):
            a.call(import_module_named, name)
    if importlib.util.find_spec(name) is not None:
        assert import_module_named(name) == name  # main is not affected


def interpreter_settings() -> dict[str, object]:
    """The interpreter-wide settings and registries docs/type-guard.md calls per interpreter."""
    import builtins
    import codecs
    import collections.abc
    import copyreg
    import decimal
    import gc
    import socket
    import sys
    import warnings

    try:
        codecs.lookup("ss-probe")
        codec = True
    except LookupError:
        codec = False
    return {
        "recursion limit": sys.getrecursionlimit(), "switch interval": sys.getswitchinterval(),
        "int max str digits": sys.get_int_max_str_digits(), "gc enabled": gc.isenabled(),
        "gc threshold": gc.get_threshold(), "warnings filters": len(warnings.filters),
        "codec search": codec, "copyreg": int in copyreg.dispatch_table,
        "builtins": hasattr(builtins, "ss_probe"), "decimal context": decimal.getcontext().prec,
        "socket timeout": socket.getdefaulttimeout(), "dlopen flags": sys.getdlopenflags(),
        "abc registry": issubclass(int, collections.abc.Sequence),
        "excepthook": sys.excepthook is sys.__excepthook__,
        "stdout": sys.stdout is sys.__stdout__, "sys.path": "/ss-nowhere" in sys.path,
        "sys.modules": hasattr(__import__("json"), "dumps"),
    }


def change_interpreter_settings() -> None:
    import atexit
    import builtins
    import codecs
    import collections.abc
    import copyreg
    import decimal
    import gc
    import io
    import socket
    import sys
    import types
    import warnings

    sys.setrecursionlimit(123)
    sys.setswitchinterval(0.5)
    sys.set_int_max_str_digits(1000)
    gc.disable()
    gc.set_threshold(5, 5, 5)
    warnings.simplefilter("error")
    # "ss-probe" reaches a search function as "ss_probe" up to 3.14, as is from 3.15
    codecs.register(lambda name: codecs.lookup("utf-8") if name in ("ss_probe", "ss-probe")
                    else None)
    copyreg.pickle(int, lambda x: (int, (0,)))
    builtins.ss_probe = 1  # type: ignore[attr-defined]
    decimal.getcontext().prec = 5
    socket.setdefaulttimeout(3.0)
    sys.setdlopenflags(1)
    collections.abc.Sequence.register(int)
    sys.excepthook = lambda *args: None
    sys.stdout = io.StringIO()
    sys.path.insert(0, "/ss-nowhere")
    sys.modules["json"] = types.ModuleType("json")
    atexit.register(print, "never printed in main")


def test_interpreter_settings_stay_in_their_sandbox() -> None:
    main_before = interpreter_settings()
    with Sandbox() as a, Sandbox() as b:
        b_before = b.call(interpreter_settings)
        a_before = a.call(interpreter_settings)
        a.call(change_interpreter_settings)
        a_after = a.call(interpreter_settings)
        changed = {k for k in a_after if a_after[k] != a_before[k]}
        assert changed == set(a_after)  # it did happen in A ...
        assert b.call(interpreter_settings) == b_before  # ... and nowhere else
    assert interpreter_settings() == main_before


# -- our shared types resist every interpreter ------------------------------------------------

def test_our_types_cannot_be_subclassed_mutated_or_weakly_referenced_anywhere() -> None:
    shared = subsandbox.share({"k": frozenset({1, 2})})
    assert attack_our_types(shared) == []
    with Sandbox() as a, Sandbox() as b:
        assert a.call(attack_our_types, shared) == []
        assert b.call(attack_our_types, shared) == []
    assert shared == {"k": {1, 2}} and type(shared) is subsandbox.frozendict


# -- guard.check(): passes here, names what fails ---------------------------------------------

def test_check_passes_in_main_and_in_sandboxes(sandbox: Sandbox) -> None:
    assert guard.check() is None and guard.problems() == [] and guard.refusal() is None
    assert sandbox.call(guard.problems) == []
    assert subsandbox.guard is guard and guard.IsolationError is IsolationError


def test_sandbox_start_imports_no_threading() -> None:
    # The check runs at every sandbox start: it must not import errors.py's
    # concurrent.futures / threading there (cost, and 3.12's thread join at destroy).
    out = run_script("""
        import subsandbox
        def modules():
            import sys
            return sorted(m for m in ("threading", "concurrent.futures", "subsandbox.errors")
                          if m in sys.modules)
        with subsandbox.Sandbox() as sb:
            print(sb.call(modules))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("sabotage, message", [
    (lambda mp: mp.setattr(guard, "_STATIC_BUILTIN", 1 << 30),
     "builtin type object is not a static builtin type"),
    (lambda mp: mp.setattr(guard, "_BASETYPE", guard._IMMUTABLETYPE),
     "frozendict can be subclassed"),
    (lambda mp: mp.setattr(guard, "_IMMORTAL_REFCOUNT", 1 << 62),
     "type NoneType of shared objects is not immortal"),
    (lambda mp: mp.setattr(_core, "_guard_info", lambda tp: {
        "static_builtin_flag": True, "has_slot_here": False, "mechanism": "none",
        "type_immortal": True, "mro_immortal": True, "version_tag": 1,
        "abstractmethods_guarded": True}),
     "frozendict has no per-interpreter type state in this interpreter (none)"),
    (lambda mp, real=_core._guard_info: mp.setattr(_core, "_guard_info", lambda tp: {
        **real(tp), "abstractmethods_guarded": False}),
     "type.__abstractmethods__ can be set on a static type"),
    (lambda mp: (mp.setattr(_core, "interpreter_id", lambda: 7),
                 mp.setattr(_core, "interpreter_config", lambda: {
                     "gil": "shared", "use_main_obmalloc": True,
                     "check_multi_interp_extensions": True})),
     "this sandbox runs with gil='shared', not 'own'; this sandbox runs with "
     "use_main_obmalloc=True, not False"),
])
def test_check_fails_with_its_message(monkeypatch: pytest.MonkeyPatch, sabotage: Any,
                                      message: str) -> None:
    sabotage(monkeypatch)
    assert any(message.split("; ")[0] in p for p in guard.problems())
    with pytest.raises(IsolationError) as info:
        guard.check()
    assert message in str(info.value)
    assert "subsandbox cannot isolate sandboxes on this Python" in str(info.value)


def test_sandbox_refuses_to_start_when_its_check_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from subsandbox import sandbox as sandbox_module

    gc.collect()  # the channels of earlier tests' sandboxes may still be garbage
    before = _core._channel_stats()["queues"]
    sabotaged = sandbox_module._BOOT.replace(
        "from subsandbox import _inside\n",
        "from subsandbox import guard\nguard._STATIC_BUILTIN = 1 << 30\n"
        "from subsandbox import _inside\n")
    assert sabotaged != sandbox_module._BOOT
    monkeypatch.setattr(sandbox_module, "_BOOT", sabotaged)
    with pytest.raises(IsolationError, match="builtin type dict is not a static builtin type"):
        Sandbox()
    monkeypatch.undo()
    gc.collect()
    assert _core._channel_stats()["queues"] == before  # nothing of it is left
    with Sandbox() as sb:  # and the next sandbox starts as usual
        assert sb.call(guard.problems) == []
