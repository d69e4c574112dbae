"""Memory figures of sandboxes: churn and idle cost, against CPython's bare interpreters.

    python bench/memory_figures.py churn-sandbox  [N]   # N x (Sandbox(); close())
    python bench/memory_figures.py churn-bare     [N]   # N x (create isolated; destroy)
    python bench/memory_figures.py churn-bare-import [N]  # ... that import what a sandbox imports
    python bench/memory_figures.py idle           [N]   # N idle sandboxes alive at once

Each prints one JSON line: RSS (MiB, from /proc/self/statm) at the start, every N/10
cycles and at the end, and seconds. Run each in its own process: RSS is per process.
Bare interpreters are created as subsandbox creates them (own GIL, own obmalloc) through
CPython's private module of the running version, so the difference between the two churn
figures is what subsandbox adds on top of CPython.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

import subsandbox


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


if sys.version_info >= (3, 13):
    import _interpreters as _I

    def bare_create() -> object:
        return _I.create("isolated")

    def bare_exec(iid: object, code: str) -> None:
        err = _I.exec(iid, code)
        if err is not None:
            raise RuntimeError(err.formatted)
else:
    import _xxsubinterpreters as _I

    def bare_create() -> object:
        return _I.create(isolated=True)

    def bare_exec(iid: object, code: str) -> None:
        _I.run_string(iid, code)


def churn(n: int, kind: str) -> dict[str, object]:
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(subsandbox.__file__)))
    # The modules a sandbox's worker imports, so that "bare-import" differs from "sandbox"
    # only by subsandbox's own machinery (threads, channels, the worker loop).
    importer = f"import sys; sys.path.insert(0, {package_root!r}); import subsandbox._inside\n"
    from subsandbox import _inside  # noqa: F401 - _core must be imported by main first
    samples = [(0, rss_mib())]
    start = time.perf_counter()
    for i in range(1, n + 1):
        if kind == "sandbox":
            subsandbox.Sandbox().close()
        else:
            iid = bare_create()
            if kind == "bare-import":
                bare_exec(iid, importer)
            _I.destroy(iid)
        if i % max(1, n // 10) == 0:
            gc.collect()
            samples.append((i, rss_mib()))
    return {"kind": f"churn-{kind}", "n": n, "rss_mib": samples,
            "seconds": round(time.perf_counter() - start, 2),
            "python": sys.version.split()[0]}


def idle(n: int) -> dict[str, object]:
    # Warm up: the first sandbox imports the package's modules into the main interpreter.
    subsandbox.Sandbox().close()
    gc.collect()
    before = rss_mib()
    sandboxes = [subsandbox.Sandbox() for _ in range(n)]
    for sb in sandboxes:
        sb.call(len, ())  # each has served a call: its worker loop is in steady state
    alive = rss_mib()
    for sb in sandboxes:
        sb.close()
    return {"kind": "idle", "n": n, "rss_before_mib": before, "rss_alive_mib": alive,
            "per_sandbox_mib": round((alive - before) / n, 2),
            "python": sys.version.split()[0]}


def main(argv: list[str]) -> None:
    what = argv[1] if len(argv) > 1 else "churn-sandbox"
    n = int(argv[2]) if len(argv) > 2 else (1000 if what.startswith("churn") else 20)
    if what == "idle":
        print(json.dumps(idle(n)))
    elif what in ("churn-sandbox", "churn-bare", "churn-bare-import"):
        print(json.dumps(churn(n, what.removeprefix("churn-"))))
    else:
        raise SystemExit(f"unknown figure {what!r}: churn-sandbox, churn-bare, "
                         "churn-bare-import or idle")


if __name__ == "__main__":
    main(sys.argv)
