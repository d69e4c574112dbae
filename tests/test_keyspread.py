"""_core.count_hashes: the caller's unpickler counts keys that share a hash with it."""

from __future__ import annotations

import pytest

from subsandbox import _core

M = 2**61 - 1  # ints k * M + c all hash to c


def test_a_hash_shared_by_more_keys_than_the_limit_is_reported_at_its_key() -> None:
    keys = [k * M + 7 for k in range(1, 6)]
    assert _core.count_hashes(keys[:4], set(), {}, 4) == -1
    assert _core.count_hashes(keys, set(), {}, 4) == 4


def test_the_count_carries_over_between_calls() -> None:
    seen: set[int] = set()
    repeats: dict[int, int] = {}
    assert _core.count_hashes([M + 7, 2 * M + 7], seen, repeats, 3) == -1
    assert repeats == {7: 2}
    assert _core.count_hashes([3 * M + 7, 4 * M + 7], seen, repeats, 3) == 1


def test_step_reads_every_other_item() -> None:
    # dict items as SETITEMS leaves them: key, value, key, value...
    items = [M + 7, 1, 2 * M + 7, 1, 3 * M + 7, 1]
    assert _core.count_hashes(items, set(), {}, 2, 2) == 4
    assert _core.count_hashes(items, set(), {}, 3, 2) == -1


def test_keys_no_one_can_make_collide_are_not_counted() -> None:
    seen: set[int] = set()
    assert _core.count_hashes(["a", b"b", 5, 2**60, -7], seen, {}, 1) == -1
    assert seen == set()
    # -1 hashes as -2; 2**61 - 1 as 0: counted, as are floats and tuples.
    assert _core.count_hashes([-1, M, 1.5, (1, 2)], seen, {}, 1) == -1
    assert seen == {-2, 0, hash(1.5), hash((1, 2))}


def test_unhashable_keys_are_skipped_and_other_errors_propagate() -> None:
    class Broken:
        def __hash__(self) -> int:
            raise RuntimeError("no hash")

    assert _core.count_hashes([[1], {}, (1, [2])], set(), {}, 1) == -1
    with pytest.raises(RuntimeError, match="no hash"):
        _core.count_hashes([Broken()], set(), {}, 1)


@pytest.mark.parametrize("args", [
    ((1, 2), set(), {}, 1, 0),       # step 0
    ({1, 2}, set(), {}, 1),          # keys not a list or tuple
    ([1], frozenset(), {}, 1),       # seen not a set
    ([1], set(), {}),                # no limit
])
def test_bad_arguments_are_refused(args: tuple[object, ...]) -> None:
    with pytest.raises((TypeError, ValueError)):
        _core.count_hashes(*args)  # type: ignore[arg-type]
