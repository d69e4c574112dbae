"""share() into the default arena many times in a row, as a long-running program does.

    python bench/share_in_a_row.py [--count N]
                                   [--kinds table,corpus,mapping]
                                   [--sizes 1KB,1MB] [--no-thp]

bench_share.py's pyperf workers each share a few blocks of values and exit, so its
default-arena figures never see what a program that keeps calling share() sees: every
value takes memory the process never used (the default arena is never given back) and
the arena's string memo keeps growing. This measures that steady state, in one new
process per data set, in the CPU time the kernel and the process spend apart:

  share        subsandbox.share() of a new variant of the data (bench/_share_data.py)
  pickle kept  pickle.dumps() of another new variant, its bytes kept alive as share()'s
               copy is: the same "new memory every call" condition on both sides
  pickle       pickle.dumps() of a new variant, its bytes dropped at once (the usual use,
               and bench_share.py's pickle-fresh)

Blocks of calls of the three alternate (50 calls per block at 1 KB, 1 at 1 MB), so
drift on the machine falls on all of them alike. A figure is CPU time per call (process
CPU clock), the median over the last 3/4 of the blocks (the first quarter warms up the
memo and the allocator); "kernel" is the part of it spent in the kernel (page faults,
zeroing fresh memory), and "faults" the minor page faults per call. ``--no-thp`` runs the processes with transparent huge pages turned
off (prctl PR_SET_THP_DISABLE, Linux), to show what the default arena's huge-page blocks
cost or save on this machine.

Not a pyperf suite: it reads the kernel's split of CPU time (getrusage), which pyperf
does not record. Prints a Markdown table; ``--json FILE`` also keeps every figure.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _share_data as data  # noqa: E402

_PR_SET_THP_DISABLE = 41
_MEASURES = ("share", "pickle kept", "pickle")


def _usage() -> tuple[float, float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), r.ru_utime, r.ru_stime, r.ru_minflt


def measure(kind: str, size: str, count: int, block: int) -> dict[str, dict[str, float]]:
    """In this process: ``count`` calls of each measure, ``block`` calls of one measure
    at a time, the measures' blocks alternating. Per measure: the median CPU seconds per
    call over the blocks (process CPU clock), the kernel's part of all of it, and minor
    page faults per call."""
    import subsandbox

    subsandbox.share(data.make(kind, "1KB", 0))     # the default arena exists
    kept: list[bytes] = []
    per_call: dict[str, list[float]] = {m: [] for m in _MEASURES}
    totals: dict[str, list[float]] = {m: [0.0, 0.0, 0.0] for m in _MEASURES}
    variant = 1
    nblocks = max(1, count // block)
    for i in range(nblocks):
        for m in _MEASURES:
            values = [data.make(kind, size, variant + j) for j in range(block)]
            variant += block
            gc.disable()    # a collection would be charged to one block alone
            before = _usage()
            if m == "share":
                for value in values:
                    subsandbox.share(value)
            elif m == "pickle kept":
                for value in values:
                    kept.append(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
            else:
                for value in values:
                    pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            after = _usage()
            gc.enable()
            del values
            if i < nblocks // 4:
                continue    # warming up: the memo, the allocator, the caches
            per_call[m].append((after[0] - before[0]) / block)
            t = totals[m]
            t[0] += after[1] - before[1]
            t[1] += after[2] - before[2]
            t[2] += after[3] - before[3]
    out: dict[str, dict[str, float]] = {}
    for m in _MEASURES:
        user, sys_, faults = totals[m]
        calls = len(per_call[m]) * block
        out[m] = {
            "cpu": statistics.median(per_call[m]),
            # getrusage splits the CPU time between user and kernel by sampling at clock
            # ticks: good over a whole run, not per call.
            "sys_share": sys_ / (user + sys_) if user + sys_ > 0 else 0.0,
            "faults": faults / calls,
        }
    return out


def _child(args: argparse.Namespace) -> None:
    if args.no_thp:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_THP_DISABLE) failed")
    print(json.dumps(measure(args.child_kind, args.child_size, args.count, args.block)))


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.2f}" if seconds < 1e-4 else f"{seconds * 1e6:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=0,
                        help="calls of each measure per data set (default: 4000 at 1 KB, "
                             "60 at 1 MB)")
    parser.add_argument("--kinds", default=",".join(data.KINDS))
    parser.add_argument("--sizes", default="1KB,1MB")
    parser.add_argument("--no-thp", action="store_true",
                        help="turn transparent huge pages off in the measuring processes")
    parser.add_argument("--json", metavar="FILE", help="also write every figure here")
    parser.add_argument("--child-kind", help=argparse.SUPPRESS)
    parser.add_argument("--child-size", help=argparse.SUPPRESS)
    parser.add_argument("--block", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_kind:
        _child(args)
        return
    kinds, sizes = args.kinds.split(","), args.sizes.split(",")
    for name, chosen, allowed in (("kind", kinds, data.KINDS), ("size", sizes, ("1KB", "1MB"))):
        for c in chosen:
            if c not in allowed:
                parser.error(f"unknown {name} {c!r}: use some of {', '.join(allowed)} "
                             f"(100MB values are bench_share.py's: a few calls per process)")
    if args.count < 0:
        parser.error(f"--count must be positive, not {args.count}")
    results: dict[str, Any] = {"python": sys.version.split()[0], "thp": not args.no_thp,
                               "cells": {}}
    print(f"share() into the default arena, calls in a row; Python {results['python']}, "
          f"transparent huge pages {'off' if args.no_thp else 'as the system has them'}")
    print()
    print("| data | calls | share µs | kernel | faults | pickle kept µs | kernel "
          "| pickle µs | share ÷ pickle kept | share ÷ pickle |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        for kind in kinds:
            small = size == "1KB"
            count = args.count or (4000 if small else 60)
            block = min(count, 50) if small else 1     # a 1 KB call is µs: time blocks
            cmd = [sys.executable, os.path.abspath(__file__), "--child-kind", kind,
                   "--child-size", size, "--count", str(count), "--block", str(block)]
            if args.no_thp:
                cmd.append("--no-thp")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"the measuring process for {kind} {size} failed:\n{proc.stderr}")
            cell = json.loads(proc.stdout)
            results["cells"][f"{kind} {size}"] = {"count": count, "block": block, **cell}
            s, k, p = cell["share"], cell["pickle kept"], cell["pickle"]
            print(f"| {kind} {size} | {count} | {_us(s['cpu'])} | {s['sys_share']:.0%} "
                  f"| {s['faults']:.1f} | {_us(k['cpu'])} | {k['sys_share']:.0%} "
                  f"| {_us(p['cpu'])} | {s['cpu'] / k['cpu']:.2f} | {s['cpu'] / p['cpu']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
