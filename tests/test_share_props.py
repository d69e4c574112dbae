"""Property tests of share(): any nested value of supported types shares to an equal
value of the same shape, and an unsupported value anywhere is reported at its path."""

import math
import os
import sys

from hypothesis import given, settings, strategies as st

from subsandbox._core import Arena, NotShareableError, is_shared, share  # noqa: E402


def _frozen_available():
    try:
        share({})
        return True
    except NotImplementedError:
        return False


FROZEN = _frozen_available()

text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)  # surrogates too
leaves = (
    st.none() | st.booleans()
    | st.integers() | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False) | st.complex_numbers(allow_nan=False)
    | text | st.sampled_from(["__add__", "__len__", "real", "", "é", "\U0001f600"])
    | st.binary(max_size=40)
)


def _containers(children):
    c = st.lists(children, max_size=6).map(tuple)
    if FROZEN:
        hashable = leaves.filter(lambda v: not isinstance(v, float) or not math.isnan(v))
        c = c | st.dictionaries(hashable, children, max_size=5) \
              | st.frozensets(hashable, max_size=5) | st.sets(hashable, max_size=5)
    return c


values = st.recursive(leaves, _containers, max_leaves=40)


def same_shape(a, b):
    if isinstance(a, tuple):
        return type(b) is tuple and len(a) == len(b) and all(map(same_shape, a, b))
    if isinstance(a, (dict, set, frozenset)):
        return a == b            # frozendict / immutableset compare equal to originals
    return type(a) is type(b) and (a == b or (a != a and b != b))


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_value_shares_to_an_equal_value(v):
    s = share(v)
    assert same_shape(v, s)
    assert is_shared(s)
    try:
        h = hash(v)
    except TypeError:
        pass
    else:
        assert hash(s) == h
    assert share(s) is s


@settings(max_examples=100, deadline=None)
@given(values)
def test_arena_share_is_equal_and_freed_arena_state_is_consistent(v):
    with Arena() as a:
        s = a.share(v)
        assert same_shape(v, s)


@settings(max_examples=300, deadline=None)
@given(st.recursive(leaves, lambda ch: st.lists(ch, max_size=5).map(tuple), max_leaves=30),
       st.data())
def test_unsupported_value_is_reported_at_its_path(v, data):
    bad = data.draw(st.sampled_from([
        ([1], "a list, which is mutable; use a tuple"),
        (bytearray(b"x"), "a bytearray, which is mutable; use bytes"),
        (object(), "an object, which cannot be shared"),
    ]))
    # Walk down v along random indices and put the bad value there.
    path = []
    node = v
    while isinstance(node, tuple) and node and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(node) - 1))
        path.append(i)
        node = node[i]

    def put(node, path):
        if not path:
            return bad[0]
        i = path[0]
        return node[:i] + (put(node[i], path[1:]),) + node[i + 1:]

    value = put(v, path)
    where = "value" + "".join(f"[{i}]" for i in path)
    try:
        share(value)
    except NotShareableError as e:
        assert str(e).startswith(f"share(): {where} is {bad[1]}"), str(e)
    else:
        raise AssertionError("share() accepted an unsupported value")
