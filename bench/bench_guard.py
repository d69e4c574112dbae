#!/usr/bin/env python3
"""How long ``subsandbox.guard.check()`` takes (issue #4: "well under a millisecond").

    python bench/bench_guard.py [pyperf options, e.g. --fast]

Measured in the main interpreter and inside a sandbox (where it also reads the
interpreter's PEP 684 config), which is where every sandbox runs it once at start.
"""

from __future__ import annotations

import os
import sys

import pyperf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import result_metadata  # noqa: E402

from subsandbox import Sandbox, guard  # noqa: E402


def time_check_inside(loops: int) -> float:
    import time

    from subsandbox import guard

    start = time.perf_counter()
    for _ in range(loops):
        guard.check()
    return time.perf_counter() - start


_sandbox: list[Sandbox] = []


def check_in_sandbox(loops: int) -> float:
    if not _sandbox:
        _sandbox.append(Sandbox())
    return float(_sandbox[0].call(time_check_inside, loops))


def add_benchmarks(runner: pyperf.Runner, quick: bool) -> None:
    """The suite, for ``python -m subsandbox bench`` (harness.py) and main()."""
    runner.bench_func("guard.check() in the main interpreter", guard.check,
                      metadata=result_metadata("guard.check()", baseline=True))
    runner.bench_time_func("guard.check() in a sandbox", check_in_sandbox,
                           metadata=result_metadata("guard.check()"))


def main() -> None:
    add_benchmarks(pyperf.Runner(), quick=False)


if __name__ == "__main__":
    main()
