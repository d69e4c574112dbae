"""Data sets and timed loops of bench/bench_share.py, importable by the sandboxes.

Three kinds of realistic data, each at three sizes (about 1 KB, 1 MB and 100 MB of pickle):
  table    a tuple of rows (name: str, count: int, price: float)
  corpus   a tuple of sentences, some non-ASCII
  mapping  a dict of str keys to (int, float) rows; becomes a frozendict when shared;
           1,000,000 entries at the largest size

The timed loops run inside a sandbox and return seconds, so the sandbox's own clock
measures the sandbox's own reading.
"""

from __future__ import annotations

import time
from typing import Any

KINDS = ("table", "corpus", "mapping")
SIZES = ("1KB", "1MB", "100MB")
# Items per size, chosen so that pickle.dumps() of each kind is close to the size.
_ITEMS = {
    "table": {"1KB": 36, "1MB": 36_000, "100MB": 3_600_000},
    "corpus": {"1KB": 12, "1MB": 12_000, "100MB": 1_200_000},
    "mapping": {"1KB": 30, "1MB": 30_000, "100MB": 1_000_000},
}
_WORDS = ("alpha", "beta", "gamma", "delta", "naïve", "café", "Straße", "données", "数据",
          "αβγ", "subinterpreter", "immutable", "shared", "memory", "arena", "zero-copy")


def items(kind: str, size: str) -> int:
    return _ITEMS[kind][size]


def make(kind: str, size: str, variant: int = 0) -> Any:
    """A fresh, non-shared data set: new objects at every call.

    Another ``variant`` has the same shape and sizes but strings of its own (no string of
    one variant equals a string of another), so that sharing it into an arena that holds
    other variants finds nothing in the arena's string memo."""
    n = _ITEMS[kind][size]
    v = variant * n
    if kind == "table":
        return tuple((f"customer-{(i + v) % 10**8:08d}", i * 7 % 100_003, i * 0.25 + 0.01)
                     for i in range(n))
    if kind == "corpus":
        w = _WORDS
        return tuple(" ".join((w[i % 16], w[i * 7 % 16], w[i * 11 % 16], w[i * 13 % 16],
                               str(i + v), w[i * 3 % 16], w[i * 5 % 16], w[(i + 9) % 16]))
                     for i in range(n))
    if kind == "mapping":
        return {f"key-{(i + v) % 10**8:08d}": (i, i * 0.5) for i in range(n)}
    raise ValueError(f"unknown kind {kind!r}: use one of {KINDS}")


def probe_keys(kind: str, size: str) -> list[str] | None:
    """For mappings: every key, as new str objects (equal to, never the same as, the
    keys inside the mapping), in a scattered order."""
    if kind != "mapping":
        return None
    n = _ITEMS[kind][size]
    step = 7919 if n > 7919 else 1
    return [f"key-{i * step % n:08d}" for i in range(n)]


def read(kind: str, data: Any, keys: list[str] | None) -> float:
    """Read all of ``data`` once; returns a checksum so nothing is optimised away."""
    total = 0.0
    if kind == "table":
        for name, count, price in data:
            total += count + price + len(name)
    elif kind == "corpus":
        for text in data:
            total += len(text) + text.count("a")
    else:
        assert keys is not None
        for key in keys:
            count, price = data[key]
            total += count + price
    return total


# Built in the sandbox once per process: the local copy that shared data is compared with.
_local: dict[tuple[str, str], Any] = {}


def time_read(kind: str, size: str, shared: Any, loops: int, clock: str = "wall") -> float:
    """Seconds to read ``shared`` ``loops`` times (or the local copy, when None), by the
    wall clock or the reading thread's CPU time (``clock="cpu"``)."""
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    data = shared
    if data is None:
        if (kind, size) not in _local:
            _local[(kind, size)] = make(kind, size)
        data = _local[(kind, size)]
    keys = probe_keys(kind, size)
    read(kind, data, keys)  # warm: the first pass pays for page faults and caches
    t0 = timer()
    for _ in range(loops):
        read(kind, data, keys)
    return timer() - t0


def noop(value: Any) -> None:
    """The sandbox's side of the send benchmark: receives the argument, does nothing."""
    return None


def time_crossings(value: Any, loops: int, timer: Any = time.perf_counter) -> float:
    """Seconds (by ``timer``) for ``loops`` times what Sandbox.call does with its
    arguments, without the switch between threads: pickle (noop, (value,), {}) with shared
    objects set aside, put the request through a channel, take it out, unpickle."""
    import subsandbox
    from subsandbox import _crossing

    channel = subsandbox.Channel()
    dumps, loads = _crossing.dumps, _crossing.loads
    send, recv = channel.send, channel.recv
    t0 = timer()
    for _ in range(loops):
        payload, refs = dumps((noop, (value,), {}), "bench")
        send(("call", 1, payload, refs))
        _, _, payload, refs = recv()
        loads(payload, refs)
    return timer() - t0
