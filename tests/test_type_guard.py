"""The type guard of the static types frozendict / immutableset, across own-GIL interpreters.

What is checked (see docs/type-guard.md):
  - no subclass, no attribute set, no instance weakrefs, in main and in subinterpreters;
  - the type's tp_dict / weakref list / subclass list are per interpreter (like the builtins'),
    so weak references to the *type* (ABC caches...) from many interpreters never meet;
  - shared (arena-built) objects are read concurrently from several own-GIL interpreters;
  - CPython's own per-interpreter state of static builtin types: subclassing or weakly
    referencing dict/object/type in one subinterpreter is invisible in the others.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import weakref
from pathlib import Path

import pytest

import subsandbox._core as core

# Where this interpreter got the package from: raw interpreters import the same copy.
ROOT = Path(core.__file__).resolve().parents[1]

frozendict = core.frozendict
immutableset = core.immutableset

if sys.version_info >= (3, 13):
    import _interpreters as _interp

    def _create():
        return _interp.create("isolated")

    def _run(iid, code):
        exc = _interp.exec(iid, code)
        if exc is not None:
            raise RuntimeError(f"subinterpreter failed: {exc.formatted if hasattr(exc, 'formatted') else exc}")
else:
    import _xxsubinterpreters as _interp

    def _create():
        return _interp.create(isolated=True)

    def _run(iid, code):
        _interp.run_string(iid, code)

PRELUDE = f"""
import sys, json, weakref, gc
sys.path.insert(0, {str(ROOT)!r})
import subsandbox._core as core
from subsandbox._core import frozendict, immutableset
"""


def run_sub(body, iid=None):
    """Run `body` in an isolated subinterpreter; it stores its result with `emit(obj)`."""
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    code = PRELUDE + f"def emit(obj):\n    open({path!r}, 'w').write(json.dumps(obj))\n" + textwrap.dedent(body)
    own = iid is None
    if own:
        iid = _create()
    try:
        _run(iid, code)
        text = Path(path).read_text()
        return json.loads(text) if text else None
    finally:
        os.unlink(path)
        if own:
            _interp.destroy(iid)


def run_subs_concurrently(body, n):
    ids = [_create() for _ in range(n)]
    results, errors = [None] * n, []

    def worker(k):
        try:
            results[k] = run_sub(body, ids[k])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    return ids, threads, results, errors


def join_all(ids, threads, errors):
    for t in threads:
        t.join()
    for iid in ids:
        _interp.destroy(iid)
    assert not errors, errors


# ---- the guard, in main --------------------------------------------------------------------

IMMUTABLETYPE = 1 << 8
BASETYPE = 1 << 10


@pytest.mark.parametrize("tp", [frozendict, immutableset])
def test_flags(tp):
    assert tp.__flags__ & IMMUTABLETYPE
    assert not tp.__flags__ & BASETYPE
    assert tp.__weakrefoffset__ == 0 and tp.__dictoffset__ == 0
    info = core._guard_info(tp)
    assert info["static_builtin_flag"] and info["has_slot_here"]
    assert info["type_immortal"] and info["mro_immortal"] and info["version_tag"] != 0
    assert not info["basetype"]


@pytest.mark.parametrize("tp", [frozendict, immutableset])
def test_no_subclass(tp):
    with pytest.raises(TypeError):
        class X(tp):
            pass
    with pytest.raises(TypeError):
        type("X", (tp,), {})
    with pytest.raises(TypeError):
        class Y(dict, tp):
            pass
    assert tp.__subclasses__() == []


@pytest.mark.parametrize("tp", [frozendict, immutableset])
def test_no_type_mutation(tp):
    for name, value in [("x", 1), ("__name__", "n"), ("__qualname__", "q"), ("__doc__", "d"),
                        ("__module__", "m"), ("__bases__", (object,)), ("keys", None),
                        ("__hash__", None), ("__annotations__", {})]:
        with pytest.raises(TypeError):
            setattr(tp, name, value)
        with pytest.raises(TypeError):
            type.__setattr__(tp, name, value)
    with pytest.raises(TypeError):
        del tp.copy
    with pytest.raises(TypeError):
        object.__setattr__(tp, "x", 1)
    with pytest.raises(TypeError):
        tp.__dict__["y"] = 1  # a read-only mappingproxy


ABSTRACT = 1 << 20  # Py_TPFLAGS_IS_ABSTRACT
ABSTRACTMETHODS = type.__dict__["__abstractmethods__"]


@pytest.mark.parametrize("tp", [object, int, dict, type, frozendict, immutableset])
def test_abstractmethods_of_static_types_cannot_be_set(tp):
    # The descriptor's __set__ skips type_setattro's immutability check: in CPython it
    # writes tp_flags and the version tag of the static type, shared by every interpreter.
    version = core._guard_info(frozendict)["version_tag"]
    try:
        with pytest.raises(TypeError, match="immutable type"):
            ABSTRACTMETHODS.__set__(tp, frozenset({"x"}))
        with pytest.raises(TypeError, match="immutable type"):
            ABSTRACTMETHODS.__set__(tp, frozenset())
        with pytest.raises(TypeError, match="cannot delete '__abstractmethods__'"):
            ABSTRACTMETHODS.__delete__(tp)
    finally:
        if tp.__flags__ & ABSTRACT:  # without the guard: let the other tests run
            ABSTRACTMETHODS.__set__(tp, frozenset())
    assert not tp.__flags__ & ABSTRACT
    # (type's own __dict__ holds the descriptor itself)
    assert tp.__dict__.get("__abstractmethods__", ABSTRACTMETHODS) is ABSTRACTMETHODS
    assert core._guard_info(frozendict)["version_tag"] == version
    assert core._guard_info(frozendict)["abstractmethods_guarded"]
    object(), frozendict(a=1), immutableset({1})


def test_abstractmethods_of_classes_still_work():
    # CPython's setter still serves every mutable type: ABCMeta and by hand.
    import abc

    class Base(abc.ABC):
        @abc.abstractmethod
        def f(self): ...

    assert Base.__abstractmethods__ == frozenset({"f"}) and Base.__flags__ & ABSTRACT
    with pytest.raises(TypeError, match="abstract"):
        Base()

    class Plain:
        pass

    ABSTRACTMETHODS.__set__(Plain, frozenset({"g"}))
    assert Plain.__flags__ & ABSTRACT
    with pytest.raises(TypeError, match="abstract"):
        Plain()
    Plain.__abstractmethods__ = frozenset()
    Plain()
    del Plain.__abstractmethods__
    with pytest.raises(AttributeError):
        del Plain.__abstractmethods__
    Base.f = lambda self: 1
    abc.update_abstractmethods(Base)
    assert Base().f() == 1


def test_abstractmethods_from_a_subinterpreter_do_not_reach_main():
    version = core._guard_info(frozendict)["version_tag"]
    out = run_sub("""
        d = type.__dict__['__abstractmethods__']
        refused = []
        for tp in (object, int, frozendict):
            try:
                d.__set__(tp, frozenset({'x'}))
            except TypeError:
                refused.append(tp.__name__)
            else:
                d.__set__(tp, frozenset())  # without the guard: undo (the version tag stays new)
        emit(refused)
    """)
    assert out == ["object", "int", "frozendict"]
    assert not object.__flags__ & ABSTRACT and not frozendict.__flags__ & ABSTRACT
    assert core._guard_info(frozendict)["version_tag"] == version
    object(), int(), frozendict(a=1)


def test_weakrefs_to_types_are_allowed_and_local():
    # The type itself accepts weak references (ABC caches, WeakKeyDictionary, singledispatch
    # need them); they go to this interpreter's weakref list of the type.
    before = weakref.getweakrefcount(frozendict)
    refs = [weakref.ref(frozendict, lambda r: None) for _ in range(5)]
    assert weakref.getweakrefcount(frozendict) == before + 5
    assert all(r() is frozendict for r in refs)
    del refs
    assert weakref.getweakrefcount(frozendict) == before


def test_module_reimport_keeps_types():
    import importlib
    saved = sys.modules.pop("subsandbox._core")
    try:
        again = importlib.import_module("subsandbox._core")
        assert again.frozendict is frozendict and again is not saved
        assert again.frozendict(a=1)["a"] == 1
        assert core._guard_info(frozendict)["dict_address"] == again._guard_info(frozendict)["dict_address"]
    finally:
        sys.modules["subsandbox._core"] = saved
        # import_module() also bound the new module as the package's attribute: put the
        # original back there too, or `from . import _core` later gets a second module
        # whose Channel type is not the one subsandbox.channel exported.
        sys.modules["subsandbox"]._core = saved


# ---- the guard, in subinterpreters ----------------------------------------------------------

GUARD_BODY = """
out = {}
info = core._guard_info(frozendict)
out['info'] = info
out['iset_dict'] = core._guard_info(immutableset)['dict_address']
for tp in (frozendict, immutableset):
    try:
        class X(tp): pass
    except TypeError:
        pass
    else:
        raise AssertionError('subclassed ' + tp.__name__)
    for name in ('x', '__name__', '__doc__', 'keys'):
        try:
            setattr(tp, name, 1)
        except TypeError:
            pass
        else:
            raise AssertionError('set ' + name)
    try:
        weakref.ref(tp(), None)
    except TypeError:
        pass
    else:
        raise AssertionError('weakref to an instance')
    assert tp.__subclasses__() == []
base = weakref.getweakrefcount(frozendict)
refs = [weakref.ref(frozendict, lambda r: None) for _ in range(7)]
out['local_weakrefs'] = weakref.getweakrefcount(frozendict) - base
import collections.abc as abc
out['abc'] = [isinstance(frozendict(a=1), abc.Mapping), isinstance(immutableset(), abc.Set),
              isinstance(frozendict().keys(), abc.KeysView)]
out['object_subclass'] = frozendict in object.__subclasses__()
out['dict_keys'] = sorted(frozendict.__dict__)
out['dict_layout'] = dict_layout()
emit(out)
"""


def dict_layout_source() -> str:
    return '''
def dict_layout():
    layout = {}
    for tp in (frozendict, immutableset):
        entries = []
        for name, value in tp.__dict__.items():
            owner = getattr(value, '__objclass__', getattr(value, '__self__', None))
            entries.append([name, type(value).__name__, owner is tp,
                            value if isinstance(value, str) or value is None else None])
        layout[tp.__name__] = entries
    return layout
'''


exec(dict_layout_source())
GUARD_BODY = dict_layout_source() + GUARD_BODY


def test_guard_in_subinterpreters():
    main_dict = core._guard_info(frozendict)["dict_address"]
    main_iset = core._guard_info(immutableset)["dict_address"]
    main_weak = weakref.getweakrefcount(frozendict)
    results = [run_sub(GUARD_BODY) for _ in range(2)]
    ids, threads, conc, errors = run_subs_concurrently(GUARD_BODY, 3)
    join_all(ids, threads, errors)
    results += conc
    addresses = set()
    for out in results:
        assert out["info"]["has_slot_here"] and out["info"]["static_builtin_flag"]
        assert out["info"]["index"] == core._guard_info(frozendict)["index"]
        assert out["local_weakrefs"] == 7
        assert out["abc"] == [True, True, True]
        assert out["object_subclass"]
        assert out["dict_keys"] == sorted(frozendict.__dict__)
        # the tp_dict rebuilt for each interpreter is main's, entry by entry, in order:
        # same names, same kinds of descriptor bound to the same type, same __doc__
        assert out["dict_layout"] == dict_layout()
        assert out["info"]["dict_address"] != out["iset_dict"]
        addresses.add(out["info"]["dict_address"])
        addresses.add(out["iset_dict"])
    # every interpreter has its own tp_dict, none is main's. Only interpreters alive at
    # the same time must differ: a destroyed one's memory may serve the next one (it did
    # under ThreadSanitizer's allocator).
    assert main_dict not in addresses and main_iset not in addresses
    # the concurrent ones were all alive until join_all destroyed them
    coexisting = {a for out in conc for a in (out["info"]["dict_address"], out["iset_dict"])}
    assert len(coexisting) == 2 * len(conc)
    # nothing the subinterpreters did shows in main
    assert weakref.getweakrefcount(frozendict) == main_weak
    assert frozendict.__subclasses__() == [] and core._guard_info(frozendict)["dict_address"] == main_dict


def test_subinterpreter_churn():
    # slots are filled again in each new interpreter (possibly at a reused address)
    for _ in range(10):
        out = run_sub("emit(core._guard_info(frozendict)['has_slot_here'] and frozendict(a=1)['a'])")
        assert out == 1


def test_reimport_in_subinterpreter():
    out = run_sub("""
        import importlib
        before = core._guard_info(frozendict)['dict_address']
        del sys.modules['subsandbox._core']
        again = importlib.import_module('subsandbox._core')
        emit([again.frozendict is frozendict, again._guard_info(frozendict)['dict_address'] == before,
              again.frozendict(x=2).keys() == {'x'}])
    """)
    assert out == [True, True, True]


def test_first_import_must_be_in_main():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        if sys.version_info >= (3, 13):
            import _interpreters as I
            iid = I.create('isolated')
            exc = I.exec(iid, "import sys; sys.path.insert(0, {str(ROOT)!r}); import subsandbox._core")
            print('FAILED' if exc is not None and 'ImportError' in str(exc.type) else 'IMPORTED')
        else:
            import _xxsubinterpreters as I
            iid = I.create(isolated=True)
            try:
                I.run_string(iid, "import sys; sys.path.insert(0, {str(ROOT)!r}); import subsandbox._core")
            except Exception as e:
                print('FAILED' if 'ImportError' in str(e) else repr(e))
            else:
                print('IMPORTED')
        I.destroy(iid)
        import subsandbox._core as c
        print(c.frozendict(a=1)['a'])
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["FAILED", "1"], res.stdout + res.stderr


# ---- shared objects read concurrently ----------------------------------------------------------

def make_shared():
    inner = core.share({1, 2, 3, "x"})
    sd = core.share(
        {"a": 1, "b": None, "c": "text", 7: True, "s": inner, **{i: 256 - i for i in range(10, 210)}})  # small ints: immortal everywhere
    return sd, inner


STRESS_BODY = """
import collections.abc as abc
def take(tokens):
    # Each token is received once; the interpreters race for them.
    for token in tokens:
        try:
            return core._testing_import(token)
        except KeyError:
            pass
    raise RuntimeError("no token left")
sd = take({sd_tokens})
ss = take({ss_tokens})
assert type(sd) is frozendict and type(ss) is immutableset
expect_hash = {sd_hash}
for i in range({rounds}):
    assert sd['a'] == 1 and sd.get('c') == 'text' and 7 in sd and len(sd) == 205
    assert sd[10 + i % 200] == 256 - (10 + i % 200) and 'nope' not in sd and 5 not in sd
    assert hash(sd) == expect_hash and hash(ss) == {ss_hash}
    assert 'x' in ss and 9 not in ss and ss == {{1, 2, 3, 'x'}}
    assert sd == frozendict(sd.items())
    if i % 50 == 0:
        w = weakref.ref(frozendict, lambda r: None)   # per-interpreter weakref list
        assert isinstance(sd, abc.Mapping) and isinstance(ss, abc.Set)
        assert sd.keys() >= {{'a', 'b'}} and ss | {{9}} == {{1, 2, 3, 'x', 9}}
        assert repr(ss).startswith('immutableset(') and frozendict.__mro__[1] is object
        del w
emit('ok')
"""


def test_shared_objects_read_concurrently():
    sd, ss = make_shared()
    body = STRESS_BODY.format(sd_tokens=[core._testing_export(sd) for _ in range(4)],
                              ss_tokens=[core._testing_export(ss) for _ in range(4)],
                              sd_hash=hash(sd), ss_hash=hash(ss),
                              rounds=3000)
    ids, threads, results, errors = run_subs_concurrently(body, 4)
    for i in range(3000):  # main reads at the same time
        assert sd["a"] == 1 and hash(sd) == hash(sd) and "x" in ss
        if i % 100 == 0:
            weakref.ref(frozendict, lambda r: None)
    join_all(ids, threads, errors)
    assert results == ["ok"] * 4
    assert sd == dict(sd.items()) and core.is_shared(sd)


# ---- CPython's own static builtin types: per-interpreter state --------------------------------

BUILTIN_BODY = """
before = [len(dict.__subclasses__()), len(object.__subclasses__()), len(type.__subclasses__(type)),
          weakref.getweakrefcount(dict), weakref.getweakrefcount(object)]
class D(dict): pass
class O: pass
class M(type): pass
keep = [weakref.ref(dict, lambda r: None), weakref.ref(object), weakref.ref(type, lambda r: None)]
after = [len(dict.__subclasses__()), len(object.__subclasses__()), len(type.__subclasses__(type)),
         weakref.getweakrefcount(dict), weakref.getweakrefcount(object)]
emit({'before': before, 'after': after, 'D': D in dict.__subclasses__()})
"""


def builtin_counts():
    return [len(dict.__subclasses__()), len(object.__subclasses__()), len(type.__subclasses__(type)),
            weakref.getweakrefcount(dict), weakref.getweakrefcount(object)]


def test_builtin_static_types_are_per_interpreter():
    main_before = builtin_counts()
    iid_a, iid_b = _create(), _create()
    try:
        # B's first run imports what emit() needs, which adds object subclasses in B itself:
        # warm it up so that only A's actions could change B's counts.
        run_sub("emit([len(object.__subclasses__())])", iid_b)
        b_before = run_sub("emit([len(dict.__subclasses__()), len(object.__subclasses__()),"
                           " len(type.__subclasses__(type)), weakref.getweakrefcount(dict),"
                           " weakref.getweakrefcount(object)])", iid_b)
        a = run_sub(BUILTIN_BODY, iid_a)
        assert a["D"]
        assert a["after"][0] == a["before"][0] + 1  # dict got a subclass in A ...
        assert a["after"][1] >= a["before"][1] + 1
        assert a["after"][3] >= a["before"][3] + 1
        b_after = run_sub("emit([len(dict.__subclasses__()), len(object.__subclasses__()),"
                          " len(type.__subclasses__(type)), weakref.getweakrefcount(dict),"
                          " weakref.getweakrefcount(object)])", iid_b)
        assert b_after == b_before  # ... invisible in B
        assert builtin_counts() == main_before  # ... and in main
    finally:
        _interp.destroy(iid_a)
        _interp.destroy(iid_b)


# ---- the same checks under -X dev and PYTHONMALLOC=debug ------------------------------------------

@pytest.mark.parametrize("env", [{"PYTHONDEVMODE": "1"}, {"PYTHONMALLOC": "debug"}],
                         ids=["X-dev", "malloc-debug"])
def test_under_dev_and_debug_malloc(env):
    if os.environ.get("SS_FROZEN_INNER"):
        pytest.skip("already inside the inner run")
    res = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(Path(__file__).resolve().parent / "test_frozen.py"), __file__,
         "-k", "not test_under_dev_and_debug_malloc and not test_first_import_must_be_in_main"],
        env={**os.environ, **env, "SS_FROZEN_INNER": "1"}, cwd=str(Path(__file__).parent),
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]


def test_views_after_running_another_interpreter_in_this_thread():
    # The view/iterator types are per interpreter; a thread that ran another interpreter
    # in between must still treat this interpreter's views correctly.
    fd = frozendict(a=1, b=2)
    k, it = fd.keys(), fd.items()
    assert run_sub("emit(repr(frozendict(z=1).keys()))") == "frozendict_keys(['z'])"
    assert repr(k) == "frozendict_keys(['a', 'b'])" and repr(it).startswith("frozendict_items(")
    assert k == {"a", "b"} and k == fd.keys() and it == fd.items() and list(iter(fd)) == ["a", "b"]
