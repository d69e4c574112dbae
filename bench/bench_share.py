"""share() against pickle, for realistic data of 1 KB, 1 MB and 100 MB (pyperf).

    python bench/bench_share.py -o share.json            # everything (long: 100 MB sets)
    python bench/bench_share.py --sizes 1KB,1MB --fast   # a quick look
    python bench/bench_share.py --measure share,pickle --clock cpu   # on a loaded machine
    python -m pyperf compare_to ...                      # pyperf's own tools work on -o

Per data set (bench/_share_data.py: a table of rows, a corpus of strings, a mapping that
becomes a frozendict of up to 1M entries) it measures, in one run:

  share        Arena().share(data), in the main interpreter: a fresh arena each time, so
               its fixed cost (mapping its first block) is counted and no string is in its
               memo yet
  share-freed  Arena().share_detached(data), then the handle dropped and the arena closed,
               so the arena is given back at once and the next one reuses its memory:
               what a program pays per value in the steady state of sharing values and
               letting them go, the giving back included (share's figure pays for memory
               no one used before)
  share-dflt   share(data) into the process's default arena, already in use, of a variant
               of the data whose strings it does not hold yet (bench/_share_data.py): what
               a program that shares values one after another pays per value
  share-new    as share-freed, but each time a new variant of the data, as share-dflt
               gets: share()'s own work on new data, into memory that was used before;
               compared with pickle-fresh, it sets share()'s work against pickle's on the
               same new data, with no fresh memory on either side
  fresh-mem    the new memory under share, alone: populating as many bytes of memory
               this process never used as a fresh arena allocates for the value, in pages
               of the kind the arena uses (4 KiB up to 64 KiB, huge pages beyond), in bulk
               (MADV_POPULATE_WRITE, one call per block of values), and nothing else.
               share() into new memory pays this besides its work; where it alone exceeds
               pickle, no code of share() can meet pickle with these objects and pages
  pickle       pickle.dumps(data): the cost of the usual way to hand data over
  pickle-fresh pickle.dumps() of a variant made just before, as share-dflt gets: the
               same value timed again (pickle) has the UTF-8 form of its non-ASCII
               strings cached in them since the first call, which pickle then copies;
               new data has not, and share-dflt is compared with this one
  send         Sandbox.call(noop, shared_data), minus send-none (the same call with None):
               what passing the shared value adds to a call; the target is <= 2 us
  cross        the same, without the switch between threads (pickling with the shared
               value set aside, a channel, unpickling): the same extra cost, less noise
  copy         pickle.loads(pickle.dumps(data)): what sending a copy costs instead,
               without even counting the transport
  read-shared  reading all of the shared data inside a sandbox (table: sum of the
               rows; corpus: len and count; mapping: a lookup of every key with equal
               keys of the sandbox's own, in scattered order)
  read-local   the same reading of a local copy built inside the same sandbox

and prints a table of the medians side by side with the targets: share no slower than
pickle, send <= 2 us, read-shared within 5% of read-local.

Every benchmark runs in pyperf worker processes. The main interpreter is a holder of
every arena it shares into (docs/shared-memory.md), so the arenas of the share benchmark
live until that worker process exits: 100 MB values use few loops.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import sys
import time
from typing import Any, Callable

import pyperf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _share_data as data  # noqa: E402
from harness import result_metadata  # noqa: E402

import subsandbox  # noqa: E402

# Built lazily: a pyperf worker process runs one benchmark and builds only its data.
_plain: dict[tuple[str, str], Any] = {}
_shared: dict[tuple[str, str], Any] = {}
_sandbox: list[subsandbox.Sandbox] = []
# --clock: wall (perf_counter, the default) or cpu (thread_time: the CPU time of the
# timing thread, which other processes on a loaded machine disturb much less). Only for
# what runs in one thread: share, pickle, copy, and the reading inside the sandbox.
_clock: list[Any] = [time.perf_counter]
_clock_name: list[str] = ["wall"]


def plain(kind: str, size: str) -> Any:
    if (kind, size) not in _plain:
        _plain[(kind, size)] = data.make(kind, size)
    return _plain[(kind, size)]


def shared(kind: str, size: str) -> Any:
    if (kind, size) not in _shared:
        _shared[(kind, size)] = subsandbox.share(plain(kind, size))
    return _shared[(kind, size)]


def sandbox() -> subsandbox.Sandbox:
    if not _sandbox:
        _sandbox.append(subsandbox.Sandbox())
    return _sandbox[0]


# -- the timed functions (pyperf's bench_time_func: take loops, return seconds) ---------
#
# No clock is read around each call of a 1 KB value: with --clock cpu each read is a
# system call (thread_time: ~0.48 us on this VM, against ~0.05 us for perf_counter), and
# the interval between two reads holds one whole read. Timed per call, share() of the
# 1 KB corpus measured 1.04 us where the same calls timed in one block took 0.48 us, and
# pickle.dumps(), always timed in one block, was charged nothing of the kind. So every
# benchmark below times blocks of calls, as time_pickle does; what a block needs made
# (arenas, new variants) is made before its clock starts.

# Calls per timed block: enough that two clock reads are noise against the block; the
# objects made for a block (arenas, variants of the data) stay in the CPU's caches.
_BLOCK = {"1KB": 64, "1MB": 1, "100MB": 1}


def _blocks(loops: int, size: str) -> list[int]:
    """``loops`` cut into blocks of at most _BLOCK[size] calls."""
    step = _BLOCK[size]
    return [min(step, loops - start) for start in range(0, loops, step)]


def time_share(loops: int, kind: str, size: str) -> float:
    value = plain(kind, size)
    clock = _clock[0]
    total = 0.0
    for n in _blocks(loops, size):
        arenas = [subsandbox.Arena() for _ in range(n)]   # fresh: no string stored yet
        t0 = clock()
        for arena in arenas:
            arena.share(value)
        total += clock() - t0
        for arena in arenas:
            arena.close()
    return total


def _time_shared_and_given_back(loops: int, size: str,
                                values_for: Callable[[int], list[Any]]) -> float:
    """The steady state of sharing values and letting them go: a block of (Arena(),
    share_detached, drop the handle, close) over ``values_for(n)`` (made before the clock)
    minus a block of (Arena(), close) timed right after it. So giving the arena back,
    which zeroes the memory the value used and keeps it for the next arena, is counted
    with share(); making and closing an empty arena is not (~0.13 us here)."""
    clock, new_arena = _clock[0], subsandbox.Arena
    total = 0.0
    for n in _blocks(loops, size):
        values = values_for(n)
        t0 = clock()
        for value in values:
            arena = new_arena()
            arena.share_detached(value)     # the handle is dropped at once: no holder
            arena.close()                   # given back: the next arena reuses it
        t1 = clock()
        for _ in range(n):
            arena = new_arena()
            arena.close()
        total += (t1 - t0) - (clock() - t1)
        del values
    return total


def time_share_freed(loops: int, kind: str, size: str) -> float:
    value = plain(kind, size)
    return _time_shared_and_given_back(loops, size, lambda n: [value] * n)


def time_share_new(loops: int, kind: str, size: str) -> float:
    return _time_shared_and_given_back(loops, size,
                                       lambda n: _new_variants(kind, size, n))


_next_variant = [1]


def _new_variants(kind: str, size: str, n: int) -> list[Any]:
    """``n`` variants of the data that no earlier call made (bench/_share_data.py)."""
    first = _next_variant[0]
    _next_variant[0] += n
    return [data.make(kind, size, variant) for variant in range(first, first + n)]


def _time_on_new_variants(loops: int, kind: str, size: str, func: Any, *args: Any) -> float:
    """Seconds of ``func(value, *args)`` summed over ``loops`` new variants of the data,
    made a block at a time just before the block's clock starts (as warm in the caches as
    pickle's value) and new to every cache: no string of them has a hash, a UTF-8 form or
    a copy in the default arena."""
    clock = _clock[0]
    total = 0.0
    for n in _blocks(loops, size):
        values = _new_variants(kind, size, n)
        t0 = clock()
        for value in values:
            func(value, *args)
        total += clock() - t0
        del values
    return total


def time_share_default(loops: int, kind: str, size: str) -> float:
    # Each variant is shared once, then dropped: the arena keeps its copy for the life of
    # the process.
    subsandbox.share(data.make(kind, "1KB", 0))    # the default arena exists, has a block
    return _time_on_new_variants(loops, kind, size, subsandbox.share)


# mmap does not name it: Linux 5.14+ (the arena falls back to page faults without it).
_MADV_POPULATE_WRITE = 23
_HUGE = 2 << 20             # the arena's mapped blocks: transparent huge pages, aligned
_SLOT_MAX = 64 << 10        # up to this an arena takes slots of 4 KiB pages (arena.c)
_fresh_memory: dict[tuple[str, str], tuple[int, bool]] = {}
# The memory the fresh-mem benchmark populated stays mapped until the worker exits, as
# the share benchmark's arenas stay: each timing gets memory this process never used.
_kept_mappings: list[mmap.mmap] = []


def fresh_memory(kind: str, size: str) -> tuple[int, bool]:
    """What a fresh arena takes from the system for the value: the bytes share()
    allocates (Arena.nbytes) rounded up to whole pages, and whether its blocks are of
    huge pages (mapped blocks, past a slot's 64 KiB) rather than 4 KiB ones."""
    if (kind, size) not in _fresh_memory:
        arena = subsandbox.Arena()
        ref = arena.share_detached(plain(kind, size))
        page = mmap.PAGESIZE
        nbytes = (arena.nbytes + page - 1) // page * page
        _fresh_memory[(kind, size)] = (nbytes, nbytes > _SLOT_MAX)
        del ref
        arena.close()
    return _fresh_memory[(kind, size)]


def _new_memory(nbytes: int, huge: bool) -> tuple[mmap.mmap, int]:
    """A private mapping this process never touched, and where in it ``nbytes`` start;
    for ``huge``, aligned and advised as the arena's blocks are."""
    if not huge:
        return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE), 0
    mapping = mmap.mmap(-1, nbytes + _HUGE, flags=mmap.MAP_PRIVATE)
    view = ctypes.c_char.from_buffer(mapping)
    start = -ctypes.addressof(view) % _HUGE
    del view                # the buffer export: the mapping could not be closed with it
    advice = getattr(mmap, "MADV_HUGEPAGE", None)   # Linux only, as the arena's advice
    if advice is not None:
        try:
            mapping.madvise(advice, start, nbytes)
        except OSError:     # a kernel without transparent huge pages: a hint, as in arena.c
            pass
    return mapping, start


def _populate(mapping: mmap.mmap, start: int, nbytes: int) -> None:
    try:
        mapping.madvise(_MADV_POPULATE_WRITE, start, nbytes)
    except OSError:             # an older kernel: one write per page faults them in
        for offset in range(start, start + nbytes, mmap.PAGESIZE):
            mapping[offset] = 0


def time_fresh_mem(loops: int, kind: str, size: str) -> float:
    """The new memory under share() into a fresh arena, alone: populating
    fresh_memory() bytes per value, in pages of the kind the arena would use, a block of
    values at a time in one call (the arena populates 64 KiB or 2 MiB at a time), and
    doing nothing else."""
    nbytes, huge = fresh_memory(kind, size)
    clock = _clock[0]
    total = 0.0
    for n in _blocks(loops, size):
        mapping, start = _new_memory(n * nbytes, huge)
        _kept_mappings.append(mapping)
        t0 = clock()
        _populate(mapping, start, n * nbytes)
        total += clock() - t0
    return total


def time_pickle(loops: int, kind: str, size: str) -> float:
    value = plain(kind, size)
    dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
    t0 = _clock[0]()
    for _ in range(loops):
        dumps(value, protocol)
    return _clock[0]() - t0


def time_pickle_fresh(loops: int, kind: str, size: str) -> float:
    # The counterpart of time_share_default: pickle makes (and caches) the UTF-8 form of
    # each new string, as share() makes its own.
    return _time_on_new_variants(loops, kind, size, pickle.dumps, pickle.HIGHEST_PROTOCOL)


def time_copy(loops: int, kind: str, size: str) -> float:
    value = plain(kind, size)
    dumps, loads, protocol = pickle.dumps, pickle.loads, pickle.HIGHEST_PROTOCOL
    t0 = _clock[0]()
    for _ in range(loops):
        loads(dumps(value, protocol))
    return _clock[0]() - t0


def time_send(loops: int, kind: str | None, size: str | None) -> float:
    value = None if kind is None else shared(kind, size)  # type: ignore[arg-type]
    call, noop = sandbox().call, data.noop
    call(noop, value)
    t0 = time.perf_counter()
    for _ in range(loops):
        call(noop, value)
    return time.perf_counter() - t0


def time_cross(loops: int, kind: str | None, size: str | None) -> float:
    """What Sandbox.call does with its arguments, minus the switch between threads
    (_share_data.time_crossings). Stable enough to show a cost of 1 us."""
    value = None if kind is None else shared(kind, size)  # type: ignore[arg-type]
    return data.time_crossings(value, loops)


def time_read(loops: int, kind: str, size: str, where: str) -> float:
    value = shared(kind, size) if where == "shared" else None
    return sandbox().call(data.time_read, kind, size, value, loops,  # type: ignore[no-any-return]
                          _clock_name[0])


# -- the runner ----------------------------------------------------------------------------

# The send-cost plot's x axis: each data set is built so that its pickle is about this big.
PAYLOAD_BYTES = {"1KB": 1 << 10, "1MB": 1 << 20, "100MB": 100 << 20}

# What --measure can select; the table shows the columns whose benchmarks ran.
MEASURES = ("share", "pickle", "copy", "send", "read")


def add_arguments(cmd: Any, args: Any) -> None:
    cmd.extend(("--sizes", args.sizes, "--kinds", args.kinds, "--measure", args.measure,
                "--clock", args.clock))


def add_benchmarks(runner: pyperf.Runner, quick: bool) -> None:
    """The suite, for ``python -m subsandbox bench`` (harness.py): every measure of the
    table, kind and size; ``quick`` (under two minutes): the 1 MB table, share against
    pickle, send and read (the 100 MB sets alone take minutes: run main() for them)."""
    if quick:
        _register(runner, set(MEASURES), ["1KB", "1MB"], ["table"])
    else:
        _register(runner, set(MEASURES), list(data.SIZES), list(data.KINDS))


def _register(runner: pyperf.Runner, measures: set[str], sizes: list[str],
              kinds: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def add(name: str, func: Any, *fargs: Any, metadata: dict[str, str]) -> None:
        # pyperf calibrates the loops: a 100 MB value gets one loop per timing.
        results[name] = runner.bench_time_func(name, func, *fargs, metadata=metadata)

    if "send" in measures:
        add("send-none", time_send, None, None,
            metadata=result_metadata("share: a call with None", baseline=True))
        add("cross-none", time_cross, None, None,
            metadata=result_metadata("share: a call with None"))
    for size in sizes:
        for kind in kinds:
            tag = f"{kind}-{size}"
            # The groups the report compares side by side (ratios: baseline / value, so
            # above 1 is faster than the baseline) and the send-cost plot's lines.
            made = f"share: making {tag}"       # share() against pickle.dumps()
            sent = f"share: sending {tag}"      # a shared value against a pickled copy
            read = f"share: reading {tag}"      # shared against a local copy
            payload = PAYLOAD_BYTES[size]
            if "share" in measures:
                add(f"share-{tag}", time_share, kind, size, metadata=result_metadata(made))
                add(f"share-freed-{tag}", time_share_freed, kind, size,
                    metadata=result_metadata(made, note="arenas given back and reused"))
                add(f"share-dflt-{tag}", time_share_default, kind, size,
                    metadata=result_metadata(made, note="into the default arena"))
                add(f"share-new-{tag}", time_share_new, kind, size,
                    metadata=result_metadata(made, note="new data, memory reused"))
                add(f"fresh-mem-{tag}", time_fresh_mem, kind, size,
                    metadata=result_metadata(made, note="its new memory alone"))
            if "pickle" in measures:
                add(f"pickle-{tag}", time_pickle, kind, size,
                    metadata=result_metadata(made, baseline=True))
                add(f"pickle-fresh-{tag}", time_pickle_fresh, kind, size,
                    metadata=result_metadata(made, note="new data each time"))
            if "copy" in measures:
                add(f"copy-{tag}", time_copy, kind, size, metadata=result_metadata(
                    sent, baseline=True, method=f"pickle copy ({kind})",
                    payload_bytes=payload))
            if "send" in measures:
                add(f"send-{tag}", time_send, kind, size, metadata=result_metadata(
                    sent, method=f"Sandbox.call, shared value ({kind})",
                    payload_bytes=payload))
                add(f"cross-{tag}", time_cross, kind, size, metadata=result_metadata(
                    sent, note="the call's crossing without the thread switch"))
            if "read" in measures:
                add(f"read-shared-{tag}", time_read, kind, size, "shared",
                    metadata=result_metadata(read))
                add(f"read-local-{tag}", time_read, kind, size, "local",
                    metadata=result_metadata(read, baseline=True))

    return results


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=add_arguments, processes=6, values=3, warmups=1)
    runner.argparser.add_argument("--sizes", default=",".join(data.SIZES),
                                  help="comma-separated sizes among " + ", ".join(data.SIZES))
    runner.argparser.add_argument("--kinds", default=",".join(data.KINDS),
                                  help="comma-separated kinds among " + ", ".join(data.KINDS))
    runner.argparser.add_argument("--measure", default=",".join(MEASURES),
                                  help="comma-separated, among " + ", ".join(MEASURES)
                                  + " (send includes cross; share includes share-freed, share-dflt,"
                                  " share-new and fresh-mem;"
                                  " pickle includes pickle-fresh)")
    runner.argparser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                                  help="cpu: time share/pickle/copy/read with the timing "
                                  "thread's CPU time (send is always wall-clock)")
    args = runner.parse_args()
    if args.clock == "cpu":
        _clock[0], _clock_name[0] = time.thread_time, "cpu"
    measures = {m for m in args.measure.split(",") if m}
    for m in measures:
        if m not in MEASURES:
            raise SystemExit(f"unknown measure {m!r}: use {', '.join(MEASURES)}")
    sizes = [s for s in args.sizes.split(",") if s]
    kinds = [k for k in args.kinds.split(",") if k]
    for s in sizes:
        if s not in data.SIZES:
            raise SystemExit(f"unknown size {s!r}: use {', '.join(data.SIZES)}")
    for k in kinds:
        if k not in data.KINDS:
            raise SystemExit(f"unknown kind {k!r}: use {', '.join(data.KINDS)}")

    results = _register(runner, measures, sizes, kinds)
    if runner.args.worker or any(r is None for r in results.values()):
        return
    print_table(results, kinds, sizes)


def _median(results: dict[str, Any], name: str) -> float | None:
    bench = results.get(name)
    return None if bench is None else float(bench.median())


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _ratio(a: float | None, b: float | None, width: int, digits: int = 2) -> str:
    return f"{a / b:>{width}.{digits}f}" if a is not None and b is not None else f"{'-':>{width}}"


def _extra_us(a: float | None, b: float | None) -> str:
    return f"{(a - b) * 1e6:>6.2f}us" if a is not None and b is not None else f"{'-':>8}"


def print_table(results: dict[str, Any], kinds: list[str], sizes: list[str]) -> None:
    none = _median(results, "send-none")
    cross_none = _median(results, "cross-none")
    print()
    print(f"Python {sys.version.split()[0]}; clock: {_clock_name[0]}; "
          f"Sandbox.call(noop, None) = {_fmt(none)}; "
          f"its argument path without the thread switch = {_fmt(cross_none)}")
    header = (f"{'data':16} {'share':>9} {'pickle':>9} {'share/pk':>8} {'freed/pk':>8} "
              f"{'dflt/pk':>7} {'dflt/pkf':>8} {'new/pkf':>7} {'mem/pk':>6} "
              f"{'send+':>8} {'cross+':>8} "
              f"{'copy':>9} {'read-sh':>9} {'read-loc':>9} {'sh/loc':>7}")
    print(header)
    print("-" * len(header))
    for size in sizes:
        for kind in kinds:
            tag = f"{kind}-{size}"
            share_t, pickle_t = _median(results, f"share-{tag}"), _median(results, f"pickle-{tag}")
            dflt_t = _median(results, f"share-dflt-{tag}")
            freed_t = _median(results, f"share-freed-{tag}")
            fresh_t = _median(results, f"pickle-fresh-{tag}")
            new_t = _median(results, f"share-new-{tag}")
            mem_t = _median(results, f"fresh-mem-{tag}")
            rs = _median(results, f"read-shared-{tag}")
            rl = _median(results, f"read-local-{tag}")
            print(f"{tag:16} {_fmt(share_t):>9} {_fmt(pickle_t):>9} "
                  f"{_ratio(share_t, pickle_t, 8)} {_ratio(freed_t, pickle_t, 8)} "
                  f"{_ratio(dflt_t, pickle_t, 7)} {_ratio(dflt_t, fresh_t, 8)} "
                  f"{_ratio(new_t, fresh_t, 7)} {_ratio(mem_t, pickle_t, 6)} "
                  f"{_extra_us(_median(results, f'send-{tag}'), none)} "
                  f"{_extra_us(_median(results, f'cross-{tag}'), cross_none)} "
                  f"{_fmt(_median(results, f'copy-{tag}')):>9} {_fmt(rs):>9} {_fmt(rl):>9} "
                  f"{_ratio(rs, rl, 7, 3)}")
    print("targets: share/pk (and freed/pk, dflt/pk, dflt/pkf and new/pkf: share() of new "
          "data against pickle of new data) <= 1.00; send+ (and cross+) <= 2 us; "
          "sh/loc <= 1.05")
    print("mem/pk: the new memory a fresh arena's objects need, populated and nothing "
          "else, against pickle; above 1, share() into new memory cannot meet pickle here")


if __name__ == "__main__":
    main()
