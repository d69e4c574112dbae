"""RSS of a SandboxPoolExecutor that recycles its workers, against bare CPython
interpreters doing the same work.

    python bench/executor_memory.py [tasks] [--per-worker N] [--workers W] [--only NAME]

(defaults: 1,000,000 tasks, ``max_tasks_per_worker=1000``, 2 workers.) Not part of the
tests. Each variant runs in a fresh process and prints RSS (MiB, /proc/self/statm) after
every tenth of the tasks:

- ``executor``: ``SandboxPoolExecutor(W, max_tasks_per_worker=N)`` runs ``tasks`` trivial
  tasks (``abs(-i)``), submitted in batches of 10,000 and waited for, so the futures alive
  at any time stay bounded. ``tasks / N`` worker sandboxes are created and destroyed.
- ``bare``: what the same recycling costs with CPython's own isolated interpreters: create
  one (3.12 ``_xxsubinterpreters``, 3.13 ``_interpreters``), run N trivial statements in
  it, destroy it; ``tasks / N`` times, one interpreter at a time.

Linux only. On a shared machine the times vary; RSS is what this measures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap

COMMON = """
import os, sys, time
PAGE = os.sysconf('SC_PAGE_SIZE')
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * PAGE / 2**20
TASKS, PER_WORKER, WORKERS = {tasks}, {per_worker}, {workers}
STEP = max(1, TASKS // 10)
t0 = time.perf_counter()
def report(done, start):
    print(f"{{done}}:{{rss():.1f}}", end="  ", flush=True)
"""

VARIANTS = {
    "executor": """
        import subsandbox
        with subsandbox.SandboxPoolExecutor(WORKERS, max_tasks_per_worker=PER_WORKER) as ex:
            # Warm-up: every worker up once, so "start" includes the pool itself.
            assert list(ex.map(abs, [-1] * WORKERS)) == [1] * WORKERS
            start = rss()
            print(f"start {start:.1f} MiB; ", end="", flush=True)
            done, batch = 0, 10_000
            while done < TASKS:
                n = min(batch, TASKS - done)
                futures = [ex.submit(abs, -i) for i in range(n)]
                assert futures[-1].result() == n - 1
                for f in futures:
                    f.result()
                del futures
                before, done = done, done + n
                if done // STEP != before // STEP:
                    report(done, start)
    """,
    "bare": """
        if sys.version_info >= (3, 13):
            import _interpreters as xi
            def recycle():
                i = xi.create('isolated')
                for _ in range(PER_WORKER):
                    xi.exec(i, 'abs(-1)')
                xi.destroy(i)
        else:
            import _xxsubinterpreters as xi
            def recycle():
                i = xi.create(isolated=True)
                for _ in range(PER_WORKER):
                    xi.run_string(i, 'abs(-1)')
                xi.destroy(i)
        recycle()
        start = rss()
        print(f"start {start:.1f} MiB; ", end="", flush=True)
        done = 0
        while done < TASKS:
            recycle()
            before, done = done, done + PER_WORKER
            if done // STEP != before // STEP:
                report(done, start)
    """,
}

TAIL = """
print(f"({time.perf_counter() - t0:.0f} s)")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--per-worker", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=sorted(VARIANTS))
    args = parser.parse_args()
    print(f"CPython {sys.version.split()[0]}, {args.tasks} tasks, "
          f"max_tasks_per_worker={args.per_worker}, {args.workers} workers; "
          f"RSS in MiB after n tasks")
    for name, body in VARIANTS.items():
        if args.only and name != args.only:
            continue
        code = (COMMON.format(tasks=args.tasks, per_worker=args.per_worker,
                              workers=args.workers)
                + textwrap.dedent(body) + TAIL)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ))
        text = out.stdout.strip() or out.stderr.strip()[-800:]
        if out.returncode:
            text += f"  [exit status {out.returncode}: {out.stderr.strip()[-400:]}]"
        print(f"- {name}: {text}", flush=True)


if __name__ == "__main__":
    main()
