"""What each destroyed interpreter leaves allocated in its object allocator, by kind.

    python bench/leak_census.py [--cycles N] [--variant bare|sandbox|executor] [--show K]

For each variant (in a fresh process), runs N cycles and takes ``_core._leak_census(id)``
of every interpreter right after it is destroyed (before the reclaim forgets its arenas):

- ``bare``: CPython's own isolated interpreter: create, run a statement, destroy.
- ``sandbox``: ``Sandbox()`` + one call + ``close()``.
- ``executor``: ``SandboxPoolExecutor(1, max_tasks_per_worker=10)``: each worker recycle.

Prints, per kind of block, the average count per interpreter over the last N-1 cycles (the
first interpreter of a process leaks things later ones find already made, e.g. interned
strings on 3.12), with the pages that kind alone keeps, and samples of what they are: the
text of leaked str objects, the qualnames of code objects and functions, the first keys of
dicts. Linux, CPython 3.12/3.13. A diagnostic, not a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

SETUP = {
    "bare": """
        import subsandbox._core as _core   # installs the arena tracking first
        if sys.version_info >= (3, 13):
            import _interpreters as xi
            def cycle():
                i = xi.create('isolated'); xi.exec(i, 'pass'); xi.destroy(i)
                take(i)
        else:
            import _xxsubinterpreters as xi
            def cycle():
                i = xi.create(isolated=True); xi.run_string(i, 'pass'); xi.destroy(i)
                take(int(i))
    """,
    "sandbox": """
        import subsandbox
        def cycle():
            with subsandbox.Sandbox() as sb:
                sb.call(abs, -1)
    """,
    "executor": """
        import subsandbox
        ex = subsandbox.SandboxPoolExecutor(1, max_tasks_per_worker=10)
        def cycle():
            for i in range(10):
                ex.submit(abs, -i).result()
            # the 10th task retired the worker; the next submit starts a new one
            before = len(censuses)
            deadline = time.monotonic() + 30
            while len(censuses) == before and time.monotonic() < deadline:
                time.sleep(0.005)
    """,
}

RUNNER = """
import sys, time, json
from subsandbox import _core
censuses = []
_reclaim = _core._reclaim_interpreter
def take(interp_id):
    censuses.append(_core._leak_census(interp_id))
    return _reclaim(interp_id)
_core._reclaim_interpreter = take
{setup}
for _ in range({cycles}):
    cycle()
json.dump(censuses, sys.stdout)
"""


def run_variant(name: str, cycles: int) -> list[dict]:
    code = RUNNER.format(setup=textwrap.dedent(SETUP[name]), cycles=cycles)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ))
    if out.returncode:
        raise SystemExit(f"{name}: exit status {out.returncode}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def report(name: str, censuses: list[dict], show: int) -> None:
    first, rest = censuses[0], censuses[1:] or censuses
    n = len(rest)
    print(f"\n== {name}: {len(censuses)} interpreters; first one: {first['blocks']} blocks, "
          f"{first['pages']} pages; then per interpreter: "
          f"{sum(c['blocks'] for c in rest) / n:.0f} blocks, "
          f"{sum(c['bytes'] for c in rest) / n / 1024:.1f} KiB, "
          f"{sum(c['pages'] for c in rest) / n:.0f} pages pinned "
          f"({sum(c['pages'] for c in rest) / n * 4 / 1024:.2f} MiB)")
    totals: dict[str, list] = {}
    for c in rest:
        for kind, (count, size, immortal, alone, details) in c["kinds"].items():
            t = totals.setdefault(kind, [0, 0, 0, 0, []])
            t[0] += count
            t[1] += size
            t[2] += immortal
            t[3] += alone
            t[4] = details          # the last interpreter's, as a sample
    rows = sorted(totals.items(), key=lambda kv: -kv[1][1])
    print(f"{'kind':42} {'blocks':>8} {'KiB':>8} {'immortal':>8} {'alone pg':>8}")
    for kind, (count, size, immortal, alone, details) in rows:
        print(f"{kind[:42]:42} {count / n:8.1f} {size / n / 1024:8.1f} {immortal / n:8.1f} "
              f"{alone / n:8.1f}")
        if show and details:
            sample = details[:show]
            print("      e.g. " + textwrap.shorten(repr(sample), 600))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--variant", choices=sorted(SETUP), action="append")
    parser.add_argument("--show", type=int, default=12, help="samples shown per kind")
    parser.add_argument("--json", help="also write the raw censuses to this file")
    args = parser.parse_args()
    print(f"CPython {sys.version.split()[0]}")
    raw = {}
    for name in args.variant or ["bare", "sandbox", "executor"]:
        raw[name] = run_variant(name, args.cycles)
        report(name, raw[name], args.show)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f)


if __name__ == "__main__":
    main()
