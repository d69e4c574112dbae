"""The invariants inside shared objects (docs/shared-memory.md, "What share() makes").

Shared objects are read by pointer from every interpreter with no lock, so nothing may
ever write into them after share() returns. These tests read the objects' raw memory
right after share(), before any hash()/encode() could fill a cache lazily, and then make
a shared graph's pages read-only while several own-GIL interpreters and the main one
work on it (tests/_shared_ops.py): any write, even of the value already there, kills
the process.

Layouts read here (CPython 3.12-3.14, 64-bit, GIL build; checked against
Include/cpython/unicodeobject.h, bytesobject.h, tupleobject.h, Include/object.h):
    every object  ob_refcnt at 0 (3.14: 32-bit count, ob_overflow, ob_flags), ob_type at 8
    str           length 16, hash 24, state 32 (interned: bits 0-1, kind: 2-4,
                  compact: 5, ascii: 6, statically_allocated: 7); non-ASCII compact:
                  utf8_length 40, utf8 48, characters from 56
    bytes         ob_size 16, ob_shash 24, ob_sval 32
    tuple         ob_size 16, 3.14: ob_hash 24, items after it
    GC objects    a two-word PyGC_Head in front of the object
    frozendict/immutableset (_ext/frozen.c ss_table): used 16, hash 24, indices 40,
                  entries 48
"""

import ast
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

import subsandbox
from subsandbox import _core
from subsandbox._core import Arena, is_shared, share

import _shared_ops
import _subinterp

WORD = ctypes.sizeof(ctypes.c_void_p)
SSTATE_INTERNED_IMMORTAL_STATIC = 3
STATE_STATICALLY_ALLOCATED = 1 << 7


def fresh(s):
    """An equal str that is a new object (not interned, not static), its caches empty."""
    return "".join(list(s)) if len(s) > 1 else s


def word(addr):
    return ctypes.c_ssize_t.from_address(addr).value


def uword(addr):
    return ctypes.c_size_t.from_address(addr).value


def str_state(s):
    return ctypes.c_uint32.from_address(id(s) + 4 * WORD).value


def _tuple_bytes(t):
    """A tuple's whole memory, GC header included: the items are pointers in it."""
    return ctypes.string_at(id(t) - 2 * WORD, 2 * WORD + type(t).__sizeof__(t))


def in_arena(x):
    return bool(_core._testing_is_shared_address(id(x)))


# Strings of every kind, the UTF-8 form made in one pass (short) and measured first
# (longer than 4096 code points), and copied from the source's own UTF-8 cache.
NON_ASCII = ["caf\xe9 na\xefve", "\u4e2d\u6587 \u20ac", "emoji \U0001f600 \U00010348",
             "\xe9" * 5000, "\u4e2d" * 5000, "\U0001f600" * 5000]


def test_str_hash_utf8_and_interned_state_are_in_the_object_when_shared():
    as_utf8 = ctypes.pythonapi.PyUnicode_AsUTF8
    as_utf8.restype = ctypes.c_void_p
    as_utf8.argtypes = [ctypes.py_object]
    cached = fresh("latin-1 w\xeeth \xe0 cache")
    assert as_utf8(cached)
    # A fresh arena: its memo cannot hand back a string that an earlier test shared and
    # then hashed or encoded.
    arena = Arena()
    for text in ["ascii text zz_q", cached] + [fresh(t) for t in NON_ASCII]:
        expected_hash = hash(fresh(text))
        s = arena.share(text)
        assert in_arena(s)
        # Read before anything could have asked for them.
        assert word(id(s) + 3 * WORD) == expected_hash, text[:20]
        state = str_state(s)
        assert state & 3 == SSTATE_INTERNED_IMMORTAL_STATIC
        assert state & STATE_STATICALLY_ALLOCATED
        if text.isascii():
            # The runtime's own static strings have exactly this state word.
            assert state == str_state(sys.intern(fresh("__add__")))
            continue
        kind = {1: 1, 2: 2, 4: 4}[(state >> 2) & 7]
        utf8_length = word(id(s) + 5 * WORD)
        utf8 = uword(id(s) + 6 * WORD)
        chars_end = id(s) + 7 * WORD + (len(s) + 1) * kind
        # The UTF-8 form lies in the object's own arena allocation, right after its
        # characters: no interpreter's allocator made it, none will free it.
        assert chars_end <= utf8 < chars_end + 8, text[:20]
        assert utf8_length == len(text.encode())
        assert ctypes.string_at(utf8, utf8_length + 1) == text.encode() + b"\0"
        assert as_utf8(s) == utf8
    # A lone surrogate has no UTF-8 form; failing to make one writes nothing.
    sur = arena.share(fresh("lone \udc80 surrogate"))
    assert (word(id(sur) + 5 * WORD), uword(id(sur) + 6 * WORD)) == (0, 0)
    with pytest.raises(UnicodeEncodeError):
        sur.encode()
    assert (word(id(sur) + 5 * WORD), uword(id(sur) + 6 * WORD)) == (0, 0)
    arena.close()


def test_bytes_tuple_and_container_hashes_are_in_the_object_when_shared():
    arena = Arena()
    payload = bytes(range(256)) * 3
    b = arena.share(payload)
    assert in_arena(b)
    assert word(id(b) + 3 * WORD) == hash(bytes(payload))       # ob_shash, filled
    value = (("a", 1), ("b", (2, 3.5)), "c" * 40)
    t = arena.share(value)
    if sys.version_info >= (3, 14):
        for x, v in ((t, value), (t[0], value[0]), (t[1][1], value[1][1])):
            assert word(id(x) + 3 * WORD) == hash(v)              # ob_hash, filled
    else:
        # 3.12/3.13 tuples have no hash cache to fill: the items follow ob_size.
        assert tuple.__basicsize__ == 3 * WORD
        assert ctypes.c_void_p.from_address(id(t) + 3 * WORD).value == id(t[0])
    fd = arena.share({"k": (1, 2), "\xe9": "v"})
    im = arena.share(frozenset({"x", 2, (3, 4)}))
    for x, local in ((fd, subsandbox.frozendict({"k": (1, 2), "\xe9": "v"})),
                     (im, subsandbox.immutableset({"x", 2, (3, 4)}))):
        assert word(id(x) + 3 * WORD) == hash(local)
        # The table lives inside the object (one arena allocation).
        size = type(x).__sizeof__(x)
        for field in (5, 6):                                      # indices, entries
            assert id(x) < uword(id(x) + field * WORD) < id(x) + size
    arena.close()


def _graph():
    return ("ascii zz_q", "caf\xe9", "\u4e2d\u6587", "\U0001f600x", 10**40, -(2**70),
            2.5, 1.5 - 2j, b"bytes payload", (1, ("nested", (2,))),
            {"k": "v", "t": (1, 2)}, frozenset({"p", 3}))


def _walk(x):
    yield x
    if isinstance(x, tuple):
        for y in x:
            yield from _walk(y)
    elif isinstance(x, subsandbox.frozendict):
        for k, v in x.items():
            yield from _walk(k)
            yield from _walk(v)
    elif isinstance(x, subsandbox.immutableset):
        for y in x:
            yield from _walk(y)


def test_refcount_word_gc_header_and_children_are_those_of_static_objects():
    """Immortal as the runtime's own static objects are (3.12/3.13: _Py_IMMORTAL_REFCNT;
    3.14: the immortal count with ob_flags _Py_IMMORTAL_FLAGS |
    _Py_STATICALLY_ALLOCATED_FLAG, the whole word as _Py_STATIC_IMMORTAL_INITIAL_REFCNT),
    so no Py_INCREF/Py_DECREF writes to them; GC objects untracked by a zeroed header;
    every child a shared object too (nothing of an interpreter's heap inside)."""
    static_word = uword(id(sys.intern(fresh("__add__"))))     # _Py_ID(__add__)
    arena = Arena()
    g = arena.share(_graph())
    objs = [x for x in _walk(g) if in_arena(x)]
    assert len(objs) >= 15
    for x in objs:
        assert uword(id(x)) == static_word, repr(x)[:40]
        if type(x) in (tuple, subsandbox.frozendict, subsandbox.immutableset):
            assert ctypes.string_at(id(x) - 2 * WORD, 2 * WORD) == bytes(2 * WORD)
    assert all(is_shared(x) for x in _walk(g))
    arena.close()


def test_no_interpreter_writes_into_a_shared_graph_while_its_pages_are_read_only():
    """Four own-GIL interpreters and main, at once, on one shared graph whose pages are
    read-only (tests/_shared_ops.py): hashing, every codec and error handler, f-strings,
    % and str.format, str methods, eval/exec/compile of shared source and with shared
    file names, shared names as globals, attributes, keyword arguments, __slots__, type()
    namespaces and dunder slots, co_consts from a shared tuple, pickle, marshal, json,
    copy, numbers, bytes (memoryview, BytesIO, codecs, hashes), tuple/frozendict/
    immutableset operations, and gc.collect()/get_objects()/get_referrers()/freeze() with
    local containers holding shared ones. Every result must equal the result on an equal
    local graph, no container may be tracked or seen by any interpreter's GC, nothing
    may be weakly referenced, and every byte must be as it was."""
    result = _run_protected([], {})
    assert result["objects"] >= 80 and result["interpreters"] == 4


def test_no_interpreter_writes_into_a_shared_graph_under_dev_mode():
    # -X dev: the debug allocator hooks (PYTHONMALLOC=debug) and every warning.
    _run_protected(["-X", "dev"], {})


def _run_protected(options, env):
    package_root = Path(subsandbox.__file__).resolve().parents[1]
    path = os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, *options, str(Path(_shared_ops.__file__)), "4", "2"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=path, PYTHONFAULTHANDLER="1", **env),
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    # The interpreters are created one at a time before any works: no 3.12 allocator
    # race, so no AllocatorRaceWarning either; -X dev prints any warning at all.
    assert proc.stderr == ""
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


# ---- shared names as the runtime's identifiers -----------------------------------------

def _slot_names():
    """The names of every type slot (update_slot() compares them by pointer with the
    runtime's _Py_ID strings): the slot wrappers of the builtin types."""
    import types
    kinds = [object, int, float, complex, str, bytes, tuple, list, dict, set, type, bool,
             range, slice, memoryview, property, types.FunctionType, types.ModuleType,
             types.GenericAlias, types.GeneratorType, types.CoroutineType,
             types.AsyncGeneratorType, BaseException]
    return sorted({n for t in kinds for n, v in vars(t).items()
                   if type(v).__name__ == "wrapper_descriptor"})


def test_every_slot_name_is_shared_as_the_runtimes_own_string():
    names = _slot_names()
    assert len(names) >= 60
    shared = share(tuple(fresh(n) for n in names))
    for n, s in zip(names, shared):
        assert s is sys.intern(fresh(n)), n
        assert not in_arena(s)


# Run in main and in a raw own-GIL interpreter, with N a shared tuple of names and NS a
# shared frozendict namespace, both made by main. Every dunder reaches CPython through
# a shared str: setattr/delattr on a class (update_slot(), which matches slot names by
# pointer), type() namespaces (slot lookups by hash), and __set_name__,
# __init_subclass__ and __class_getitem__ looked up by name.
IDENTIFIERS = """
(ADD, LEN, INIT, EQ, HASH, GETATTR, CGI, SET_NAME, INIT_SUB, NAME, ATTR) = N
C = type(NAME, (), {})
setattr(C, ADD, lambda self, other: ("add", other))
setattr(C, LEN, lambda self: 7)
setattr(C, INIT, lambda self, v=0: setattr(self, ATTR, v))
setattr(C, EQ, lambda self, other: "eq")
setattr(C, HASH, lambda self: 42)
setattr(C, GETATTR, lambda self, name: ("missing", name))
c = C(5)
assert c + 1 == ("add", 1) and len(c) == 7 and getattr(c, ATTR) == 5
assert (c == 0) == "eq" and hash(c) == 42 and c.nope == ("missing", "nope")
delattr(C, ADD)
try:
    c + 1
except TypeError:
    pass
else:
    raise AssertionError("__add__ slot still set after delattr")
seen = []
class Desc:
    pass
setattr(Desc, SET_NAME, lambda self, owner, name: seen.append(("set_name", name)))
Base = type("Base", (), {INIT_SUB: classmethod(lambda cls, **kw: seen.append(("sub", cls.__name__)))})
ns = dict(NS)
ns.update({ADD: lambda self, o: "ns-add", LEN: lambda self: 3, EQ: lambda self, o: True,
           HASH: lambda self: 9, GETATTR: lambda self, n: n * 2, "d": Desc(),
           CGI: classmethod(lambda cls, item: ("cgi", item)),
           INIT: lambda self: setattr(self, ATTR, "init")})
T = type(NAME, (Base,), ns)
t = T()
assert (t + 1, len(t), t == 1, hash(t), t.ab) == ("ns-add", 3, True, 9, "abab")
assert getattr(t, ATTR) == "init" and T[int] == ("cgi", int)
assert seen == [("set_name", "d"), ("sub", NAME)], seen
assert T.__name__ == NAME and T.__doc__ == NS["__doc__"] and T.x == 1
S = type("S", (), {"__slots__": NS["slots"]})
s = S()
setattr(s, NS["slots"][0], 1)
assert getattr(s, NS["slots"][0]) == 1 and S.__slots__ == NS["slots"]
"""

_NAMES = ("__add__", "__len__", "__init__", "__eq__", "__hash__", "__getattr__",
          "__class_getitem__", "__set_name__", "__init_subclass__", "Shared_name_q",
          "attr_zz_q")
_NS = {"__doc__": "doc of a shared namespace \xe9", "x": 1, "slots": ("alpha", "b\xe9ta"),
       "__module__": "shared_mod"}


def test_shared_dunder_names_work_as_identifiers_in_every_interpreter():
    names = share(tuple(fresh(n) for n in _NAMES))
    ns = share({fresh(k): v for k, v in _NS.items()})
    exec(IDENTIFIERS, {"N": names, "NS": ns})
    iid = _subinterp.create()
    try:
        _subinterp.run(iid, (
            f"N = _core._testing_import({_core._testing_export(names)})\n"
            f"NS = _core._testing_import({_core._testing_export(ns)})\n"
            + IDENTIFIERS))
    finally:
        _subinterp.destroy(iid)


CODE_NAMES = """
co = compile("alpha_zz + beta_zz * gamma_zz", "<shared names>", "eval")
for _ in range(200):
    co2 = co.replace(co_names=NAMES, co_consts=CONSTS)
    assert co2.co_names is NAMES
    assert eval(co2, {"alpha_zz": 1, "beta_zz": 2, "gamma_zz": 3}) == 7
"""


def test_code_objects_made_from_shared_tuples_in_every_interpreter():
    """code.replace()/CodeType with a shared co_names tuple: CPython interns each name in
    place (codeobject.c intern_strings); 3.13+ stores the result back into the tuple even
    when it is the same string (docs/shared-memory.md), so it must always be the same
    string: the tuple's bytes never change while interpreters do it at once."""
    names = share(tuple(fresh(n) for n in ("alpha_zz", "beta_zz", "gamma_zz")))
    consts = share((None, fresh("a const str"), (1, fresh("inner_const_q"))))
    before = [_tuple_bytes(t) for t in (names, consts, consts[2])]
    interps = [_subinterp.create() for _ in range(2)]
    try:
        script = CODE_NAMES.replace("NAMES", "N").replace("CONSTS", "K")
        jobs = [(lambda iid=iid: _subinterp.run(iid, (
            f"N = _core._testing_import({_core._testing_export(names)})\n"
            f"K = _core._testing_import({_core._testing_export(consts)})\n" + script)))
            for iid in interps]
        jobs.append(lambda: exec(script, {"N": names, "K": consts}))
        _subinterp.run_concurrently(jobs)
    finally:
        for iid in interps:
            _subinterp.destroy(iid)
    after = [_tuple_bytes(t) for t in (names, consts, consts[2])]
    assert after == before
    assert sys.intern(fresh("alpha_zz")) is not names[0]    # never put in main's table


def test_code_made_from_shared_one_character_strings_leaves_the_tuple_alone():
    """On 3.12 the runtime's one-character strings (chr(97)) are not interned, and for
    eleven letters an equal static identifier (_Py_ID(a)) is: a code object made from a
    shared tuple that held the former stored the latter into it (a hunt with the pages
    read-only found it). Every character of Latin-1, made at run time, shares to a string
    that interning leaves as it is."""
    chars = share(tuple(chr(c) for c in range(1, 256)))
    names = share(tuple(chr(c) for c in b"_abcdenprsx"))
    before = [_tuple_bytes(chars), _tuple_bytes(names)]
    co = compile("a = 1\n", "x", "exec")
    made = co.replace(co_consts=chars, co_names=names)
    assert made.co_consts == tuple(chr(c) for c in range(1, 256))
    assert [_tuple_bytes(chars), _tuple_bytes(names)] == before
    for s in chars:
        assert sys.intern(s) == s and str_state(s) & 3, repr(s)   # interned: left alone


def test_compile_of_an_ast_with_a_shared_tuple_constant_never_writes_into_it():
    """CPython's compiler merges a tuple constant's items with equal constants met before
    and stores them into the tuple (merge_consts_recursive / const_cache_insert): an
    ast.Constant holding a shared tuple got this interpreter's objects written into
    process-wide memory. subsandbox's audit hook gives the compiler a local copy; the
    code is the same, in every interpreter, for a shared tuple at any depth."""
    shared = Arena().share(("zz_item_q", 2.5, b"payload", 10**30, ("zz_inner_q", 2.5)))
    before = [_tuple_bytes(shared), _tuple_bytes(shared[4])]
    local_str, local_float = "".join(["zz_", "item_q"]), float("2.5")

    def module(*constants):
        body = [ast.Assign([ast.Name(f"v{i}", ast.Store())], ast.Constant(value))
                for i, value in enumerate(constants)]
        return ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))

    tree = module(local_str, local_float, shared, (1, shared), frozenset({shared}))
    ns: dict[str, object] = {}
    exec(compile(tree, "<generated>", "exec"), ns)
    assert ns["v2"] == shared and ns["v3"] == (1, shared) and ns["v4"] == {shared}
    assert [_tuple_bytes(shared), _tuple_bytes(shared[4])] == before
    copy = tree.body[2].value.value                     # the compiler got a copy
    assert copy == shared and copy is not shared and not in_arena(copy)
    assert in_arena(copy[3]) and in_arena(copy[4][0])  # of the containers only
    # The same in another interpreter, with the tuple's pages read-only: a store dies.
    iid = _subinterp.create()
    try:
        _subinterp.run(iid, (
            "import ast\nfrom subsandbox import _core\n"
            f"t = _core._testing_import({_core._testing_export(shared)})\n"
            "tree = ast.fix_missing_locations(ast.Module(body=[ast.Assign("
            "[ast.Name('a', ast.Store())], ast.Constant(float('2.5'))), ast.Assign("
            "[ast.Name('b', ast.Store())], ast.Constant(t))], type_ignores=[]))\n"
            "ns = {}\nexec(compile(tree, '<gen>', 'exec'), ns)\nassert ns['b'] == t\n"))
    finally:
        _subinterp.destroy(iid)
    assert [_tuple_bytes(shared), _tuple_bytes(shared[4])] == before
