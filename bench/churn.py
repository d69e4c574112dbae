"""RSS after repeated create/close of sandboxes, against CPython's own interpreters.

    python bench/churn.py [cycles]        (default 1000)

Each variant runs in a fresh process and prints RSS (MiB, /proc/self/statm) every tenth
of the run: bare isolated interpreters created and destroyed through CPython's own module
(3.12 ``_xxsubinterpreters``, 3.13 ``_interpreters`` via the backport's low-level module),
then ``subsandbox.Sandbox()`` + one call + ``close()``. Linux only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

VARIANTS = {
    "bare interpreter (create, run 'pass', destroy)": """
        if sys.version_info >= (3, 13):
            import _interpreters as xi
            def cycle():
                i = xi.create('isolated'); xi.exec(i, 'pass'); xi.destroy(i)
        else:
            import _xxsubinterpreters as xi
            def cycle():
                i = xi.create(isolated=True); xi.run_string(i, 'pass'); xi.destroy(i)
    """,
    "Sandbox() + call + close()": """
        import subsandbox
        def cycle():
            with subsandbox.Sandbox() as sb:
                sb.call(abs, -1)
    """,
}

RUNNER = """
import os, sys, time
PAGE = os.sysconf('SC_PAGE_SIZE')
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * PAGE / 2**20
{setup}
N = {cycles}
marks = []
t0 = time.perf_counter()
for n in range(1, N + 1):
    cycle()
    if n % max(1, N // 10) == 0:
        marks.append(f"{{n}}:{{rss():.1f}}")
print(f"start {{START:.1f}} MiB; " + "  ".join(marks) + f"  ({{time.perf_counter() - t0:.1f}} s)")
"""


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(f"CPython {sys.version.split()[0]}, {cycles} cycles, RSS in MiB after n cycles")
    for name, setup in VARIANTS.items():
        code = RUNNER.format(setup="START = None\n" + textwrap.dedent(setup)
                             + "\nSTART = rss()\n", cycles=cycles)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ))
        print(f"- {name}: {out.stdout.strip() or out.stderr.strip()[-500:]}")


if __name__ == "__main__":
    main()
