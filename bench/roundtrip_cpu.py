"""Where a trivial round trip's time goes: CPU time per task of the submitting thread and
of the worker thread, SandboxPoolExecutor against ThreadPoolExecutor, side by side.

    python bench/roundtrip_cpu.py [tasks_per_block] [blocks]

On a shared machine the wall time of a round trip is mostly how soon the kernel runs
each woken thread, which other people's jobs decide; the CPU time each thread spends per
task (Python, the C core, and the futex calls of its sleeps and wake-ups) moves much
less with the load. Blocks of ``submit(noop, 1).result()`` alternate between the two
pools; each block's CPU time is read from the threads' own clocks
(``time.thread_time`` for this one, ``pthread_getcpuclockid`` for the worker), and the
block at the 10th percentile of total CPU is printed for each pool (the fastest blocks
are the least disturbed; the very fastest is one lucky sample).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernels  # noqa: E402

from subsandbox import SandboxPoolExecutor  # noqa: E402


def _worker_clocks(pool: Executor) -> list[int]:
    if isinstance(pool, ThreadPoolExecutor):
        threads = list(pool._threads)  # type: ignore[attr-defined]
    else:
        threads = list(pool._pool.threads)  # type: ignore[attr-defined]
    return [time.pthread_getcpuclockid(thread.ident) for thread in threads]  # type: ignore[arg-type]


def _block(pool: Executor, tasks: int) -> tuple[float, float, float]:
    """(submitter CPU, worker CPU, wall) per task, in microseconds."""
    noop = kernels.noop
    clocks = _worker_clocks(pool)
    worker0 = sum(time.clock_gettime(clock) for clock in clocks)
    main0, wall0 = time.thread_time(), time.perf_counter()
    for _ in range(tasks):
        pool.submit(noop, 1).result()
    wall1, main1 = time.perf_counter(), time.thread_time()
    worker1 = sum(time.clock_gettime(clock) for clock in clocks)
    return ((main1 - main0) / tasks * 1e6, (worker1 - worker0) / tasks * 1e6,
            (wall1 - wall0) / tasks * 1e6)


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    blocks = int(sys.argv[2]) if len(sys.argv) > 2 else 21
    pools: dict[str, Executor] = {"thread": ThreadPoolExecutor(1),
                                  "sandbox": SandboxPoolExecutor(1)}
    try:
        for pool in pools.values():
            list(pool.map(kernels.noop, range(8)))     # warm: worker up, function cached
        samples: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in pools}
        for _ in range(blocks):
            for kind, pool in pools.items():
                samples[kind].append(_block(pool, tasks))
        totals = {}
        print(f"CPU time per round trip, block at the 10th percentile of {blocks} blocks "
              f"of {tasks} tasks (Python {sys.version.split()[0]})")
        for kind, values in samples.items():
            values.sort(key=lambda sample: sample[0] + sample[1])
            main_cpu, worker_cpu, wall = values[len(values) // 10]
            totals[kind] = main_cpu + worker_cpu
            print(f"  {kind:8s} submitter {main_cpu:6.2f} us  worker {worker_cpu:6.2f} us  "
                  f"total {main_cpu + worker_cpu:6.2f} us  (that block's wall: {wall:.1f} us)")
        print(f"  sandbox / thread CPU: {totals['sandbox'] / totals['thread']:.3f}x")
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True)


if __name__ == "__main__":
    main()
