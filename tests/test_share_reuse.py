"""Reuse of arena memory: the slots of small arenas (_ext/arena.c, "slots").

A freed arena's slots go back to a process-wide cache and are handed to later arenas.
What must hold: a slot is given back only when its arena is freed by the lifetime rule;
once given back no address in it is reported as shared until a new arena builds an object
there; an arena that gets a reused slot builds correct objects; and the objects of arenas
that are still alive are never touched by any of it. docs/shared-memory.md has the rules.
"""

import gc
import os
import tempfile

from subsandbox import _core
from subsandbox._core import Arena, is_shared, share

import _subinterp

_stats = _core._arena_stats
_is_shared_address = _core._testing_is_shared_address


def _old_value():
    return tuple(f"old string number {i}" for i in range(20)) + (2**80, 1.25, b"old bytes")


def _new_value():
    # Another layout: a big int first shifts every object to a new address.
    return (10**40,) + tuple(f"new text é {i}" for i in range(20)) + (b"new bytes!",)


def _share_in_subinterpreter(value_src):
    """Share `value_src` (an expression) into a fresh arena inside a new interpreter; return
    the interpreter, the arena id, and the addresses of the shared objects."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        x = _subinterp.create()
        _subinterp.run(x, (
            "from subsandbox import _core\n"
            "a = _core.Arena()\n"
            f"obj = a.share({value_src})\n"
            "RESULT = (a.id, [id(obj)] + [id(o) for o in obj])\n"
            "a.close(); del a\n"
            f"open({out!r}, 'w').write(repr(RESULT))\n"))
        with open(out) as f:
            aid, addrs = eval(f.read())
    return x, aid, addrs


def test_freed_slot_reports_nothing_shared_and_is_reused_intact():
    share(("the default arena exists before we count slots",))
    x, aid, addrs = _share_in_subinterpreter(repr(_old_value()))
    assert all(_is_shared_address(p) for p in addrs)
    free_before = _stats()["slots_free"]

    # The holder is destroyed: the arena is freed, its slot goes back to the cache.
    _subinterp.destroy(x, report=False)
    assert aid in _stats()["arenas"]          # not before the destruction is reported
    assert all(_is_shared_address(p) for p in addrs)
    _core._interpreter_destroyed(int(x))
    assert aid not in _stats()["arenas"]
    assert _stats()["slots_free"] == free_before + 1
    assert not any(_is_shared_address(p) for p in addrs)

    # A new arena of the same size takes that slot (the cache is last in, first out).
    arena = Arena()
    new = arena.share(_new_value())
    assert _stats()["slots_free"] == free_before
    assert new == _new_value()
    assert all(is_shared(o) for o in new) and is_shared(new)
    assert new[1].encode() == "new text é 0".encode()
    new_addrs = {id(new)} | {id(o) for o in new}
    assert any(min(addrs) <= p <= max(addrs) for p in new_addrs)     # the same slot
    # An old address passes only where the new arena built an object itself.
    for p in addrs:
        assert _is_shared_address(p) == (p in new_addrs)


def test_many_freed_arenas_leave_live_ones_intact_and_bound_resident_cache():
    # Arenas of main that stay alive (main holds them) while hundreds of small arenas are
    # made and freed around them: their slots are interleaved with the freed ones.
    kept = []
    expected = []
    for r in range(3):
        refs = []
        for i in range(120):
            value = tuple(f"round {r} arena {i} item {j}" * 3 for j in range(40))
            refs.append(Arena().share_detached(value))      # main is not a holder
            if i % 40 == 0:
                v = (r, i, "kept é", tuple(range(300, 340)), 2.5 * i)
                kept.append(Arena().share(v))
                expected.append(v)
        del refs
        gc.collect()
        st = _stats()
        # Freed slots are kept for reuse, but at most 1 MiB of them resident.
        assert st["slots_free"] > 0
        assert st["slots_free_resident_bytes"] <= 1 << 20
        for k, v in zip(kept, expected):
            assert k == v and all(is_shared(o) for o in k)
    # Slots reused after some were given back to the system (read as zero again) build
    # correct objects.
    again = [Arena().share(tuple(f"after {i} {j}" for j in range(40))) for i in range(200)]
    for i, t in enumerate(again):
        assert t == tuple(f"after {i} {j}" for j in range(40))
    for k, v in zip(kept, expected):
        assert k == v


def test_failed_share_into_a_reused_slot_leaves_it_clean():
    share(("warm",))
    x, aid, addrs = _share_in_subinterpreter(repr(_old_value()))
    _subinterp.destroy(x, report=False)
    _core._interpreter_destroyed(int(x))
    free_before = _stats()["slots_free"]
    arena = Arena()
    try:
        arena.share(tuple(f"item {i}" for i in range(20)) + ([],))
    except TypeError:
        pass
    else:
        raise AssertionError("a list was shared")
    # The aborted call gave its slot back to the cache, zeroed.
    assert _stats()["slots_free"] == free_before
    assert not any(_is_shared_address(p) for p in addrs)
    ok = arena.share(_old_value())
    assert ok == _old_value() and all(is_shared(o) for o in ok)
