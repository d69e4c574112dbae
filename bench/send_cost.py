"""What passing a shared value adds to a call, from paired rounds (target: <= 2 us at
every size):

    python bench/send_cost.py [--sizes 1KB,1MB,100MB] [--rounds 21] [--json out.json]

bench_share's ``send`` and ``cross`` are the difference of two separately measured
pyperf benchmarks of ~10-45 us each; on a 2-core VM each drifts by more than the cost
asked about (its tables showed negative costs). Here each *round* times the same loop
twice back to back, once with ``None`` as the argument and once with the shared value,
and the cost is the difference within the round; the table gives the median and the
quartiles over rounds. Two loops, both by the CPU time of the thread that runs them
(a send is work of the sending and the receiving thread, not waiting):

  cross  what ``Sandbox.call`` does to its arguments, without the switch between
         threads, in this thread: pickle (fn, args, kwargs) with shared objects set
         aside, put the request through a channel, take it out, unpickle
  call   ``Sandbox.call(noop, value)`` into a warm sandbox: this thread's CPU time plus
         the sandbox thread's (``pthread_getcpuclockid``, as ``roundtrip_cpu.py``)

A shared value crosses by pointer: the cost must not grow with its size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _share_data as data  # noqa: E402
import harness  # noqa: E402

import subsandbox  # noqa: E402

LOOPS = {"cross": 20_000, "call": 2_000}


def cross_loop(value: Any, loops: int) -> float:
    """CPU seconds per crossing of ``noop(value)``, in this thread."""
    return data.time_crossings(value, loops, time.thread_time) / loops


def _thread_cpu_clock(sandbox: subsandbox.Sandbox) -> int:
    """The CPU clock of the thread that runs ``sandbox``'s calls (a private attribute:
    a benchmark may look inside)."""
    return time.pthread_getcpuclockid(sandbox._thread.ident)  # type: ignore[attr-defined]


def call_loop(sandbox: subsandbox.Sandbox, clock: int, value: Any, loops: int) -> float:
    """CPU seconds (this thread + the sandbox's) per ``sandbox.call(noop, value)``."""
    call, noop = sandbox.call, data.noop
    mine0, theirs0 = time.thread_time(), time.clock_gettime(clock)
    for _ in range(loops):
        call(noop, value)
    mine, theirs = time.thread_time() - mine0, time.clock_gettime(clock) - theirs0
    return (mine + theirs) / loops


def paired(loop: Callable[[Any, int], float], value: Any, loops: int,
           rounds: int) -> list[float]:
    """Per round: seconds per operation with ``value`` minus with ``None``; the order of
    the two alternates, so that neither always runs first."""
    costs = []
    for r in range(rounds):
        if r % 2:
            with_value, without = loop(value, loops), loop(None, loops)
        else:
            without, with_value = loop(None, loops), loop(value, loops)
        costs.append(with_value - without)
    return costs


def measure(sizes: list[str], rounds: int) -> dict[str, Any]:
    scale = 10 if harness.tiny() else 1
    out: dict[str, Any] = {"rounds": rounds, "loops": {k: v // scale for k, v in LOOPS.items()},
                           "costs": {}}
    with subsandbox.Sandbox() as sandbox:
        clock = _thread_cpu_clock(sandbox)
        call = lambda value, loops: call_loop(sandbox, clock, value, loops)  # noqa: E731
        # Warm both paths (imports, the sandbox's copy of the noop's module).
        cross_loop(None, 100)
        call(None, 100)
        for size in sizes:
            for kind in data.KINDS:
                harness.log(f"send_cost: {kind} {size}")
                value = subsandbox.share(data.make(kind, size))
                out["costs"][f"{kind}-{size}"] = {
                    "cross": paired(cross_loop, value, out["loops"]["cross"], rounds),
                    "call": paired(call, value, out["loops"]["call"], rounds),
                }
                del value
    return out


def markdown(result: dict[str, Any]) -> str:
    def cell(values: list[float]) -> str:
        q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        return f"{q[1] * 1e6:.2f} µs [{q[0] * 1e6:.2f}, {q[2] * 1e6:.2f}]"

    lines = [f"What passing a shared value adds, CPU time per operation: median [quartiles] "
             f"of {result['rounds']} paired rounds.", "",
             "| data | cross (this thread) | Sandbox.call (both threads) |", "|---|---:|---:|"]
    for name, costs in result["costs"].items():
        lines.append(f"| {name} | {cell(costs['cross'])} | {cell(costs['call'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1KB,1MB",
                        help=f"comma-separated, of {','.join(data.SIZES)} (default 1KB,1MB)")
    parser.add_argument("--rounds", type=int, default=21, help="rounds (default 21)")
    parser.add_argument("--json", type=Path, help="also write every cost to this file")
    args = parser.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in data.SIZES]
    if unknown or not sizes:
        parser.error(f"--sizes: unknown size {unknown[0] if unknown else '(none)'!r}; "
                     f"use some of {','.join(data.SIZES)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    result = measure(sizes, args.rounds)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(f"CPython {sys.version.split()[0]}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
