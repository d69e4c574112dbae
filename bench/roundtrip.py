"""The trivial-task round trip alone, SandboxPoolExecutor against ThreadPoolExecutor,
side by side in one pyperf run (the bench_executor suite runs it among its others):

    python bench/roundtrip.py -p 6 -n 5 -w 1 -o roundtrip.json

``submit(noop, 1).result()``, one at a time, on a warm pool of one worker. The ratio
printed at the end comes from this run's values only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_executor  # noqa: E402


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "trivial-task round trip: sandbox vs thread pool"
    means = {}
    for kind in ("thread", "sandbox"):
        bench = runner.bench_time_func(f"roundtrip/{kind}", bench_executor.roundtrip, kind)
        if bench is not None and not runner.args.worker:
            means[kind] = bench.mean()
    for pool in bench_executor._pools.values():
        pool.shutdown(wait=True)
    if len(means) == 2:
        print(f"\nsandbox / thread round trip: {means['sandbox'] / means['thread']:.3f}x")


if __name__ == "__main__":
    main()
