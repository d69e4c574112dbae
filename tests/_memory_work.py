"""The workload of the memory test (tests/test_memory.py), run as a script in a fresh process.

Each cycle makes an ``Arena`` in the main interpreter and two sandboxes. Sandbox A builds
a table of about ``megabytes`` MB (rows of str/int/float), shares it into the arena chunk
by chunk and sends the root through a channel; sandbox B receives it and reads all of it.
Then everything closes. The main interpreter never receives an object of the arena (only
ints come back), so by the rule of docs/shared-memory.md the arena must be gone once both
sandboxes are destroyed and the handle is dropped.

The control run does exactly the same churn (same sandboxes, same rows built in A, same
calls) except that nothing is shared: the difference between the two RSS curves is what
the arenas keep. Destroying an interpreter keeps a few MiB in CPython itself
(gh-110411), the same in both runs. The "pinned" run is the negative control: the main
interpreter also receives the table, becomes a holder, and every arena must stay.

The "detached" run is the common case of ``Arena.share_detached``: the main interpreter
builds the table and shares it detached, A and B each read it through the ``SharedRef``;
its control ("detached-control") builds the same rows in main and shares nothing.

    python _memory_work.py CYCLES MEGABYTES share|control|pinned|detached|detached-control

prints one JSON object: RSS (MiB) after each cycle, arena statistics, timings.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

import subsandbox
from subsandbox import _core

ROWS_PER_CHUNK = 4096


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _chunk(c: int) -> tuple[tuple[Any, ...], ...]:
    base = c * ROWS_PER_CHUNK
    return tuple(
        (f"customer-{base + i:08d}", f"Zürich – {i % 1000}", (base + i) * 10**12, (base + i) * 0.5)
        for i in range(ROWS_PER_CHUNK)
    )


def _checksum(table: Any) -> int:
    total = 0
    for chunk in table:
        for name, city, big, value in chunk:
            total += len(name) + len(city) + big % 1000 + int(value)
    return total


def build_and_send(arena: Any, channel: Any, megabytes: float, copies: int = 1
                   ) -> tuple[int, int, int]:
    """Sandbox A: build the table chunk by chunk (A's own heap stays small), share it,
    send the root to B (``copies`` times). Returns (checksum, arena bytes, chunks)."""
    chunks = []
    while arena.nbytes < megabytes * 2**20:
        chunks.append(arena.share(_chunk(len(chunks))))
    table = arena.share(tuple(chunks))  # the chunks are shared already: reused, not copied
    for _ in range(copies):
        channel.send(table)
    return _checksum(table), arena.nbytes, len(chunks)


def build_only(nchunks: int) -> int:
    """Control for sandbox A: the same rows, built and read, nothing shared."""
    return sum(_checksum((_chunk(c),)) for c in range(nchunks))


def receive_and_read(channel: Any) -> int:
    """Sandbox B: read every row of the shared table."""
    return _checksum(channel.recv())


def nothing() -> int:
    return 0


_pinned: list[Any] = []


def _chunks_for(megabytes: float) -> int:
    """How many chunks a share run puts in an arena of ``megabytes`` (asked of a sandbox
    once, so the control builds exactly as many rows)."""
    if megabytes not in _chunk_counts:
        channel = subsandbox.Channel()
        with subsandbox.Sandbox() as sb:
            arena = subsandbox.Arena()
            _chunk_counts[megabytes] = sb.call(build_and_send, arena, channel, megabytes)[2]
            arena.close()
        channel.close()
    return _chunk_counts[megabytes]


_chunk_counts: dict[float, int] = {}


def one_cycle(megabytes: float, mode: str) -> dict[str, Any]:
    channel = subsandbox.Channel()
    a, b = subsandbox.Sandbox(), subsandbox.Sandbox()
    try:
        if mode in ("share", "pinned"):
            arena = subsandbox.Arena()
            arena_id = arena.id
            pinned = mode == "pinned"
            made, nbytes, _ = a.call(build_and_send, arena, channel, megabytes, 1 + pinned)
            arena.close()
            del arena
            read = b.call(receive_and_read, channel)
            assert made == read, (made, read)
            if pinned:
                # The negative control: the main interpreter receives the table, so it
                # becomes a holder until it exits and the arena must stay.
                _pinned.append(channel.recv())
            alive_while_used = arena_id in _core._arena_stats()["arenas"]
        elif mode == "detached":
            # Main prepares the table and shares it with Arena.share_detached: it never
            # holds the arena, so the arena must go with the handle and the two readers.
            table = tuple(_chunk(c) for c in range(_chunks_for(megabytes)))
            expected = _checksum(table)
            arena = subsandbox.Arena()
            arena_id = arena.id
            ref = arena.share_detached(table)
            nbytes = arena.nbytes
            del table
            arena.close()
            del arena
            read_a, read_b = a.call(_checksum, ref), b.call(_checksum, ref)
            assert expected == read_a == read_b, (expected, read_a, read_b)
            del ref
            gc.collect()
            alive_while_used = arena_id in _core._arena_stats()["arenas"]  # A and B hold it
        elif mode == "detached-control":
            # The same work without sharing: main builds and drops the rows, A and B run.
            table = tuple(_chunk(c) for c in range(_chunks_for(megabytes)))
            _checksum(table)
            del table
            a.call(nothing)
            b.call(nothing)
            arena_id, nbytes, alive_while_used = None, 0, True
        else:
            a.call(build_only, _chunks_for(megabytes))
            b.call(nothing)
            arena_id, nbytes, alive_while_used = None, 0, True
    finally:
        a.close()
        b.close()
        channel.close()
    gc.collect()
    return {"arena_id": arena_id, "nbytes": nbytes, "alive_while_used": alive_while_used}


def run(cycles: int, megabytes: float, mode: str) -> dict[str, Any]:
    before = _core._arena_stats()
    rss = [rss_mib()]
    nbytes: list[int] = []
    leftover: list[int] = []
    alive_while_used = True
    start = time.perf_counter()
    for _ in range(cycles):
        cycle = one_cycle(megabytes, mode)
        nbytes.append(cycle["nbytes"])
        alive_while_used &= cycle["alive_while_used"]
        if cycle["arena_id"] is not None and cycle["arena_id"] in _core._arena_stats()["arenas"]:
            leftover.append(cycle["arena_id"])
        rss.append(rss_mib())
    after = _core._arena_stats()
    return {
        "rss_mib": rss,
        "arena_nbytes": nbytes,
        "arenas_left": leftover,
        "alive_while_used": alive_while_used,
        "live_arenas_before": before["live_arenas"],
        "live_arenas_after": after["live_arenas"],
        "bytes_reserved_before": before["bytes_reserved"],
        "bytes_reserved_after": after["bytes_reserved"],
        "seconds": time.perf_counter() - start,
    }


if __name__ == "__main__":
    cycles, megabytes, mode = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    modes = ("share", "control", "pinned", "detached", "detached-control")
    if mode not in modes:
        raise SystemExit(f"mode must be one of {', '.join(modes)}, not {mode!r}")
    print(json.dumps(run(cycles, megabytes, mode)))
