"""The workload of the stress test (tests/test_stress.py), importable by the sandboxes.

One deterministic graph (``make_data(n)``) exists twice: once shared (``share``) and read
at the same time by several sandboxes and the main interpreter, and once as a fresh,
non-shared copy built wherever it is compared. ``hammer()`` does to the shared strings,
tuples and containers everything an interpreter does that could write into an object:
hashing, use as dict keys, lookups with equal keys of its own, ``setattr``/``getattr``
with shared names (dunders included), ``sys.intern``, encoding, formatting, comparing,
iterating, keyword names, and compiling and evaluating shared source text. A write by
one interpreter into a shared object (a hash, a UTF-8 cache, an interned-state bit, a GC
link, a reference count) shows up as a wrong value or a crash in another interpreter, or
in ``check_against_fresh`` run by the main interpreter at the end.

Only the standard library and subsandbox are imported: this module runs inside sandboxes,
and as a script (``python -X dev _stress_work.py N``) for the subprocess variants.
"""

from __future__ import annotations

import sys
from typing import Any

import subsandbox
from subsandbox import _core


def in_arena(obj: object) -> bool:
    # is_shared() is also true of the runtime's static objects that share() returns;
    # only the arena's own address table tells an object that share() built.
    return bool(_core._testing_is_shared_address(id(obj)))

# Every str kind: ASCII, latin-1, UCS-2 (Greek, CJK) and UCS-4 (astral).
_KINDS = ("rec", "café", "Ωμέγα", "数据", "𝒳𝓎")
_DUNDERS = ("add", "len", "eq", "hash", "getitem", "repr")
# Distinct arena objects per record in make_data(): key, record tuple, 2 ints, float,
# complex, label, bytes, source, key tuple, float in it, immutableset, its 2 ints.
OBJECTS_PER_RECORD = 14


def _name(kind: str, i: int) -> str:
    # Joined at run time, never a code constant: every call makes new str objects.
    return "".join((kind, "_", str(i)))


def make_data(n: int) -> dict[str, Any]:
    """The graph, as plain (non-shared) Python objects: n records, plus name tables."""
    records: dict[str, tuple[Any, ...]] = {}
    by_pair: dict[tuple[str, int], str] = {}
    for i in range(n):
        key = _name(_KINDS[i % len(_KINDS)], i)
        label = _name(_KINDS[(i + 2) % len(_KINDS)] + "-label", i)
        records[key] = (
            i + 1000,                               # int, never a cached small int
            (i << 70) + 7,                          # multi-digit int
            i * 0.25 + 0.1,                         # float
            complex(i, -i - 0.5),                   # complex
            label,                                  # str of another kind
            label.encode("utf-8"),                  # bytes
            f"({i} * 3 + len({label!r})) % 1009",   # source text with a non-ASCII literal
            (key, i % 97, float(i % 13) + 0.5),     # tuple usable as a dict key
            frozenset({i + 100_000, i + 200_000}),  # becomes an immutableset
        )
        by_pair[(key, i % 97)] = label
    return {
        "records": records,
        "by_pair": by_pair,
        # Equal to the runtime's static identifiers: share() returns those very objects.
        "dunders": tuple("".join(("__", d, "__")) for d in _DUNDERS),
        "identifiers": tuple(_name("ident", i) for i in range(0, n, 7)),
        "n": n,
    }


def count_shared_objects(root: object) -> int:
    """Distinct objects reachable from ``root`` that live in an arena."""
    seen: set[int] = set()
    count = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        count += in_arena(obj)
        if isinstance(obj, (tuple, subsandbox.immutableset)):
            stack.extend(obj)
        elif isinstance(obj, subsandbox.frozendict):
            for k, v in obj.items():
                stack.append(k)
                stack.append(v)
    return count


def _kwargs(**kw: Any) -> dict[str, Any]:
    return kw


def hammer(graph: Any, passes: int = 1) -> tuple[int, int]:
    """Use every record of the shared ``graph`` in every way; return (checks, digest).

    Compares against a fresh copy built here, in this interpreter. Raises AssertionError
    (with the record) on the first difference.
    """
    n = graph["n"]
    fresh = make_data(n)
    records, local_records = graph["records"], fresh["records"]
    by_pair = graph["by_pair"]
    checks = digest = 0
    for _ in range(passes):
        by_key: dict[str, Any] = {}       # a local dict keyed by shared strings
        by_tuple: dict[tuple[Any, ...], str] = {}  # ... and by shared tuples
        assert len(records) == len(local_records) == n
        for (k, rec), (lk, lrec) in zip(records.items(), local_records.items()):
            try:
                # hashing: the hash stored at share time is the one this process computes
                assert k == lk and k is not lk and hash(k) == hash(lk)
                assert hash(rec[7]) == hash(lrec[7]) and hash(rec[8]) == hash(lrec[8])
                assert hash(rec[5]) == hash(lrec[5]) and hash(rec[1]) == hash(lrec[1])
                # dict keys, and lookups with equal non-shared keys
                by_key[k] = rec
                by_tuple[rec[7]] = k
                assert records[lk] is rec and lk in records
                assert by_key[lk] is rec and by_tuple[lrec[7]] is k
                assert by_pair[lrec[7][:2]] is rec[4]
                assert records.get(lk + "?") is None
                # sys.intern returns a shared string as it is and never stores it
                assert sys.intern(k) is k and sys.intern(rec[4]) is rec[4]
                # encoding (the UTF-8 form of non-ASCII strings was built at share time)
                assert k.encode() == lk.encode() and rec[4].encode("utf-8") == rec[5]
                assert k.encode("utf-16") == lk.encode("utf-16")
                assert rec[5].decode() == rec[4]
                # formatting
                text = f"{k}|{rec[0]}|{rec[1]:x}|{rec[2]:.3f}|{rec[3]}|{rec[4]!r}|{rec[5]!r}"
                assert text == (f"{lk}|{lrec[0]}|{lrec[1]:x}|{lrec[2]:.3f}|{lrec[3]}|"
                                f"{lrec[4]!r}|{lrec[5]!r}")
                assert "%s=%d" % (k, rec[0]) == "%s=%d" % (lk, lrec[0])
                # comparisons, of the record and of each part
                assert rec[:8] == lrec[:8] and not rec[:8] < lrec[:8] and rec[:8] >= lrec[:8]
                assert rec[8] == lrec[8] and rec[8] <= lrec[8] and not rec[8] < lrec[8]
                assert k <= lk and not k < lk and rec[4] != k
                # iteration, slicing and str methods
                assert sorted(rec[8]) == sorted(lrec[8])
                assert [type(x) for x in rec[:8]] == [type(x) for x in lrec[:8]]
                assert list(k) == list(lk) and k[::-1] == lk[::-1]
                assert k.split("_") == lk.split("_") and k.upper() == lk.upper()
                assert rec[4].partition("_")[2] == str(rec[0] - 1000)
                # compiling and running shared source text (compiling is slow: a sample)
                value = ((rec[0] - 1000) * 3 + len(rec[4])) % 1009
                if rec[0] % 8 == 0:
                    assert eval(rec[6]) == eval(lrec[6]) == value
            except AssertionError as exc:
                raise AssertionError(f"record {lk!r}: shared {rec!r} != fresh {lrec!r}") from exc
            digest += value + rec[0]
            checks += 1
        assert len(by_key) == len(by_tuple) == n
        checks += _names(graph, fresh)
    return checks, digest


def _names(graph: Any, fresh: dict[str, Any]) -> int:
    """setattr/getattr, class creation and keyword arguments with shared names."""
    checks = 0
    idents, local_idents = graph["identifiers"], fresh["identifiers"]
    C = type("C", (), {})
    for name, local in zip(idents, local_idents):
        setattr(C, name, name)
        assert getattr(C, local) is name and getattr(C(), name) is name
        assert _kwargs(**{name: 1}) == {local: 1}
        namespace = {name: 2}
        assert eval(local + " + 1", namespace) == 3     # the compiler's own, equal name
        checks += 1
    # A class whose name and attribute names are all shared strings.
    D = type(idents[-1], (), {name: i for i, name in enumerate(idents[:50])})
    assert D.__name__ == local_idents[-1] and getattr(D, local_idents[3]) == 3
    # Shared dunder names must be the runtime's identifiers, or the slots stay empty.
    add, length, eq, hash_, getitem, repr_ = graph["dunders"]
    E = type("E", (), {})
    setattr(E, add, lambda self, other: ("added", other))
    setattr(E, length, lambda self: 5)
    setattr(E, getitem, lambda self, i: i * 2)
    setattr(E, repr_, lambda self: "<E>")
    setattr(E, eq, lambda self, other: isinstance(other, E))
    setattr(E, hash_, lambda self: 42)
    e = E()
    assert e + 1 == ("added", 1) and len(e) == 5 and e[4] == 8 and repr(e) == "<E>"
    assert e == E() and hash(e) == 42 and {e: 1}[E()] == 1
    return checks + 1


def check_against_fresh(graph: Any, n: int) -> int:
    """Compare every value of the shared graph with a fresh copy: type, value, hash.

    Returns the number of objects compared. A failure names the path to the value.
    """
    expected = make_data(n)
    compared = 0
    # (got, want, parent entry, step): the path is spelled out only for a failure.
    stack: list[tuple[Any, Any, Any, str]] = [(graph, expected, None, "graph")]
    while stack:
        entry = stack.pop()
        got, want = entry[0], entry[1]
        compared += 1
        if isinstance(want, dict):
            ok = type(got) is subsandbox.frozendict and list(got) == list(want)
            if ok:
                for (gk, gv), (wk, wv) in zip(got.items(), want.items()):
                    stack.append((gk, wk, entry, "key"))
                    stack.append((gv, wv, entry, wk))
        elif isinstance(want, frozenset):
            ok = type(got) is subsandbox.immutableset and got == want and hash(got) == hash(want)
            stack.extend((g, g, entry, "item") for g in got)
        elif isinstance(want, tuple):
            ok = type(got) is tuple and len(got) == len(want)
            if ok:
                stack.extend((g, w, entry, i) for i, (g, w) in enumerate(zip(got, want)))
        else:
            ok = type(got) is type(want) and got == want and hash(got) == hash(want)
            if ok and type(got) is str:
                # Still marked interned, and never put into this interpreter's interned
                # dict (the runtime's static strings, which share() returns, are there).
                ok = sys.intern(got) is got and got.encode() == want.encode()
                if ok and in_arena(got):
                    ok = sys.intern("".join((want, ""))) is not got
        if not ok:
            raise AssertionError(f"{_path(entry)}: shared {got!r} differs from {want!r}")
    return compared


def _path(entry: Any) -> str:
    steps = []
    while entry is not None:
        steps.append(entry[3])
        entry = entry[2]
    return "".join(s if i == 0 else f"[{s!r}]" for i, s in enumerate(reversed(steps)))


def main(argv: list[str]) -> None:
    """``python _stress_work.py N [SANDBOXES]``: the whole stress run, as one process."""
    import threading

    n = int(argv[1])
    nsandboxes = int(argv[2]) if len(argv) > 2 else 4
    print(run_stress(n, nsandboxes, threading))


def run_stress(n: int, nsandboxes: int, threading: Any = None, passes: int = 1) -> dict[str, int]:
    """Share the graph; hammer it from ``nsandboxes`` sandboxes and this interpreter at
    once; close the sandboxes; check every value against a fresh copy."""
    if threading is None:
        import threading
    graph = subsandbox.share(make_data(n))
    objects = count_shared_objects(graph)
    sandboxes = [subsandbox.Sandbox() for _ in range(nsandboxes)]
    results: list[Any] = [None] * (nsandboxes + 1)
    barrier = threading.Barrier(nsandboxes + 1)

    def work(slot: int) -> None:
        try:
            barrier.wait()
            if slot < nsandboxes:
                results[slot] = sandboxes[slot].call(hammer, graph, passes)
            else:
                results[slot] = hammer(graph, passes)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            results[slot] = exc

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(nsandboxes + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for sb in sandboxes:
            sb.close()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    assert len(set(results)) == 1, f"the interpreters disagree: {results}"
    compared = check_against_fresh(graph, n)
    return {"objects": objects, "checks": results[0][0], "compared": compared}


if __name__ == "__main__":
    main(sys.argv)
