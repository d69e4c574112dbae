"""The string memo and fresh memory of arenas (_ext/arena.c, _ext/share.c).

What must hold however the memo is laid out and however memory is faulted in:
  - equal strings are stored once per arena, across calls and across every growth of the
    memo's table (its first table lives in the arena's own block, bigger ones do not);
  - a share() that fails takes its strings out of the memo, even when it made the memo's
    first table, and the arena then works as if the call never happened;
  - the strings share() hashes ahead of its walk (to prefetch their memo slots) are the
    caller's own and equal strings of another arena are not confused with them;
  - memory faulted in ahead, in bulk, for slots not handed out yet reads as fresh memory
    when later arenas get it: correct, untracked, immutable objects.
See docs/shared-memory.md for the rules.
"""

import gc

import pytest

from subsandbox import _core
from subsandbox._core import Arena, NotShareableError, is_shared, share

_stats = _core._arena_stats


def fresh(s):
    """An equal str that is a new object (not interned, not static)."""
    return "".join(list(s)) if len(s) > 1 else s


@pytest.mark.parametrize("count", [3, 100])     # in the first table; after it grew
def test_failed_share_that_made_the_first_memo_table_leaves_no_trace(count):
    with Arena() as a:
        strings = [fresh(f"first table string {i}") for i in range(count)]
        with pytest.raises(NotShareableError):
            a.share(tuple(strings) + ([],))
        assert a.nbytes == 0
        one = a.share(fresh("first table string 1"))
        both = a.share((fresh("first table string 1"), fresh("first table string 2")))
        assert both[0] is one and both == ("first table string 1", "first table string 2")
        before = a.nbytes
        assert a.share(fresh("first table string 2")) is both[1]
        assert a.nbytes == before
        # Objects now fill the memory the failed call took back: the memo must not live
        # there any more (its writes would corrupt them, its reads find garbage).
        after = [a.share((fresh(f"after {i}"), i * 1.5)) for i in range(60)]
        for i, t in enumerate(after):
            assert t == (f"after {i}", i * 1.5) and not gc.is_tracked(t)
            assert a.share(fresh(f"after {i}")) is t[0]
        assert a.share(fresh("first table string 1")) is one


def test_failed_share_after_a_committed_one_keeps_the_earlier_strings():
    with Arena() as a:
        kept = a.share(tuple(fresh(f"kept {i}") for i in range(10)))
        before = a.nbytes
        with pytest.raises(NotShareableError):
            a.share(tuple(fresh(f"lost {i}") for i in range(200)) + ([],))
        assert a.nbytes == before
        for i in range(10):
            assert a.share(fresh(f"kept {i}")) is kept[i]
        assert a.nbytes == before


@pytest.mark.parametrize("arena", ["fresh", "default"])
def test_equal_strings_stored_once_across_memo_growth(arena):
    # Batches that take the memo from its first 64-slot table through malloc'd tables to
    # mapped ones (256 KiB and more); after each batch every earlier string is found.
    target = Arena() if arena == "fresh" else None
    do_share = target.share if target is not None else share
    tag = f"{arena}-{id(target)}"
    batches = []
    for size in (5, 40, 300, 3000, 20_000):
        batch = do_share(tuple(fresh(f"memo {tag} {len(batches)} {i} é") for i in range(size)))
        batches.append(batch)
        probe = (0, size // 2, size - 1)
        for b, earlier in enumerate(batches):
            n = len(earlier)
            for i in {0, n // 2, n - 1}:
                again = do_share(fresh(f"memo {tag} {b} {i} é"))
                assert again is earlier[i], (size, b, i, probe)
    if target is not None:
        before = target.nbytes
        assert do_share(tuple(fresh(f"memo {tag} 4 {i} é") for i in range(20_000))) \
            == batches[-1]
        # Only the outer tuple is new: every string was found in the memo.
        assert target.nbytes - before < 20_000 * 8 + 4096
        target.close()


def test_rows_hashed_ahead_are_deduplicated_and_correct():
    # share() hashes the strings of rows ahead of its walk: equal strings in rows far
    # apart, and strings equal to ones of another arena, must still be found right.
    rows = tuple((fresh(f"name {i % 50}"), i, fresh(f"city {i % 7} ü"), i * 0.5)
                 for i in range(2000))
    with Arena() as other:
        theirs = other.share(fresh("name 3"))
        with Arena() as a:
            got = a.share(rows)
            assert got == rows
            assert got[3][0] is got[53][0] is got[1953][0]
            assert got[3][2] is got[10][2]
            assert got[3][0] is not theirs and got[3][0] == theirs
            assert all(not gc.is_tracked(r) for r in got[:100])


def test_slots_faulted_in_ahead_build_correct_objects():
    # Small arenas take slots of slab chunks faulted in 64 KiB at a time: many arenas go
    # through several such runs (and a new chunk); each sees fresh, zeroed memory.
    values = []
    for i in range(300):
        a = Arena()
        value = (fresh(f"slot value {i}"), i * 1000, (i + 0.5, b"payload %d" % i), ())
        values.append((a.share(value), value))
        a.close()
    for got, want in values:
        assert got == want
        assert is_shared(got) and is_shared(got[0]) and is_shared(got[2])
        assert not gc.is_tracked(got) and not gc.is_tracked(got[2])
        assert hash(got) == hash(want)
    assert _stats()["slab_bytes"] > 0



def _strings_that_wrap(count, prefix):
    """`count` new strings whose hashes make the memo's doubling in place take its rare
    paths, in every table of 16,384 to 65,536 slots: three in four hash into the last 1/64
    of the table, so they form one long run that wraps past its last slot into the first
    ones; the others have their home in those first slots and move to the upper half when
    the table doubles, leaving holes in the wrapped run unless the rehash mends it."""
    found = []
    i = 0
    while len(found) < count:
        s = f"{prefix} {i}"
        low = hash(s) & 0xFFFF
        if low >= 0xFC00 or (i % 4 == 0 and (low & 0x3C00) == 0 and low >= 0x4000):
            found.append(s)
        i += 1
    return found


@pytest.mark.parametrize("hashes", ["spread", "wrapping"])
def test_every_string_is_found_after_the_memo_doubles_in_place(hashes):
    # A memo table of 256 KiB or more doubles where it lies (mremap, then a rehash in
    # place: _ext/arena.c, str_table_double_in_place). Strings added a few per call, as
    # into the default arena, take it through two such doublings; a failed call in the
    # middle leaves tombstones to drop. Afterwards every string must still be found: a
    # lost one would be copied again, a new object, and the arena would grow.
    n = 20_000
    if hashes == "spread":
        names = [f"in place {i} ü" for i in range(n)]
    else:
        names = _strings_that_wrap(n, "wrapping")
    with Arena() as a:
        kept = []
        for start in range(0, n, 50):
            kept.extend(a.share(tuple(fresh(s) for s in names[start:start + 50])))
            if start == 10_000:
                with pytest.raises(NotShareableError):
                    a.share(tuple(fresh(f"dropped {i}") for i in range(300)) + ([],))
        assert _stats()["arenas"][a.id]["memo_grown_in_place"] == 2
        before = a.nbytes
        again = a.share(tuple(fresh(s) for s in names))
        lost = [names[i] for i, (x, y) in enumerate(zip(again, kept)) if x is not y]
        assert lost == []
        # Only the new outer tuple was allocated.
        assert a.nbytes - before < n * 8 + 4096
        assert a.share(fresh("dropped 7")) == "dropped 7"
