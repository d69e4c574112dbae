"""SandboxPoolExecutor against the standard executors, side by side in one pyperf run.

    python bench/bench_executor.py --fast -o executor.json      # then: pyperf stats ...

Benchmarks, each for every executor kind present:
- roundtrip/KIND:            submit(noop).result(), one at a time (latency of one task)
- map/KIND, map-chunked/KIND: list(map(noop, range(10_000))), chunksize 1 and 500
- nbody-N/KIND:              N n-body tasks on N workers, N = 1..usable CPUs
                             (parallel efficiency at N = time(1) / time(N))
- startup-N/KIND:            create a pool of N workers and get its first task's result

Kinds: thread (ThreadPoolExecutor), process-fork and process-forkserver
(ProcessPoolExecutor), interpreter (InterpreterPoolExecutor: the stdlib's on 3.14+, the
interpreters-pep-734 backport's on 3.13; none on 3.12), sandbox (SandboxPoolExecutor).
Quirks of the 3.13 backport's InterpreterPoolExecutor: it pickles the function and its
arguments for every task and runs each in a fresh ``exec`` of a small script, and it
cannot run functions defined in ``__main__`` (so every kernel lives in kernels.py).
ThreadPoolExecutor ignores chunksize. After the run, the ratios to the sandbox pool are
printed, from the values of this run only.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernels as _kernels  # noqa: E402
from harness import result_metadata  # noqa: E402

from subsandbox import SandboxPoolExecutor  # noqa: E402

MAP_ITEMS = 10_000
MAP_CHUNK = 500
NBODY_STEPS = 20_000


def _interpreter_pool() -> type[Executor] | None:
    try:
        from concurrent.futures import InterpreterPoolExecutor  # type: ignore[attr-defined]
        return InterpreterPoolExecutor  # type: ignore[no-any-return]
    except ImportError:
        pass
    try:
        from interpreters_backport.concurrent.futures.interpreter import (  # type: ignore
            InterpreterPoolExecutor,
        )
        return InterpreterPoolExecutor  # type: ignore[no-any-return]
    except ImportError:
        return None


def _kinds() -> dict[str, Callable[[int], Executor]]:
    kinds: dict[str, Callable[[int], Executor]] = {
        "thread": lambda n: ThreadPoolExecutor(n),
        "process-fork": lambda n: ProcessPoolExecutor(
            n, mp_context=multiprocessing.get_context("fork")),
        "process-forkserver": lambda n: ProcessPoolExecutor(
            n, mp_context=multiprocessing.get_context("forkserver")),
    }
    interpreter_pool = _interpreter_pool()
    if interpreter_pool is not None:
        kinds["interpreter"] = lambda n: interpreter_pool(n)
    kinds["sandbox"] = lambda n: SandboxPoolExecutor(n)
    return kinds


KINDS = _kinds()
_pools: dict[tuple[str, int], Executor] = {}


def _pool(kind: str, workers: int) -> Executor:
    """One warm pool per kind and size in each pyperf worker process (made in warmup)."""
    pool = _pools.get((kind, workers))
    if pool is None:
        pool = _pools[(kind, workers)] = KINDS[kind](workers)
        list(pool.map(_kernels.noop, range(workers * 4)))
    return pool


def roundtrip(loops: int, kind: str) -> float:
    pool = _pool(kind, 1)
    noop = _kernels.noop
    start = time.perf_counter()
    for _ in range(loops):
        pool.submit(noop, 1).result()
    return time.perf_counter() - start


def map_items(loops: int, kind: str, chunksize: int) -> float:
    pool = _pool(kind, os.cpu_count() or 1)
    items = range(MAP_ITEMS)
    start = time.perf_counter()
    for _ in range(loops):
        for _ in pool.map(_kernels.noop, items, chunksize=chunksize):
            pass
    return time.perf_counter() - start


def nbody(loops: int, kind: str, workers: int) -> float:
    pool = _pool(kind, workers)
    start = time.perf_counter()
    for _ in range(loops):
        list(pool.map(_kernels.nbody, [NBODY_STEPS] * workers))
    return time.perf_counter() - start


def startup(loops: int, kind: str, workers: int) -> float:
    total = 0.0
    for _ in range(loops):
        start = time.perf_counter()
        pool = KINDS[kind](workers)
        pool.submit(_kernels.noop, 1).result()
        total += time.perf_counter() - start
        pool.shutdown(wait=True)
    return total


def _report(results: dict[str, Any]) -> None:
    print("\nRatios in this run (other kind's mean time / sandbox's; > 1: sandbox faster)")
    groups: dict[str, dict[str, float]] = {}
    for name, bench in results.items():
        group, kind = name.rsplit("/", 1)
        groups.setdefault(group, {})[kind] = bench.mean()
    for group, by_kind in groups.items():
        ours = by_kind.get("sandbox")
        if not ours:
            continue
        ratios = ", ".join(f"{kind} {value / ours:.2f}x" for kind, value in by_kind.items()
                           if kind != "sandbox")
        print(f"  {group:16s} sandbox {ours * 1e6:10.1f} us   {ratios}")
    one = groups.get("nbody-1", {}).get("sandbox")
    for group, by_kind in groups.items():
        if group.startswith("nbody-") and one:
            n = int(group.split("-")[1])
            effs = ", ".join(f"{kind} {groups['nbody-1'][kind] / t:.2f}"
                             for kind, t in by_kind.items() if kind in groups["nbody-1"])
            print(f"  parallel efficiency at N={n}: {effs}")


def add_benchmarks(runner: pyperf.Runner, quick: bool) -> dict[str, Any]:
    """The suite, for ``python -m subsandbox bench`` (harness.py) and main(). ``quick``
    (a run of under two minutes): the round trip, chunked map and n-body at every usable
    CPU; the startup is bench_startup's, and main() runs everything."""
    runner.metadata["description"] = "SandboxPoolExecutor vs the standard executors"
    cpus = len(os.sched_getaffinity(0))
    results: dict[str, Any] = {}

    def run(name: str, func: Callable[..., float], *args: Any, inner: int = 1) -> None:
        # Every kind of pool in one group per measure, compared with the thread pool.
        group, kind = name.split("/")
        bench = runner.bench_time_func(name, func, *args, inner_loops=inner,
                                       metadata=result_metadata(
                                           f"executor {group}", baseline=kind == "thread"))
        if bench is not None:
            results[name] = bench

    for kind in KINDS:
        run(f"roundtrip/{kind}", roundtrip, kind)
    for kind in KINDS:
        if not quick:
            run(f"map/{kind}", map_items, kind, 1)
        run(f"map-chunked/{kind}", map_items, kind, MAP_CHUNK)
    for workers in [cpus] if quick else range(1, cpus + 1):
        for kind in KINDS:
            run(f"nbody-{workers}/{kind}", nbody, kind, workers)
    if not quick:
        for kind in KINDS:
            run(f"startup-{cpus}/{kind}", startup, kind, cpus)
    for pool in _pools.values():
        pool.shutdown(wait=True)
    _pools.clear()
    return results


def main() -> None:
    runner = pyperf.Runner()
    results = add_benchmarks(runner, quick=False)
    if results and not runner.args.worker:
        _report(results)


if __name__ == "__main__":
    main()
