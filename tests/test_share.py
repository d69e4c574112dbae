"""share(), Arena and is_shared(): the shared-object core (_ext/arena.c, _ext/share.c).

Each test names the invariant it guards; see docs/shared-memory.md for the rules.
"""

import gc
import os
import sys
import tempfile
import weakref

import pytest

from subsandbox import _core  # noqa: E402
from subsandbox._core import Arena, NotShareableError, is_shared, share  # noqa: E402

import _subinterp  # noqa: E402


def _frozen_available():
    try:
        share({})
        return True
    except NotImplementedError:
        return False


FROZEN = _frozen_available()
needs_frozen = pytest.mark.skipif(not FROZEN, reason="frozendict/immutableset not merged")


def fresh(s):
    """An equal str that is a new object (not interned, not static)."""
    return "".join(list(s)) if len(s) > 1 else s


# ---- round trips ----------------------------------------------------------------------

SCALARS = [
    None, True, False, 0, 1, -5, 256, 257, -6, 2**62, -2**63, 2**64, 10**100, -(10**300),
    0.0, -0.0, 1.5, float("inf"), -1e300, 1j, 1.5 - 2j, complex(0, -0.0),
    "", "a", "é", "\xff", "ascii text", "latin-1 \xe9\xe8", "UCS2 \u20ac\u4e2d",
    "UCS4 \U0001f600\U00010348", "lone \udc80 surrogate", "x" * 10_000,
    b"", b"\x00", b"\xff", b"bytes payload", bytes(range(256)) * 100,
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalar_round_trip(value):
    s = share(value)
    assert type(s) is type(value)
    assert s == value
    assert hash(s) == hash(value)
    assert is_shared(s)
    assert repr(s) == repr(value)


def test_nan_round_trip():
    s = share(float("nan"))
    assert s != s and repr(s) == "nan" and is_shared(s)


def test_nested_tuples_and_identity_of_repeats():
    leaf = ("shared leaf", 10**20)
    value = (leaf, leaf, (leaf, (leaf,)), ())
    s = share(value)
    assert s == value
    assert s[0] is s[1] is s[2][0] is s[2][1][0]  # copied once (identity memo)
    assert s[3] is tuple()                           # the runtime's empty tuple


def test_identity_memo_when_its_first_entry_is_not_the_root():
    # The walk keeps its first memo entry apart from its table (share.c): check identity
    # and cycles whatever that first entry is. Here the root is referenced only by the
    # call (no name holds it), so the first entry is a repeated child, then many more.
    def make():
        leaf = ("first repeated", 10**21)
        others = [(f"repeat {i}", float(i)) for i in range(40)]
        same = tuple(others)
        return (leaf, leaf, tuple(others), tuple(others), (leaf,), same, same)
    s = share(make())
    assert s == make()
    assert s[0] is s[1] is s[4][0]
    # Two equal tuples stay two, but the 40 rows they share are copied once each.
    assert s[2] is not s[3] and all(a is b for a, b in zip(s[2], s[3]))
    assert s[5] is s[6] and s[5][0] is s[2][0]

    def cyclic():
        inner = {"x": None}
        inner["x"] = (1, inner)         # a cycle that does not go through the root
        return ({"inner": inner},)
    with pytest.raises(NotShareableError, match=r"refers back to value\[0\]\['inner'\]"):
        share(cyclic())


def test_repeats_inside_maps_and_sets_are_copied_once():
    # Only the containers refer to these objects (no name holds them): the walk must still
    # see that each is met twice, through the entries of a dict and of a set.
    d = {"a": (1.5, 10**20), "b": None, "c": frozenset({(2.5,)})}
    d["b"] = d["a"]
    inner = next(iter(d["c"]))
    d["d"] = {"x": inner, "y": (inner,)}
    del inner
    s = share(d)
    assert s == d
    assert s["a"] is s["b"]
    assert s["d"]["x"] is s["d"]["y"][0] is next(iter(s["c"]))


def test_deep_nesting_does_not_use_the_c_stack():
    value = ()
    for i in range(200_000):
        value = (i, value)
    s = share(value)
    for i in reversed(range(200_000)):
        assert s[0] == i
        s = s[1]
    assert s == ()


def _tuple_hash(t, memo):
    """CPython's tuplehash() (Objects/tupleobject.c, 3.8+), iterative, with a memo: the
    reference for values too deep or too repetitive for hash() itself."""
    mask = (1 << 64) - 1
    p1, p2, p5 = 11400714785074694791, 14029467366897019727, 2870177450012600261
    stack = [(t, 0, p5)]
    while True:
        node, i, acc = stack.pop()
        if i == len(node):
            acc = (acc + (len(node) ^ (p5 ^ 3527539))) & mask
            h = 1546275796 if acc == mask else acc - (1 << 64) if acc >= 1 << 63 else acc
            memo[id(node)] = h
            if not stack:
                return h
            parent, j, pacc = stack.pop()
            stack.append((parent, j, pacc))
            continue
        item = node[i]
        if type(item) is tuple and id(item) not in memo:
            stack.append((node, i, acc))
            stack.append((item, 0, p5))
            continue
        lane = (memo[id(item)] if type(item) is tuple else hash(item)) & mask
        acc = (acc + lane * p2) & mask
        acc = ((acc << 31) | (acc >> 33)) & mask
        acc = (acc * p1) & mask
        stack.append((node, i + 1, acc))


class _Unhashed:
    """Stands in for a value whose hash is known: hash() returns it."""
    def __init__(self, h):
        self.h = h

    def __hash__(self):
        return self.h


@pytest.mark.skipif(sys.maxsize < 2**62, reason="the reference tuplehash is the 64-bit one")
def test_a_frozendict_of_deep_tuples_is_hashed_without_the_c_stack():
    # 3.12/3.13 tuples cache no hash: hashing a frozendict's values recursed through
    # CPython's tuplehash() once per level, and share() crashed on a value this deep.
    deep = ()
    for i in range(150_000):
        deep = (i, deep)
    s = share({"k": deep, "n": 1})
    h = _tuple_hash(deep, {})
    assert _tuple_hash(s["k"], {}) == h
    assert hash(s) == hash(frozenset({("k", _Unhashed(h)), ("n", 1)}))


def test_a_frozendict_of_a_tuple_reused_at_every_level_hashes_once_per_tuple():
    # 2**60 paths through 61 tuples: tuplehash() would never finish; each tuple is hashed
    # once per share() instead.
    t = ("leaf",)
    for _ in range(60):
        t = (t, t)
    s = share({"k": t})
    assert hash(s) == hash(frozenset({("k", _Unhashed(_tuple_hash(t, {})))}))
    shallow = share({"k": (1, (2, (3, "x")))})
    assert hash(shallow) == hash(frozenset({("k", (1, (2, (3, "x"))))}))


def test_equal_strings_stored_once_per_arena():
    with Arena() as a:
        one = a.share(fresh("a string that is not static"))
        two = a.share((fresh("a string that is not static"), fresh("another one")))
        assert two[0] is one
        before = a.nbytes
        a.share(fresh("a string that is not static"))
        assert a.nbytes == before


def test_runtime_singletons_are_returned():
    assert share(None) is None and share(True) is True and share(False) is False
    assert share(int("-5")) is int("-5") and share(int("256")) is int("256")
    assert share(int("7")) is int("7")
    assert share(fresh("")) is str()
    if sys.version_info >= (3, 13):
        assert share(chr(200)) is chr(200) and share(chr(97)) is chr(97)
    else:
        # 3.12 does not intern its 1-character strings (docs/shared-memory.md): the static
        # identifier where there is one, else an interned copy of ours.
        assert share(chr(97)) is sys.intern("a") and share(chr(200)) is not chr(200)
        assert share(chr(200)) == chr(200) and sys.intern(share(chr(200))) is share(chr(200))
    assert share(bytes([7])) is bytes([7])
    assert share(bytes()) is bytes()
    assert share(tuple([])) is tuple()


def test_sharing_a_shared_object_is_free():
    s = share((1, "two", 3.0))
    assert share(s) is s
    with Arena() as a:
        before = a.nbytes
        assert a.share(s) is s
        assert a.nbytes == before


def test_is_shared_is_exact():
    s = share((b"payload" * 100, "text", 12345678901234567890))
    assert is_shared(s) and all(is_shared(x) for x in s)
    assert not is_shared([1]) and not is_shared(object()) and not is_shared("local" * 3)
    assert not is_shared(10**30)
    # Addresses inside a shared object are not objects (checked without touching them).
    b = s[0]
    assert _core._testing_is_shared_address(id(b))
    for off in (16, 32, 48, 64, 4096):
        assert not _core._testing_is_shared_address(id(b) + off)
    assert not _core._testing_is_shared_address(id(b) - 16)   # its header, not an object
    assert not _core._testing_is_shared_address(id(s) - 16)   # the GC header of a tuple
    assert is_shared(None) and is_shared(1) and is_shared("") and is_shared(())


# ---- what must hold inside ------------------------------------------------------------

def test_containers_are_untracked_and_gc_safe():
    s = share(((1, 2), ("a", ("b",)), 3))
    assert not gc.is_tracked(s) and not gc.is_tracked(s[0]) and not gc.is_tracked(s[1][1])
    holder = [s, s[1], {"k": s}]
    gc.collect()
    assert sorted(map(id, gc.get_referents(s))) == sorted(map(id, s))
    del holder
    gc.collect()
    assert s == ((1, 2), ("a", ("b",)), 3)


@pytest.mark.parametrize("value", [
    10**40, 2.5, 3j, "weak", "wéak", b"weak bytes", ("a", "tuple"),
] + ([{"a": 1}, {1, 2}] if FROZEN else []), ids=repr)
def test_no_weak_references(value):
    s = share(value)
    with pytest.raises(TypeError):
        weakref.ref(s)


def test_shared_str_encodes_hashes_and_formats_as_the_source():
    # Our own encoder must agree with CPython's for every kind. (That the hash and the
    # UTF-8 form are already in the object when share() returns is read from the raw
    # fields in test_share_invariants.py.)
    for text in ["é", "\xe9t\xe9", "\u20ac uro", "\u4e2d\u6587", "\U0001f600 emoji", "mixed é\u20ac\U0001f600"]:
        s = share(fresh(text) + "!")
        assert s.encode() == (text + "!").encode("utf-8")
        assert s.encode("utf-8") == (text + "!").encode("utf-8")
        assert hash(s) == hash(text + "!")
        assert f"{s}" == text + "!" and f"<{s}>" == f"<{text}!>"
        assert eval(repr(s)) == s
    sur = share(fresh("a\udc80b"))
    with pytest.raises(UnicodeEncodeError):
        sur.encode()
    assert sur.encode("utf-8", "surrogateescape") == b"a\x80b"
    with pytest.raises(UnicodeEncodeError):
        sur.encode()  # still fails: nothing was cached by the failed attempt


def test_utf8_form_takes_exactly_its_size_in_the_arena():
    """A short non-ASCII string is encoded in one pass into room for its worst case (up to
    4 bytes per code point), and the room it did not use is given back: the arena holds
    exactly what it holds when the UTF-8 form is copied from the source's cache (sized
    exactly), for every kind, with a lone surrogate (no UTF-8 form), and past the length
    where the form is measured first instead."""
    import ctypes

    texts = ["naïve café " * 3, "数据 and αβγ " * 4, "emoji \U0001f600 " * 5,
             "lone \udc80 surrogate", "é" * 5000, "Straße " * 700]
    # Strings new to both arenas (their memos), and never encoded: no UTF-8 cache.
    plain = tuple(fresh(t) for t in texts)
    first = Arena()
    a = first.share(plain)
    # Now the same strings with CPython's UTF-8 cache filled: share() copies it, exactly
    # sized.
    as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8
    as_utf8.restype = ctypes.c_void_p
    as_utf8.argtypes = [ctypes.py_object]
    for t in plain:
        if "\udc80" not in t:
            assert as_utf8(t)
    second = Arena()
    b = second.share(plain)
    assert a == b == tuple(texts)
    assert first.nbytes == second.nbytes
    for s, t in zip(a, texts):
        if "\udc80" in t:
            with pytest.raises(UnicodeEncodeError):
                s.encode()
        else:
            assert s.encode() == t.encode()
    first.close()
    second.close()


def test_a_string_without_utf8_form_leaves_no_bytes_behind():
    """A lone surrogate is found only while encoding into the room for the worst case:
    what was written there must be zeroed again before the room is given back, since the
    arena lays its next objects on memory it takes to be zero (a tuple's GC header: a
    non-zero one reads as tracked by the GC)."""
    import ctypes

    arena = Arena()
    arena.share(fresh("the memo's first table is made now"))
    s = arena.share(fresh("\u4e2d" * 40 + "\udc80"))   # UTF-8 would be ~3x its length
    with pytest.raises(UnicodeEncodeError):
        s.encode()
    t = arena.share((1.5, 2.5))     # no string: laid right after s, where it encoded
    assert t == (1.5, 2.5)
    assert not gc.is_tracked(t)
    gc_header = 2 * ctypes.sizeof(ctypes.c_void_p)
    assert ctypes.string_at(id(t) - gc_header, gc_header) == bytes(gc_header)
    arena.close()


def test_eval_and_compile_of_shared_source():
    assert eval(share(fresh("1+1"))) == 2
    assert eval(share("'é' + 'x'")) == "éx"
    ns = {}
    exec(share(fresh("def f(a, *, key): return a + key\n")), ns)
    assert ns["f"](1, key=2) == 3


def test_identifiers_are_the_runtimes_static_strings():
    for name in ["__add__", "__len__", "__init__", "__dict__", "real", "__name__"]:
        s = share(fresh(name))
        assert s is sys.intern(fresh(name))
    statics = _core._static_strings()
    assert len(statics) > 300
    for st in statics[:200]:
        assert share(fresh(st)) is st


def test_setattr_with_shared_dunder_names_updates_slots():
    C = type("C", (), {})
    setattr(C, share(fresh("__add__")), lambda self, other: ("added", other))
    setattr(C, share(fresh("__len__")), lambda self: 7)
    assert C() + 1 == ("added", 1)
    assert len(C()) == 7


def test_intern_never_writes_into_a_shared_string():
    s = share(fresh("zz_not_a_static_identifier_qq"))
    assert sys.intern(s) is s
    # Not inserted into this interpreter's interned dict (3.12 would have).
    local = sys.intern(fresh("zz_not_a_static_identifier_qq"))
    assert local == s and local is not s
    C = type("C", (), {})
    setattr(C, s, 5)
    assert getattr(C, fresh("zz_not_a_static_identifier_qq")) == 5
    assert getattr(C(), s) == 5
    kw = {share(fresh("key_name_q")): 1}
    assert (lambda **k: k)(**kw) == {"key_name_q": 1}
    assert (lambda key_name_q: key_name_q)(**kw) == 1


def test_string_operations_on_shared_strings():
    s = share(fresh("Hello, wörld"))
    assert s.upper() == "HELLO, WÖRLD" and s.split(", ") == ["Hello", "wörld"]
    t = s
    t += "!"
    assert t == "Hello, wörld!" and s == "Hello, wörld"
    d = {fresh("Hello, wörld"): 1}
    assert d[s] == 1
    assert {s: 2}[fresh("Hello, wörld")] == 2
    assert s in {fresh("Hello, wörld")}
    b = share(b"bytes object")
    bb = b
    bb += b"!"
    assert b == b"bytes object"


# ---- errors -----------------------------------------------------------------------------

class MyClass:
    pass


class S(str):
    pass


class I(int):  # noqa: E742
    pass


@pytest.mark.parametrize("value, message", [
    ([1], "share(): value is a list, which is mutable; use a tuple"),
    ((1, (2, [3])), "share(): value[1][1] is a list, which is mutable; use a tuple"),
    ((bytearray(b"x"),), "share(): value[0] is a bytearray, which is mutable; use bytes"),
    ((memoryview(b"x"),), "share(): value[0] is a memoryview, which may be mutable; use bytes"),
    (MyClass(), "share(): value is a MyClass instance, which cannot be shared; shareable are "
                "None, bool, int, float, complex, str, bytes, tuple, dict, set, frozenset, "
                "frozendict and immutableset"),
    ((S("x"),), "share(): value[0] is a S instance, a subclass of str: its class belongs to "
                "one interpreter; convert it with str(...)"),
    ((1, I(2)), "share(): value[1] is an I instance, a subclass of int: its class belongs to "
                "one interpreter; convert it with int(...)"),
    ((print,), "share(): value[0] is a builtin_function_or_method, which cannot be shared; "
               "shareable are None, bool, int, float, complex, str, bytes, tuple, dict, set, "
               "frozenset, frozendict and immutableset"),
    ({"users": ([1], 2)}, "share(): value['users'][0] is a list, which is mutable; use a "
                          "tuple"),
    ({"users": ({"name": "x"}, [1])}, "share(): value['users'][1] is a list, which is "
                                      "mutable; use a tuple"),
    ({"s": {MyClass()}}, None),
])
def test_not_shareable_messages(value, message):
    if not FROZEN and ("'name'" in repr(value) or "'s'" in repr(value)):
        pytest.skip("a frozendict/immutableset is built before the error is met")
    with pytest.raises(NotShareableError) as info:
        share(value)
    assert issubclass(NotShareableError, TypeError)
    if message is not None:
        assert str(info.value) == message
    else:
        assert str(info.value).startswith("share(): in an item of value['s']: item is a MyClass")


def test_arena_share_message_and_cycle():
    with Arena() as a:
        with pytest.raises(NotShareableError, match=r"^Arena\.share\(\): value\[0\] is a list"):
            a.share(([],))
    d = {}
    d["x"] = (1, d)
    with pytest.raises(NotShareableError,
                       match=r"value\['x'\]\[1\] refers back to value \(a cycle\)"):
        share(d)


@pytest.mark.parametrize("count", [5000, 60_000])   # within the first block; over new ones
def test_failed_share_gives_its_memory_back(count):
    with Arena() as a:
        a.share(fresh("keep me"))
        before = a.nbytes
        big = tuple(fresh(f"string {i}") for i in range(count)) + ([],)
        with pytest.raises(NotShareableError):
            a.share(big)
        assert a.nbytes == before
        assert a.share(fresh("keep me")) is a.share(fresh("keep me"))
        # Strings of the failed call were taken out of the memo too.
        s = a.share(fresh("string 7"))
        assert s == "string 7" and a.nbytes > before
        # The memo grows past the failed call's leftovers and still finds what it holds.
        again = a.share(tuple(fresh(f"again {i}") for i in range(2 * count)))
        assert again[count] is a.share(fresh(f"again {count}"))
        assert again[-1] == f"again {2 * count - 1}"


def test_closed_arena_refuses_share():
    a = Arena()
    a.close()
    assert a.closed
    for share_into in (a.share, a.share_detached):
        with pytest.raises(ValueError, match=r"^this Arena is closed: .* share into a new "
                                             r"Arena\(\)$"):
            share_into(fresh("not shared yet"))
    assert a.share(share(fresh("already shared"))) == "already shared"  # free, no new object
    with Arena() as b:
        assert not b.closed
    assert b.closed
    with pytest.raises(ValueError, match=r"^this Arena is closed"):
        with b:     # refused at once, as a closed file's with block is
            raise AssertionError("the block ran")


def test_arena_repr_is_dotted_as_the_other_classes():
    a = Arena()
    assert repr(a) == f"<subsandbox.Arena id={a.id} nbytes={a.nbytes}>"
    a.close()
    assert repr(a) == f"<subsandbox.Arena id={a.id} nbytes={a.nbytes} closed>"


def test_big_objects_get_their_own_blocks():
    with Arena() as a:
        big = bytes(5 * 2**20)
        s = a.share((big, "small", big + b"x"))
        assert s[0] == big and s[2] == big + b"x" and is_shared(s[0])
        assert a.nbytes > 10 * 2**20


# ---- memory given back ------------------------------------------------------------------

def _stats():
    return _core._arena_stats()


def test_arena_without_holders_is_freed_when_its_handle_goes():
    a = Arena()
    aid = a.id
    assert aid in _stats()["arenas"]
    del a
    assert aid not in _stats()["arenas"]


def test_main_interpreter_stays_a_holder():
    a = Arena()
    aid = a.id
    s = a.share((fresh("held by main"), 10**50))
    a.close()
    del a
    info = _stats()["arenas"][aid]
    assert info["refs"] == 0 and info["closed"] and info["holders"] == (0,)
    gc.collect()
    assert s == ("held by main", 10**50)


def _write_result_script(path, body):
    return body + f"\nwith open({path!r}, 'w') as _f:\n    _f.write(repr(RESULT))\n"


def _read(path):
    with open(path) as f:
        return eval(f.read())


def test_arena_freed_exactly_when_the_rule_says():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        x = _subinterp.create()
        y = _subinterp.create()
        try:
            _subinterp.run(x, _write_result_script(out, (
                "a = _core.Arena()\n"
                "obj = a.share(('payload', 10**40, 'é' * 1000, b'b' * 300000))\n"
                "tok = _core._testing_export(obj)\n"
                "RESULT = (a.id, tok)\n"
                "a.close(); del a\n")))
            aid, tok = _read(out)
            info = _stats()["arenas"][aid]
            assert info["holders"] == (int(x),) and info["refs"] == 1  # the token is in flight
            reserved = _stats()["bytes_reserved"]

            _subinterp.run(y, (f"obj = _core._testing_import({tok})\n"
                               "assert obj == ('payload', 10**40, 'é' * 1000, b'b' * 300000)\n"))
            info = _stats()["arenas"][aid]
            assert sorted(info["holders"]) == sorted((int(x), int(y))) and info["refs"] == 0
            assert info["closed"]

            _subinterp.destroy(x, report=False)
            assert aid in _stats()["arenas"]           # destroyed but not reported yet
            _core._interpreter_destroyed(int(x))
            x = None
            assert _stats()["arenas"][aid]["holders"] == (int(y),)

            _subinterp.run(y, "assert obj[2].encode() == 'é'.encode() * 1000\n")
            _subinterp.destroy(y, report=False)
            assert aid in _stats()["arenas"]
            _core._interpreter_destroyed(int(y))
            y = None
            assert aid not in _stats()["arenas"]
            assert _stats()["bytes_reserved"] < reserved
        finally:
            for i in (x, y):
                if i is not None:
                    _subinterp.destroy(i)


def test_in_flight_item_keeps_arena_alive():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        x = _subinterp.create()
        _subinterp.run(x, _write_result_script(out, (
            "with _core.Arena() as a:\n"
            "    tok = _core._testing_export(a.share(('in flight', 2**70)))\n"
            "    RESULT = (a.id, tok)\n")))
        aid, tok = _read(out)
        _subinterp.destroy(x)
        info = _stats()["arenas"][aid]
        assert info["holders"] == () and info["refs"] == 1   # only the token
        z = _subinterp.create()
        _subinterp.run(z, f"assert _core._testing_import({tok}) == ('in flight', 2**70)\n")
        assert _stats()["arenas"][aid]["holders"] == (int(z),)
        _subinterp.destroy(z)
        assert aid not in _stats()["arenas"]


def test_dependency_between_arenas():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        x = _subinterp.create()
        _subinterp.run(x, _write_result_script(out, (
            "a = _core.Arena(); b = _core.Arena()\n"
            "inner = a.share(('inner string', 10**30))\n"
            "outer = b.share((inner, 'outer'))\n"
            "assert outer[0] is inner\n"
            "tok = _core._testing_export(outer)\n"
            "RESULT = (a.id, b.id, tok)\n"
            "a.close(); b.close(); del a, b\n")))
        aid, bid, tok = _read(out)
        y = _subinterp.create()
        _subinterp.run(y, f"outer = _core._testing_import({tok})\n")
        _subinterp.destroy(x)
        stats = _stats()["arenas"]
        assert stats[aid]["holders"] == () and stats[aid]["refs"] == 1  # held by b only
        assert stats[bid]["holders"] == (int(y),)
        _subinterp.run(y, "assert outer == (('inner string', 10**30), 'outer')\n")
        _subinterp.destroy(y)
        stats = _stats()["arenas"]
        assert aid not in stats and bid not in stats


def test_row_of_leaves_reuses_shared_items_and_depends_on_their_arena():
    # A small tuple of leaves is copied without a frame of the walk (share.c, copy_row):
    # its shared items must still be used as they are, and make a dependency.
    a, b = Arena(), Arena()
    s = a.share(fresh("a string of arena a"))
    big = a.share(10**30)
    mine = fresh("a string of this row")
    row = b.share((s, big, 1.5, None, True, mine, mine))
    assert row == (s, 10**30, 1.5, None, True, mine, mine)
    assert row[0] is s and row[1] is big
    assert row[5] is row[6] and row[5] is not mine
    aid = a.id
    a.close()
    del a
    assert _stats()["arenas"][aid]["refs"] == 1      # the reference of b
    b.close()


def test_default_arena_is_never_freed():
    s = share((fresh("default arena string"),))
    st = _stats()
    assert st["default_nbytes"] > 0 and st["default_bytes_reserved"] >= 2**20
    assert is_shared(s)


# ---- several interpreters at once -------------------------------------------------------

def _make_graph():
    rows = []
    for i in range(3000):
        rows.append((i, f"name{i}", f"é{i}", i * 0.5, bytes([i % 256]) * 5, 10**20 + i,
                     ("__add__", "__len__", "attr_q", "café")[i % 4], (i, (f"n{i}",))))
    return (tuple(rows), "identifier_shared_q", "\u4e2d\u6587", complex(1, i))


EXERCISE = r"""
import sys
def exercise(G, expected, rounds):
    for r in range(rounds):
        assert G == expected
        assert hash(G) == hash(expected)
        rows = G[0]
        d = {}
        for row in rows:
            d[row[1]] = row
        for row in expected[0]:
            assert d[row[1]] == row          # equal non-shared keys find shared ones
        total = 0
        for row in rows:
            total += row[0] + row[5]
            assert row[2].encode() == ('é' + str(row[0])).encode()
            assert sys.intern(row[1]) is row[1]
            assert f"{row[1]}-{row[2]}" == f"name{row[0]}-é{row[0]}"
            assert row[7][1][0] == "n" + str(row[0])
        assert total == sum(i + 10**20 + i for i in range(3000))
        C = type("C", (), {})
        setattr(C, rows[0][6], lambda self, other: other + 1)   # '__add__'
        setattr(C, rows[1][6], lambda self: 3)                  # '__len__'
        setattr(C, G[1], 9)
        assert C() + 1 == 2 and len(C()) == 3 and C.identifier_shared_q == 9
        assert eval(G[1] + " + 1", {G[1]: 41}) == 42
        assert G[2].encode() == "\u4e2d\u6587".encode()
        assert sorted(G[0], key=lambda row: row[1])[0][1] == "name0"
"""


def test_many_interpreters_read_one_graph_concurrently():
    G = share(_make_graph())
    expected = _make_graph()
    interps = [_subinterp.create() for _ in range(3)]
    try:
        tokens = [_core._testing_export(G) for _ in interps]
        ns = {}
        exec(EXERCISE, ns)
        script = (
            "import sys\n"
            + "_src = " + repr(EXERCISE) + "\n"
            + "exec(_src)\n"
            + "def _make_graph():\n"
            + "".join("    " + line + "\n" for line in _make_graph_src().splitlines())
            + "G = _core._testing_import(TOKEN)\n"
            + "assert _core.is_shared(G) and _core.is_shared(G[0][5])\n"
            + "exercise(G, _make_graph(), 3)\n"
            + "local = _core.share(('made here', G[1], G[0][0]))\n"
            + "assert local[1] is G[1] and local[2] is G[0][0]\n"
        )
        jobs = [
            (lambda iid=iid, tok=tok: _subinterp.run(iid, script.replace("TOKEN", str(tok))))
            for iid, tok in zip(interps, tokens)
        ]
        jobs.append(lambda: ns["exercise"](G, expected, 3))
        _subinterp.run_concurrently(jobs)
    finally:
        for iid in interps:
            _subinterp.destroy(iid)
    gc.collect()
    assert G == expected and hash(G) == hash(expected)
    # No interpreter's interning or teardown wrote to the shared string: still marked
    # interned (sys.intern returns it as is) and never put into main's interned dict.
    assert sys.intern(G[1]) is G[1]
    assert sys.intern(fresh("identifier_shared_q")) is not G[1]
    C = type("C", (), {})
    setattr(C, G[0][0][6], lambda self, other: "main")
    assert C() + 0 == "main"


def _make_graph_src():
    return (
        "rows = []\n"
        "for i in range(3000):\n"
        "    rows.append((i, f'name{i}', f'é{i}', i * 0.5, bytes([i % 256]) * 5, 10**20 + i,\n"
        "                 ('__add__', '__len__', 'attr_q', 'café')[i % 4], (i, (f'n{i}',))))\n"
        "return (tuple(rows), 'identifier_shared_q', '\\u4e2d\\u6587', complex(1, i))\n"
    )


def test_concurrent_share_into_the_default_arena():
    script = (
        "for k in range(30):\n"
        "    t = tuple((i, f'str{i}-{k % 3}', 'é' * (i % 5), i * 1.25) for i in range(500))\n"
        "    s = _core.share(t)\n"
        "    assert s == t and _core.is_shared(s) and _core.is_shared(s[3][1])\n"
        "    assert s[1][1] is _core.share(''.join(['str1-', str(k % 3)]))\n"
    )
    interps = [_subinterp.create() for _ in range(2)]
    try:
        jobs = [(lambda iid=iid: _subinterp.run(iid, script)) for iid in interps]
        main_ns = {"_core": _core}
        jobs.append(lambda: exec(script, main_ns))
        _subinterp.run_concurrently(jobs)
    finally:
        for iid in interps:
            _subinterp.destroy(iid)


def test_concurrent_share_into_one_arena_from_threads():
    import threading
    a = Arena()
    errors = []

    def work(k):
        try:
            for j in range(50):
                t = tuple((i, f"s{i}-{k}-{j % 2}") for i in range(300))
                assert a.share(t) == t
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    a.close()


@pytest.mark.skipif(sys.version_info < (3, 14), reason="3.12/3.13 tuples have no hash cache")
def test_tuple_hash_cache_is_filled_before_publication():
    # 3.14 caches a tuple's hash in PyTupleObject.ob_hash (after ob_size), filled lazily by
    # the first hash(): a shared tuple must have it filled already, or any interpreter's
    # first hash() would write into it. Both ways a tuple is copied: a row of leaves
    # (copy_row) and a tuple with a frame of its own (finish).
    import ctypes

    def cached_hash(t: tuple) -> int:
        return ctypes.c_ssize_t.from_address(id(t) + 3 * ctypes.sizeof(ctypes.c_void_p)).value

    s = share(tuple((f"name-{i}", i * 1000, i * 0.5) for i in range(20)) + ((("x",),),))
    for t in (s, s[0], s[19], s[20], s[20][0]):
        assert cached_hash(t) != -1, t
        assert cached_hash(t) == hash(t)
