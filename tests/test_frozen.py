"""Behaviour of subsandbox._core.frozendict and immutableset (one interpreter).

frozendict follows PEP 814's builtin frozendict; immutableset behaves as a frozenset.
Their shared form (built by share()) is tested in test_share.py and
test_share_invariants.py.
"""

import collections.abc as abc
import copy
import gc
import pickle
import sys
import weakref
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subsandbox._core as core

frozendict = core.frozendict
immutableset = core.immutableset

keys = st.one_of(st.integers(), st.text(max_size=8), st.tuples(st.integers(), st.text(max_size=3)),
                 st.floats(allow_nan=False), st.booleans(), st.none(), st.frozensets(st.integers()))
values = st.one_of(st.integers(), st.text(max_size=8), st.none(), st.tuples(st.integers()))


# ---- frozendict: construction --------------------------------------------------------------

def test_constructors():
    assert frozendict() == {}
    assert frozendict({"a": 1, "b": 2}) == {"a": 1, "b": 2}
    assert frozendict([("a", 1), ("b", 2)]) == {"a": 1, "b": 2}
    assert frozendict(a=1, b=2) == {"a": 1, "b": 2}
    assert frozendict({"a": 1}, b=2, a=3) == {"a": 3, "b": 2}
    assert frozendict(frozendict(x=1)) == {"x": 1}
    assert frozendict(iter([(1, 2)])) == {1: 2}
    fd = frozendict(x=1)
    assert frozendict(fd) is fd  # immutable: like frozenset(fs)

    class M:
        def keys(self):
            return ["k"]

        def __getitem__(self, key):
            return key * 2

    assert frozendict(M()) == {"k": "kk"}
    assert frozendict(types_mapping()) == {"m": 1}


def types_mapping():
    import types
    return types.MappingProxyType({"m": 1})


def test_constructor_errors():
    with pytest.raises(TypeError):
        frozendict(1)
    with pytest.raises(ValueError):
        frozendict([(1,)])
    with pytest.raises(TypeError):
        frozendict({"a": 1}, {"b": 2})
    with pytest.raises(TypeError):
        frozendict([([], 1)])  # unhashable key
    with pytest.raises(TypeError):
        frozendict.fromkeys([[]])


def test_insertion_order_last_value_wins():
    fd = frozendict([("b", 1), ("a", 2), ("b", 3)])
    assert list(fd) == ["b", "a"]
    assert fd["b"] == 3
    assert list(reversed(fd)) == ["a", "b"]


# ---- lookups -------------------------------------------------------------------------------

def test_lookup():
    fd = frozendict({"a": 1, 2: "two", (1, 2): None, 1.5: "f"})
    assert fd["a"] == 1 and fd[2] == "two" and fd[(1, 2)] is None and fd[1.5] == "f"
    assert fd[2.0] == "two"  # equal keys of other types
    assert "a" in fd and 2 in fd and "zz" not in fd
    assert fd.get("a") == 1 and fd.get("zz") is None and fd.get("zz", 5) == 5
    with pytest.raises(KeyError) as exc:
        fd["zz"]
    assert exc.value.args == ("zz",)
    with pytest.raises(KeyError) as exc:
        fd[(9, 9)]
    assert exc.value.args == ((9, 9),)
    with pytest.raises(TypeError):
        fd[[]]
    with pytest.raises(TypeError):
        [] in fd
    assert fd.__getitem__("a") == 1
    with pytest.raises(TypeError):
        fd.get()


def test_unhashable_key_errors_say_so_like_pep_814():
    fd = frozendict(a=1)

    class Keys:
        def keys(self):
            return [[]]

        def __getitem__(self, key):
            return 1

    message = "cannot use 'list' as a frozendict key (unhashable type: 'list')"
    for attempt in (lambda: fd[[]], lambda: [] in fd, lambda: fd.get([]), lambda: fd.get([], 0),
                    lambda: [] in fd.keys(), lambda: ([], 1) in fd.items(),
                    lambda: frozendict([([], 1)]), lambda: frozendict([("a", 1), ([], 1)], b=2),
                    lambda: frozendict(Keys()), lambda: frozendict.fromkeys([[]]),
                    lambda: frozendict.fromkeys(iter([[]]), 0)):
        with pytest.raises(TypeError) as exc:
            attempt()
        assert str(exc.value) == message

    class RaisesTypeError:
        def __hash__(self):
            raise TypeError("boom")

    name = f"{RaisesTypeError.__module__}.{RaisesTypeError.__qualname__}"
    for attempt in (lambda: fd[RaisesTypeError()], lambda: frozendict([(RaisesTypeError(), 1)])):
        with pytest.raises(TypeError) as exc:
            attempt()
        assert str(exc.value) == f"cannot use '{name}' as a frozendict key (boom)"

    class SubTypeError(TypeError):
        pass

    class RaisesOther:
        def __init__(self, exc):
            self.exc = exc

        def __hash__(self):
            raise self.exc

    for error in (SubTypeError("sub"), ValueError("value")):  # left as they are
        for attempt in (lambda: fd[RaisesOther(error)],
                        lambda: frozendict([(RaisesOther(error), 1)])):
            with pytest.raises(type(error)) as exc:
                attempt()
            assert exc.value is error

    class EqRaises:
        def __hash__(self):
            return 1

        def __eq__(self, other):
            raise TypeError("from __eq__")

    with pytest.raises(TypeError, match=r"^from __eq__$"):  # hashable: not about the key
        frozendict([(EqRaises(), 1), (EqRaises(), 2)])
    # the other errors of the pairs, with 3.15's messages
    with pytest.raises(TypeError) as exc:
        frozendict([("a", 1), 2])
    assert str(exc.value) == "object is not iterable" and exc.value.__notes__ == [
        "Cannot convert dictionary update sequence element #1 to a sequence"]
    with pytest.raises(ValueError, match=r"^dictionary update sequence element #0 has length 1; "
                                         r"2 is required$"):
        frozendict([(1,)])


def test_unhashable_item_errors_say_what_frozensets_say():
    # Each operation as frozenset words it on the running CPython: 3.14 says "cannot use
    # 'list' as a set element (...)" in some of them (the constructor said "as a dict
    # key", from the dict it is built with), 3.12/3.13 the hash's own error.
    class RaisesTypeError:
        def __hash__(self):
            raise TypeError("boom")

    for bad in ([], (1, []), RaisesTypeError()):
        for operation in (lambda s: bad in s, lambda s: type(s)([1, bad]),
                          lambda s: s.isdisjoint([bad]), lambda s: s.issuperset([bad]),
                          lambda s: s.issubset([bad]), lambda s: s.union([bad]),
                          lambda s: s.intersection([bad]), lambda s: s.difference([bad]),
                          lambda s: s.symmetric_difference([bad])):
            messages = []
            for s in (frozenset([1]), immutableset([1])):
                with pytest.raises(TypeError) as exc:
                    operation(s)
                messages.append(str(exc.value))
            assert messages[1] == messages[0]


def test_collisions_and_eq_errors():
    class K:
        def __init__(self, v):
            self.v = v

        def __hash__(self):
            return 42

        def __eq__(self, other):
            if not isinstance(other, K):
                return NotImplemented
            return other.v == self.v

    ks = [K(i) for i in range(50)]
    fd = frozendict((k, k.v) for k in ks)
    assert all(fd[K(i)] == i for i in range(50))
    assert K(99) not in fd

    class Bad:
        def __hash__(self):
            return 42

        def __eq__(self, other):
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fd[Bad()]


@pytest.mark.parametrize("n", [0, 1, 5, 6, 85, 86, 200, 30000, 70000])
def test_sizes_and_index_widths(n):
    d = {i * 7919: str(i) for i in range(n)}
    fd = frozendict(d)
    assert len(fd) == n and fd == d
    assert all(fd[k] == v for k, v in d.items())
    assert -1 not in fd
    assert list(fd) == list(d)
    assert sys.getsizeof(fd) > 0


def test_mapping_abc():
    fd = frozendict(a=1)
    assert isinstance(fd, abc.Mapping)
    assert not isinstance(fd, abc.MutableMapping)
    assert isinstance(fd, abc.Hashable)
    assert isinstance(fd.keys(), abc.KeysView)
    assert isinstance(fd.values(), abc.ValuesView)
    assert isinstance(fd.items(), abc.ItemsView)
    assert isinstance(iter(fd), abc.Iterator)
    # The Mapping mixins agree with ours
    assert abc.Mapping.get(fd, "a") == 1
    assert list(abc.Mapping.keys(fd)) == ["a"]
    # pattern matching sees a mapping
    match fd:
        case {"a": x}:
            assert x == 1
        case _:
            pytest.fail("not matched as a mapping")


def test_signatures_and_argument_errors_like_pep_814():
    import inspect
    sig = lambda f: str(inspect.signature(f))  # noqa: E731
    # the signatures CPython 3.15 gives for its frozendict's methods
    assert sig(frozendict.get) == "(self, key, default=None, /)"
    assert sig(frozendict.fromkeys) == "(iterable, value=None, /)"
    assert sig(frozendict.__getitem__) == "(self, key, /)"
    assert sig(frozendict.__deepcopy__) == "(self, memo, /)"
    for name in ("keys", "values", "items", "copy", "__reversed__", "__sizeof__"):
        assert sig(getattr(frozendict, name)) == "(self, /)", name  # 3.12 too
    assert sig(frozendict.__class_getitem__) == "(object, /)"
    fd = frozendict(a=1)
    assert sig(fd.keys().isdisjoint) == sig(fd.items().isdisjoint) == "(object, /)"
    assert sig(iter(fd).__reduce__) == "()"
    for name in ("copy", "__reduce__", "__sizeof__"):
        assert sig(getattr(immutableset, name)) == "(self, /)", name
    # and frozenset's (3.13+) for immutableset's
    for name in ("union", "intersection", "difference"):
        assert sig(getattr(immutableset, name)) == "(self, /, *others)", name
    for name in ("symmetric_difference", "issubset", "issuperset", "isdisjoint"):
        assert sig(getattr(immutableset, name)) == "(self, other, /)", name
    for call, message in [
        (lambda: fd.get(), "get expected at least 1 argument, got 0"),
        (lambda: fd.get(1, 2, 3), "get expected at most 2 arguments, got 3"),
        (lambda: frozendict.fromkeys(), "fromkeys expected at least 1 argument, got 0"),
        (lambda: frozendict.fromkeys(1, 2, 3), "fromkeys expected at most 2 arguments, got 3"),
    ]:
        with pytest.raises(TypeError) as exc:
            call()
        assert str(exc.value) == message


# ---- views -----------------------------------------------------------------------------------

def test_views():
    fd = frozendict(a=1, b=2, c=3)
    k, v, it = fd.keys(), fd.values(), fd.items()
    assert len(k) == len(v) == len(it) == 3
    assert list(k) == ["a", "b", "c"] and list(v) == [1, 2, 3]
    assert list(it) == [("a", 1), ("b", 2), ("c", 3)]
    assert list(reversed(k)) == ["c", "b", "a"]
    assert list(reversed(v)) == [3, 2, 1]
    assert list(reversed(it)) == [("c", 3), ("b", 2), ("a", 1)]
    assert "a" in k and "z" not in k
    assert ("a", 1) in it and ("a", 2) not in it and "a" not in it and ("a",) not in it
    assert k == {"a", "b", "c"} and {"a", "b", "c"} == k
    assert k == dict.fromkeys("abc").keys() and dict.fromkeys("abc").keys() == k
    assert k != {"a"}
    assert k <= {"a", "b", "c", "d"} and k < {"a", "b", "c", "d"} and not k > {"a"} is False
    assert it == {("a", 1), ("b", 2), ("c", 3)}
    assert (k & {"a", "z"}) == {"a"} and type(k & {"a"}) is set
    assert (k | {"z"}) == {"a", "b", "c", "z"}
    assert (k - {"a"}) == {"b", "c"} and ({"a", "q"} - k) == {"q"}
    assert (k ^ {"a", "z"}) == {"b", "c", "z"}
    assert (["a", "x"] & k) == {"a"}
    assert (it & {("a", 1)}) == {("a", 1)}
    assert k.isdisjoint(["x"]) and not k.isdisjoint(["a"])
    assert repr(k) == "frozendict_keys(['a', 'b', 'c'])"
    assert repr(v) == "frozendict_values([1, 2, 3])"
    assert repr(it) == "frozendict_items([('a', 1), ('b', 2), ('c', 3)])"
    with pytest.raises(TypeError):
        hash(k)
    with pytest.raises(TypeError):
        type(k)()
    assert v != fd.values()  # like dict values: identity only
    it2 = iter(fd)
    assert it2.__length_hint__() == 3
    next(it2)
    assert it2.__length_hint__() == 2
    assert list(it2) == ["b", "c"] and list(it2) == []


def test_view_mapping_is_a_read_only_proxy_like_dict_views():
    import types
    fd = frozendict(a=1)
    for view in (fd.keys(), fd.values(), fd.items()):
        proxy = view.mapping
        assert type(proxy) is types.MappingProxyType
        assert proxy == fd and proxy["a"] == 1 and list(proxy.items()) == [("a", 1)]
        assert proxy.copy() is fd  # the proxy's copy() is the frozendict's own
        with pytest.raises(TypeError):
            proxy["b"] = 2


def test_iterators_reduce_and_pickle_like_dict_iterators():
    fd = frozendict(a=1, b=[2], c=3)
    makers = {
        "keys": (lambda: iter(fd), ["a", "b", "c"]),
        "values": (lambda: iter(fd.values()), [1, [2], 3]),
        "items": (lambda: iter(fd.items()), [("a", 1), ("b", [2]), ("c", 3)]),
        "reversed keys": (lambda: reversed(fd), ["c", "b", "a"]),
        "reversed values": (lambda: reversed(fd.values()), [3, [2], 1]),
        "reversed items": (lambda: reversed(fd.items()), [("c", 3), ("b", [2]), ("a", 1)]),
    }
    for name, (make, expected) in makers.items():
        it = make()
        assert next(it) == expected[0], name
        assert it.__reduce__() == (iter, (expected[1:],)), name
        assert list(it) == expected[1:], name  # reducing did not move it
        assert it.__reduce__() == (iter, ([],)), name  # exhausted
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            it = make()
            next(it)
            assert list(pickle.loads(pickle.dumps(it, proto))) == expected[1:], (name, proto)
            assert list(copy.copy(it)) == expected[1:] == list(it), (name, proto)


def test_views_refuse_copy_and_pickle_like_dict_views():
    fd = frozendict(a=1)
    for view in (fd.keys(), fd.values(), fd.items()):
        name = type(view).__name__
        for attempt in (copy.copy, copy.deepcopy,
                        *(lambda v, p=p: pickle.dumps(v, p)
                          for p in range(pickle.HIGHEST_PROTOCOL + 1))):
            with pytest.raises(TypeError, match=f"cannot pickle '.*{name}' object"):
                attempt(view)


# ---- equality, hashing ---------------------------------------------------------------------

def test_equality():
    a = frozendict(x=1, y=2)
    b = frozendict(y=2, x=1)
    assert a == b and not a != b
    assert a == {"y": 2, "x": 1} and {"x": 1, "y": 2} == a
    assert a != {"x": 1} and a != frozendict(x=1, y=3) and a != {"x": 1, "z": 2}
    assert a != [("x", 1), ("y", 2)] and a != "xy"
    assert frozendict() == {} and frozendict() == frozendict()
    from collections import OrderedDict
    assert a == OrderedDict(x=1, y=2)
    with pytest.raises(TypeError):
        a < b


def test_equality_does_not_trust_unequal_hashes():
    # PEP 814's frozendict compares items, never hashes: equal values of an __eq__ that
    # disagrees with __hash__ keep two frozendicts equal after both were hashed.
    class AlwaysEqual:
        __eq__ = lambda self, other: True  # noqa: E731
        __hash__ = object.__hash__

    a, b = frozendict(k=AlwaysEqual()), frozendict(k=AlwaysEqual())
    assert hash(a) != hash(b)
    assert a == b and not a != b


def test_hash():
    a = frozendict(x=1, y=2)
    assert hash(a) == hash(frozenset(a.items())) == hash(frozendict(y=2, x=1))
    assert hash(frozendict()) == hash(frozenset())
    assert {a: 1}[frozendict(x=1, y=2)] == 1
    with pytest.raises(TypeError):
        hash(frozendict(x=[1]))
    with pytest.raises(TypeError):  # not cached as a success
        hash(frozendict(x=[1]))
    assert hash(a) == hash(a)  # cached path


def test_hash_of_deep_nesting_raises_recursion_error_not_a_crash():
    d = frozendict({0: 0})
    for _ in range(300_000):
        d = frozendict({0: d})
    with pytest.raises(RecursionError):
        hash(d)


class _KeyThatEmptiesItsDict:
    """Its second __hash__ (the frozendict's, after the private dict's own) reaches the
    private dict the constructor built and empties or rewrites it."""

    def __init__(self, rewrite):
        self.calls = 0
        self.rewrite = rewrite

    def __hash__(self):
        self.calls += 1
        if self.calls == 2:
            for r in gc.get_referrers(self):
                if type(r) is dict and self in r:
                    if self.rewrite:    # same size, its keys again in another order
                        items = list(r.items())
                        r.clear()
                        r.update(reversed(items))
                    else:
                        r.clear()       # drops the dict's references to key and value
        return 12345

    def __eq__(self, other):
        return self is other


@pytest.mark.parametrize("rewrite", [False, True])
def test_a_key_hash_that_changes_the_source_cannot_free_or_repeat_an_item(rewrite):
    key = _KeyThatEmptiesItsDict(rewrite)
    fd = frozendict((k, v) for k, v in [(key, [1, 2, 3]), ("b", 2)])
    del key
    assert len(fd) == 2 and len(set(map(id, fd))) == 2
    (k, v), b = fd.items()
    assert type(k) is _KeyThatEmptiesItsDict and v == [1, 2, 3] and b == ("b", 2)
    assert fd[k] == [1, 2, 3] and fd["b"] == 2
    key = _KeyThatEmptiesItsDict(rewrite)
    s = immutableset(x for x in [key, "b"])
    del key
    assert len(s) == 2 and {type(x) for x in s} == {_KeyThatEmptiesItsDict, str}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys, values), max_size=40))
def test_against_dict(pairs):
    d = dict(pairs)
    fd = frozendict(pairs)
    assert fd == d and d == fd and len(fd) == len(d)
    assert list(fd) == list(d) and list(fd.items()) == list(d.items())
    for k, v in d.items():
        assert fd[k] == v and k in fd
    assert hash(fd) == hash(frozenset(d.items()))
    assert fd == frozendict(reversed(list(d.items())))
    assert hash(fd) == hash(frozendict(reversed(list(d.items()))))
    assert pickle.loads(pickle.dumps(fd)) == fd


# ---- operators and methods -------------------------------------------------------------------

def test_union():
    a = frozendict(x=1, y=2)
    assert a | frozendict(y=5) == {"x": 1, "y": 5} and type(a | {"z": 1}) is frozendict
    assert a | {} is a
    assert frozendict() | a is a
    r = {"q": 1} | a
    assert r == {"q": 1, "x": 1, "y": 2} and type(r) is dict
    c = a
    c |= frozendict(z=3)
    assert c == {"x": 1, "y": 2, "z": 3} and a == {"x": 1, "y": 2}
    d = {"q": 1}
    d |= a
    assert d == {"q": 1, "x": 1, "y": 2}
    with pytest.raises(TypeError):
        a | [("z", 1)]
    with pytest.raises(TypeError):
        [("z", 1)] | a


def test_reflected_union_keeps_ordereddict_and_defaultdict():
    # As in CPython 3.15, where OrderedDict and defaultdict take a frozendict on the right
    # of |: their own type, built as their copy() builds it (no overridden copy() or
    # update() is called); any other dict subclass gives a dict, like dict's own |.
    from collections import Counter, OrderedDict, defaultdict
    fd = frozendict(a=1, b=2)
    r = OrderedDict(c=3, a=0) | fd
    assert type(r) is OrderedDict and list(r.items()) == [("c", 3), ("a", 1), ("b", 2)]
    r = defaultdict(list, c=3) | fd
    assert type(r) is defaultdict and r.default_factory is list
    assert r == {"c": 3, "a": 1, "b": 2} and r["new"] == []

    class MyOrdered(OrderedDict):
        def copy(self):
            raise AssertionError("not called")

        def update(self, *args, **kwds):
            raise AssertionError("not called")

    class MyDefault(defaultdict):
        def copy(self):
            raise AssertionError("not called")

    r = MyOrdered(c=3) | fd
    assert type(r) is MyOrdered and r == {"c": 3, "a": 1, "b": 2}
    r = MyDefault(int, c=3) | fd
    assert type(r) is MyDefault and r.default_factory is int and r == {"c": 3, "a": 1, "b": 2}
    r = Counter(a=5, z=1) | fd
    assert type(r) is dict and r == {"a": 1, "z": 1, "b": 2}  # replaced, not counted

    class Plain(dict):
        pass

    assert type(Plain(z=1) | fd) is dict and type({} | fd) is dict
    assert type(fd | OrderedDict(z=1)) is frozendict


def test_copy_fromkeys_repr_pickle_generic():
    a = frozendict(x=[1], y=2)
    assert a.copy() is a and copy.copy(a) is a
    deep = copy.deepcopy(a)
    assert deep == a and deep["x"] is not a["x"]
    assert frozendict.fromkeys("ab") == {"a": None, "b": None}
    assert frozendict.fromkeys("ab", 0) == {"a": 0, "b": 0}
    assert type(frozendict.fromkeys("ab")) is frozendict
    assert repr(frozendict(x=1, y="z")) == "frozendict({'x': 1, 'y': 'z'})"
    assert repr(frozendict()) == "frozendict()"
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        b = pickle.loads(pickle.dumps(a, proto))
        assert b == a and type(b) is frozendict
    ga = frozendict[str, int]
    assert ga.__origin__ is frozendict and ga.__args__ == (str, int)


def test_recursive_repr_like_pep_814():
    lst = []
    rec = frozendict(x=lst)
    lst.append(rec)
    assert repr(rec) == "frozendict({'x': [frozendict({...})]})"  # as CPython 3.15 prints it
    assert repr(lst) == "[frozendict({'x': [...]})]"


def test_deepcopy_keeps_identities_like_a_tuple():
    lst = []
    rec = frozendict(x=lst)
    lst.append(rec)
    c = copy.deepcopy(rec)
    assert c is not rec and c["x"] is not lst and c["x"][0] is c  # the cycle, copied
    shared = [1]
    fd = frozendict(a=shared, b=shared)
    c = copy.deepcopy(fd)
    assert c == fd and c["a"] is c["b"] is not shared
    memo = {}
    assert copy.deepcopy(fd, memo) is memo[id(fd)]  # recorded, as deepcopy would

    class Key:
        def __init__(self, v):
            self.v = v

        def __eq__(self, other):
            return isinstance(other, Key) and other.v == self.v

        def __hash__(self):
            return hash(self.v)

    k = Key(1)
    c = copy.deepcopy(frozendict({k: "v"}))
    assert list(c) == [k] and next(iter(c)) is not k  # keys are deep-copied too
    # Nothing to copy: the object itself, as copy.deepcopy gives for a tuple (CPython
    # 3.15's own frozendict builds an equal new one).
    atomic = frozendict(a=1, b=("x", 2.0))
    assert copy.deepcopy(atomic) is atomic and atomic.__deepcopy__({}) is atomic
    assert frozendict().__deepcopy__({}) == frozendict()


def test_no_mutation():
    fd = frozendict(a=1)
    with pytest.raises(TypeError):
        fd["b"] = 2
    with pytest.raises(TypeError):
        del fd["a"]
    for name in ("update", "pop", "popitem", "clear", "setdefault", "__setitem__", "__delitem__"):
        assert not hasattr(fd, name), name
    with pytest.raises(AttributeError):
        fd.x = 1
    with pytest.raises(AttributeError):
        fd.__dict__
    with pytest.raises(TypeError):
        fd.__class__ = dict
    with pytest.raises(TypeError):
        weakref.ref(fd)
    fd.__init__({"z": 1})  # object.__init__: does nothing
    assert fd == {"a": 1}


def test_gc_cycle_is_collected():
    class Box:
        pass

    box = Box()
    fd = frozendict(b=box)
    box.fd = fd
    ref = weakref.ref(box)
    del box, fd
    gc.collect()
    assert ref() is None


def test_deep_nesting_dealloc():
    fd = frozendict()
    for _ in range(100000):
        fd = frozendict(x=fd)
    del fd  # trashcan: no stack overflow


# ---- immutableset ----------------------------------------------------------------------------

def test_immutableset_basics():
    s = immutableset([3, 1, 2, 3])
    assert len(s) == 3 and 1 in s and 9 not in s
    assert sorted(s) == [1, 2, 3]
    assert list(s) == [3, 1, 2]  # first-seen order
    assert s == {1, 2, 3} and {1, 2, 3} == s and s == frozenset({1, 2, 3})
    assert frozenset({1, 2, 3}) == s
    assert s != {1, 2} and s != [1, 2, 3]
    assert hash(s) == hash(frozenset({1, 2, 3}))
    assert hash(immutableset()) == hash(frozenset())
    assert immutableset(s) is s and s.copy() is s
    assert isinstance(s, abc.Set) and isinstance(s, abc.Hashable) and not isinstance(s, abc.MutableSet)
    assert repr(immutableset()) == "immutableset()"
    assert repr(immutableset(["a"])) == "immutableset({'a'})"
    assert {1, 2} in immutableset([frozenset({1, 2})])  # set looked up as frozenset
    with pytest.raises(TypeError):
        [] in s
    with pytest.raises(TypeError):
        immutableset([[]])
    with pytest.raises(TypeError):
        immutableset(1)
    with pytest.raises(TypeError):
        immutableset(x=1)
    with pytest.raises(TypeError):
        weakref.ref(s)
    with pytest.raises(AttributeError):
        s.add(1)
    with pytest.raises(TypeError):
        s.__class__ = frozenset
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        t = pickle.loads(pickle.dumps(s, proto))
        assert t == s and type(t) is immutableset
    assert immutableset[int].__origin__ is immutableset


def test_immutableset_recursive_repr_like_frozenset():
    class ReprOf:  # hashable, and its repr is that of what it holds
        def __init__(self, held):
            self.held = held

        def __repr__(self):
            return repr(self.held)

    direct = ReprOf(None)
    s = immutableset([direct])
    direct.held = s
    assert repr(s) == "immutableset({immutableset(...)})"  # frozenset({frozenset(...)})
    lst = []
    s = immutableset([ReprOf(lst)])
    lst.append(s)
    assert repr(s) == "immutableset({[immutableset(...)]})"  # frozenset({[frozenset(...)]})
    assert repr(lst) == "[immutableset({[...]})]"
    assert repr(immutableset()) == "immutableset()"


def test_immutableset_algebra_types():
    s = immutableset([1, 2, 3])
    assert type(s | {4}) is immutableset and s | {4} == {1, 2, 3, 4}
    assert type(s & frozenset({1})) is immutableset and s & {1, 9} == {1}
    assert type(s - {1}) is immutableset and s - {1} == {2, 3}
    assert type(s ^ {1, 9}) is immutableset and s ^ {1, 9} == {2, 3, 9}
    assert type(s | immutableset([9])) is immutableset
    # a builtin set on the left decides, like set | frozenset -> set
    assert type({4} | s) is set and {4} | s == {1, 2, 3, 4}
    assert type(frozenset({4}) | s) is frozenset
    assert type({1, 9} - s) is set and {1, 9} - s == {9}
    with pytest.raises(TypeError):
        s | [4]
    with pytest.raises(TypeError):
        [4] | s
    assert type(s.union([4], (5,))) is immutableset and s.union([4], (5,)) == {1, 2, 3, 4, 5}
    assert s.intersection([1, 2], [2]) == {2} and type(s.intersection()) is immutableset
    assert s.difference([1], [2]) == {3}
    assert s.symmetric_difference([3, 4]) == {1, 2, 4}
    assert s.issubset(range(5)) and not s.issubset([1])
    assert s.issuperset([1, 2]) and not s.issuperset([7])
    assert s.isdisjoint([7]) and not s.isdisjoint([1])
    c = s
    c |= {7}
    assert c == {1, 2, 3, 7} and s == {1, 2, 3}


def test_immutableset_compares_with_dict_views_like_frozenset():
    s = immutableset({2, 5})
    keys = {2: 0, 5: 0}.keys()
    assert s == keys and keys == s and not s != keys and not keys != s
    assert immutableset({(2, 0)}) == {2: 0}.items() == immutableset({(2, 0)})
    assert immutableset({2}) <= {2: 0}.keys() and immutableset({2}) < {2: 0, 3: 0}.keys()
    assert not immutableset({2}) < {2: 0}.keys() and not immutableset({2}) <= {3: 0}.keys()
    assert immutableset({2, 3}) >= {2: 0}.keys() and immutableset({2, 3}) > {2: 0}.keys()
    assert not immutableset({2}) >= {2: 0}.items() and not immutableset({2}) > {}.keys() is False
    assert s != {2: 0, 5: 0}.values()  # a values view is not set-like
    with pytest.raises(TypeError):
        immutableset() < {}.values()
    # as the view compares (frozenset leaves it to the view): == looks the view's items
    # up in the set, and this one cannot be hashed
    with pytest.raises(TypeError):
        immutableset({(1, 2)}) == {1: []}.items()
    with pytest.raises(TypeError):
        immutableset({(1, 2)}) >= {1: []}.items()
    assert not immutableset({(1, 2)}) <= {1: []}.items()


def test_immutableset_reads_set_subclasses_at_the_c_level_like_frozenset():
    # frozenset compares with a set (subclass) through the set's C structure: neither an
    # overridden __contains__ nor __iter__ nor __len__ is called.
    class NoContains(set):
        def __contains__(self, item):
            return False

    class OtherItems(set):
        def __iter__(self):
            return iter([99])

        def __len__(self):
            return 0

    one = immutableset({1})
    for other in (NoContains({1}), OtherItems({1})):
        assert one == other and other == one and not one != other
        assert one <= other and one >= other and not one < other and not one > other
        assert one.issubset(other) and one.issuperset(other)
        assert immutableset({1, 2}) > other and other < immutableset({1, 2})
        assert not immutableset({2}) <= other and not immutableset({1, 2}) == other


def test_immutableset_isdisjoint_like_frozenset():
    s = immutableset([frozenset({1})])
    assert frozenset({1}) in s and {1} in s  # `in` retries a set as a frozenset...
    for other in ([{1}], [{2}], iter([{1}])):
        with pytest.raises(TypeError):  # ...isdisjoint() does not
            s.isdisjoint(other)
    with pytest.raises(TypeError):
        immutableset().isdisjoint([[]])
    assert s.isdisjoint([frozenset({2})]) and not s.isdisjoint([frozenset({1})])
    assert not s.isdisjoint(s) and immutableset().isdisjoint(immutableset())
    assert immutableset({1, 2, 3}).isdisjoint({4}) and not immutableset({1, 2, 3}).isdisjoint({3, 9})
    assert not immutableset({1}).isdisjoint(frozenset({1, 5, 6}))
    assert not immutableset({1}).isdisjoint(immutableset({0, 1, 5, 6}))

    class OtherItems(set):  # a subclass is iterated, as any iterable
        def __iter__(self):
            return iter([99])

    assert immutableset({1}).isdisjoint(OtherItems({1}))


def test_immutableset_issubset_issuperset_of_iterables_like_frozenset():
    one = immutableset({1})
    assert one.issubset([1, [2]])  # frozenset stops once it saw every item of the set...
    items = iter([1, 5, 6])
    assert one.issubset(items) and list(items) == [5, 6]
    for other in ([[2], 1], [2, [2]]):
        with pytest.raises(TypeError):  # ...and hashes every item before that
            one.issubset(other)
    with pytest.raises(TypeError):
        immutableset().issubset([[2]])
    assert immutableset().issubset([]) and immutableset().issubset(iter([3]))
    assert immutableset({1, 2}).issubset([2, 2, 1]) and not immutableset({1, 2}).issubset([1, 1, 3])
    assert not one.issuperset([2, [2]])  # stops at the first item missing
    with pytest.raises(TypeError):
        one.issuperset([1, [2]])
    s = immutableset([frozenset({1})])
    for method in (s.issubset, s.issuperset):
        with pytest.raises(TypeError):  # a set item is not retried as a frozenset
            method([{1}])
        assert method([frozenset({1})])
    assert one.issubset({1: 0}) and one.issuperset({1: 0}) and not one.issuperset({2: 0})


sets = st.frozensets(st.integers(-20, 20), max_size=12)


@settings(max_examples=300, deadline=None)
@given(sets, sets)
def test_immutableset_like_frozenset(a, b):
    ia, ib = immutableset(a), immutableset(b)
    assert ia == a and hash(ia) == hash(a)
    for x, y in ((ia, ib), (ia, b), (a, ib), (ia, set(b)), (set(a), ib)):
        assert (x == y) == (a == b) and (x != y) == (a != b)
        assert (x <= y) == (a <= b) and (x < y) == (a < b)
        assert (x >= y) == (a >= b) and (x > y) == (a > b)
        assert (x | y) == (a | b) and (x & y) == (a & b)
        assert (x - y) == (a - b) and (x ^ y) == (a ^ b)
    assert ia.issubset(b) == a.issubset(b) and ia.isdisjoint(b) == a.isdisjoint(b)
    assert hash(ia | ib) == hash(a | b)


# ---- the shared build path (share() of a dict / set) ---------------------------------------

def test_shared_frozendict_build():
    src = {"a": 1, "b": None, "c": "x", 7: True, "": -5}
    sd = core.share(src)
    assert core.is_shared(sd) and not core.is_shared(frozendict(src))
    assert type(sd) is frozendict and sd == src and list(sd) == list(src)
    assert hash(sd) == hash(frozendict(src)) == hash(frozenset(src.items()))
    assert not gc.is_tracked(sd)
    assert sys.getrefcount(sd) > 2 ** 30  # immortal
    assert all(sd[k] == v for k, v in src.items()) and "zz" not in sd
    assert list(sd.keys()) == list(src) and pickle.loads(pickle.dumps(sd)) == src
    assert sd | {"n": 1} == {**src, "n": 1}
    with pytest.raises(TypeError):
        sd["a"] = 2
    with pytest.raises(TypeError):
        weakref.ref(sd)
    empty = core.share({})
    assert empty == {} and hash(empty) == hash(frozenset())
    with pytest.raises(TypeError, match=r"value\['a'\] is a list"):
        core.share({"a": [1]})  # mutable: refused, with its path


def test_shared_immutableset_build():
    src = {1, 2, "x", None, True and 5}
    ss = core.share(src)
    assert type(ss) is immutableset and core.is_shared(ss)
    assert ss == src and hash(ss) == hash(frozenset(src)) and not gc.is_tracked(ss)
    assert ss | {7} == src | {7} and ss & {1} == {1}
    nested = core.share({"s": ss, "t": core.share({"u": 1})})
    assert nested["s"] == src and hash(nested) == hash(frozenset({("s", ss), ("t", frozendict(u=1))}))
