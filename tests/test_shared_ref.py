"""Arena.share_detached and SharedRef (issue #3): data prepared by the main interpreter
whose memory still comes back.

The rule (docs/shared-memory.md): an arena is freed once no handle and no in-flight item
refers to it and every holder interpreter is destroyed. The main interpreter is never
destroyed, so what it shares with ``Arena.share`` stays until exit. ``share_detached``
shares without making the caller a holder and returns a handle that cannot be
dereferenced there; the receiving sandbox gets the object and becomes the holder.

The C core is observed through ``_core._arena_stats()`` (holders, references, whether the
arena is still alive): nothing public can see that memory was given back.
"""

from __future__ import annotations

import copy
import gc
import pickle
from typing import Any

import pytest

import subsandbox
from subsandbox import Arena, Channel, NotShareableError, Sandbox, SandboxPoolExecutor, SharedRef
from subsandbox import _core

from _detached_work import checksum, describe, receive_and_describe

VALUE = {"rows": tuple((f"name-{i}", i * 10**20, i / 3) for i in range(200)),
         "tags": frozenset({"a", "b"}), "blob": b"\x00" * 1000, "text": "Zürich"}


def arena_info(arena_id: int) -> dict[str, Any] | None:
    gc.collect()
    return _core._arena_stats()["arenas"].get(arena_id)  # type: ignore[no-any-return]


def main_id() -> int:
    return _core.interpreter_id()  # type: ignore[no-any-return]


@pytest.fixture
def detached() -> Any:
    arena = Arena()
    ref = arena.share_detached(VALUE)
    arena_id = arena.id
    arena.close()
    del arena
    yield ref, arena_id


# ---- the handle, in the interpreter that made it ---------------------------------------


def test_the_caller_does_not_become_a_holder(detached: Any) -> None:
    ref, arena_id = detached
    info = arena_info(arena_id)
    assert info is not None and info["closed"]
    assert info["holders"] == ()      # with Arena.share it would be (main_id(),)
    assert info["refs"] == 1          # the handle's reference keeps the arena


def test_arena_share_makes_the_caller_a_holder_for_contrast() -> None:
    with Arena() as arena:
        arena.share(("x",))
        assert arena_info(arena.id)["holders"] == (main_id(),)  # type: ignore[index]


@pytest.mark.parametrize("failure", ["closed", "unshareable", "late"])
def test_a_failed_share_does_not_make_the_caller_a_holder(failure: str) -> None:
    # The caller used to become a holder before the walk, so a share() that then failed
    # pinned a detached arena in this process (main is never destroyed) until exit.
    arena = Arena()
    ref = arena.share_detached(VALUE)
    arena_id = arena.id
    # "late": the walk copies a thousand strings into the arena before it meets the list.
    late = tuple(f"string {i}" for i in range(1000)) + ([1],)
    if failure == "closed":
        arena.close()
    with pytest.raises(ValueError if failure == "closed" else NotShareableError):
        arena.share({"closed": ("x",), "unshareable": ["x"], "late": late}[failure])
    info = arena_info(arena_id)
    assert info is not None and info["holders"] == ()
    with Sandbox() as sb:
        assert sb.call(checksum, ref) == checksum(subsandbox.share(VALUE)) > 0
    del arena, ref
    assert arena_info(arena_id) is None       # freed: no handle, no live holder


def test_the_handle_cannot_be_dereferenced(detached: Any) -> None:
    ref, arena_id = detached
    assert isinstance(ref, SharedRef)
    assert not subsandbox.is_shared(ref)
    public = {name for name in dir(ref) if not name.startswith("__")}
    assert public == {"arena_id"} and ref.arena_id == arena_id
    assert gc.get_referents(ref) == []            # not a GC container: nothing to walk
    assert copy.copy(ref) is ref and copy.deepcopy(ref) is ref
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ref)
    with pytest.raises(TypeError):
        ref.__reduce_ex__(2)
    with pytest.raises(TypeError):
        SharedRef()                               # only share_detached makes one
    with pytest.raises(TypeError):
        ref["rows"]                               # type: ignore[index]
    with pytest.raises(AttributeError):
        ref.obj                                   # type: ignore[attr-defined]
    assert arena_info(arena_id)["holders"] == ()  # type: ignore[index]


def test_repr_names_arena_type_and_size() -> None:
    with Arena() as arena:
        assert repr(arena.share_detached(VALUE)) == (
            f"<subsandbox.SharedRef to a frozendict of 4 items in arena {arena.id}>")
        assert repr(arena.share_detached("abc")) == (
            f"<subsandbox.SharedRef to a str of 3 characters in arena {arena.id}>")
        assert repr(arena.share_detached(b"ab")).startswith("<subsandbox.SharedRef to a bytes of 2 bytes")
        assert repr(arena.share_detached(("one",))) == (
            f"<subsandbox.SharedRef to a tuple of 1 item in arena {arena.id}>")
        assert repr(arena.share_detached("\u0101")) == (
            f"<subsandbox.SharedRef to a str of 1 character in arena {arena.id}>")
        assert repr(arena.share_detached(10**30)) == (
            f"<subsandbox.SharedRef to an int in arena {arena.id}>")
        none_ref = arena.share_detached(None)
        assert "of the runtime" in repr(none_ref) and none_ref.arena_id is None


def test_bad_input_is_refused_with_the_path() -> None:
    arena = Arena()
    with pytest.raises(NotShareableError, match=r"Arena.share_detached\(\): value\['k'\]\[1\] is a list"):
        arena.share_detached({"k": (1, [2])})
    with pytest.raises(TypeError):
        arena.share_detached()  # type: ignore[call-arg]
    arena.close()
    with pytest.raises(ValueError, match="closed"):
        arena.share_detached((1, 2))
    assert arena_info(arena.id)["holders"] == ()  # type: ignore[index]


def test_a_handle_refers_to_an_already_shared_value_as_is() -> None:
    with Arena() as other:
        inner = other.share(("already", "shared"))           # main holds `other`
        with Arena() as arena:
            ref = arena.share_detached(inner)
            assert ref.arena_id == other.id                  # no copy: named where it is


# ---- delivery: the receiver gets the object ---------------------------------------------


def test_delivered_through_sandbox_call(detached: Any) -> None:
    ref, arena_id = detached
    with Sandbox() as sb:
        kind, shared, total = sb.call(describe, ref)
        assert (kind, shared, total) == ("frozendict", True, checksum(subsandbox.share(VALUE)))
        assert arena_info(arena_id)["holders"] == (sb.id,)  # type: ignore[index]
        # in a container of arguments, by keyword too
        assert sb.call(lambda rows, *, more: (describe(rows[0])[0], describe(more)[0]),
                       (ref,), more=ref) == ("frozendict", "frozendict")


def test_delivered_through_a_channel(detached: Any) -> None:
    ref, arena_id = detached
    ch = Channel()
    ch.send(ref)
    ch.send((1, ref))
    with Sandbox() as sb:
        assert sb.call(receive_and_describe, ch)[:2] == ("frozendict", True)
        assert sb.call(receive_and_describe, ch)[0] == "tuple"
        assert arena_info(arena_id)["holders"] == (sb.id,)  # type: ignore[index]


def test_delivered_through_the_executor(detached: Any) -> None:
    ref, arena_id = detached
    with SandboxPoolExecutor(2) as ex:
        results = [f.result() for f in [ex.submit(describe, ref) for _ in range(4)]]
        assert all(r[:2] == ("frozendict", True) for r in results)
        assert main_id() not in arena_info(arena_id)["holders"]  # type: ignore[index]


def test_the_arena_is_freed_once_handles_and_receivers_are_gone() -> None:
    arena = Arena()
    ref = arena.share_detached(VALUE)
    arena_id = arena.id
    arena.close()
    del arena
    sandboxes = [Sandbox(), Sandbox()]
    for sb in sandboxes:
        assert sb.call(describe, ref)[1]
    assert sorted(arena_info(arena_id)["holders"]) == sorted(sb.id for sb in sandboxes)  # type: ignore[index]
    del ref
    gc.collect()
    assert arena_info(arena_id) is not None      # sandboxes can still read it
    sandboxes[0].close()
    assert arena_info(arena_id) is not None
    sandboxes[1].close()
    assert arena_info(arena_id) is None          # the memory went back


def test_the_handle_alone_keeps_the_arena() -> None:
    arena = Arena()
    ref = arena.share_detached(VALUE)
    arena_id = arena.id
    del arena                                    # no Arena handle, never received
    assert arena_info(arena_id) is not None
    with Sandbox() as sb:
        assert sb.call(describe, ref)[1]         # still readable where it arrives
    del ref
    assert arena_info(arena_id) is None


def test_received_back_in_main_main_becomes_a_holder(detached: Any) -> None:
    # Sound, and documented: what main receives it holds until it exits.
    ref, arena_id = detached
    ch = Channel()
    ch.send(ref)
    value = ch.recv()
    assert subsandbox.is_shared(value) and value["text"] == "Zürich"
    assert arena_info(arena_id)["holders"] == (main_id(),)  # type: ignore[index]
