"""Suite (4): time to a ready pool of N workers, and idle memory per worker.

Each measurement runs in a fresh process (``python bench_startup.py --probe KIND N``), so
that no pool inherits another's warm caches or leftover memory (destroyed interpreters keep
some, gh-110411), and so that the fork-based pool never meets a subinterpreter. Kinds are
measured round-robin, one fresh process each, ``repeat`` times.

"Ready" means every one of the N workers has run a first task. Each first task sleeps
(HOLD, 0.2 s) so that the pool really has to start N workers (a fast task could be served
by a worker that is already free); the sleep is subtracted, and the probe checks that N
distinct workers answered. A pool whose workers took longer than the sleep to start lets
one worker take two first tasks: that probe did not measure a ready pool, so it is run
again in a new process with twice the sleep (up to HOLD_MAX). Imports of the modules
involved happen before the clock starts.

Memory: for in-process workers (threads, sandboxes, interpreters), the growth of the
process's RSS divided by N; for processes, each worker's PSS (its private pages plus its
share of pages shared with the parent: what it adds to the machine) and, to show how much
of its RSS is shared, its USS and RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import harness
from harness import Result

HOLD = 0.2  # seconds each first task waits, so that N workers must start (a loaded
#            machine can take 0.1 s to start one sandbox; the time is subtracted)
HOLD_MAX = 3.2  # with both cores busy a forkserver worker took up to 0.19 s to start


def _probe(kind: str, n: int, hold: float) -> dict[str, Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    import kernels
    import pools
    import subsandbox  # noqa: F401

    before = harness.memory_rollup()
    start = time.perf_counter()
    closers: list[Any] = []
    if kind == "sandboxes":
        sandboxes = pools.make_sandboxes(n)
        answers: list[Any] = [None] * n

        def first(i: int) -> None:
            answers[i] = sandboxes[i].call(kernels.hold, hold)

        threads = [threading.Thread(target=first, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        closers = [sb.close for sb in sandboxes]
    else:
        if kind == "threads":
            executor: Any = ThreadPoolExecutor(n)
        elif kind.startswith("processes-"):
            method = kind.split("-", 1)[1]
            executor = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context(method))
        elif kind == "interpreters":
            cls = harness.interpreter_pool_executor()
            assert cls is not None
            source = f"import sys\nsys.path.insert(0, {str(harness.BENCH_DIR)!r})\n"
            executor = cls(n, initializer=exec, initargs=(source, {}))
        elif kind == "sandbox-pool":
            executor = subsandbox.SandboxPoolExecutor(n)
        else:
            raise ValueError(f"unknown kind {kind!r}")
        answers = [f.result() for f in [executor.submit(kernels.hold, hold) for _ in range(n)]]
        closers = [executor.shutdown]
    ready = time.perf_counter() - start - hold
    after = harness.memory_rollup()
    children = []
    if kind.startswith("processes-"):
        import multiprocessing

        for child in multiprocessing.active_children():
            try:
                children.append(harness.memory_rollup(child.pid))  # type: ignore[arg-type]
            except OSError:
                pass
    distinct = len(set(answers))
    for close in closers:
        close()
    return {"ready": ready, "before": before, "after": after, "children": children,
            "distinct": distinct, "hold": hold}


def _probe_in_a_new_process(kind: str, n: int) -> dict[str, Any]:
    """One probe of ``kind`` in a fresh process; again, with twice the hold, while fewer
    than ``n`` workers answered and the hold may still grow."""
    hold = HOLD
    while True:
        proc = subprocess.run([sys.executable, __file__, "--probe", kind, str(n), str(hold)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"probe {kind} failed:\n{proc.stderr}")
        sample: dict[str, Any] = json.loads(proc.stdout)
        if sample["distinct"] == n or hold * 2 > HOLD_MAX:
            return sample
        harness.log(f"startup: {kind}: {sample['distinct']} of {n} workers answered within "
                    f"{hold:g} s; again with {hold * 2:g} s")
        hold *= 2


def kinds() -> list[str]:
    found = ["processes-fork", "processes-forkserver", "threads", "sandboxes"]
    if harness.subsandbox_has("SandboxPoolExecutor"):
        found.append("sandbox-pool")
    if harness.interpreter_pool_executor() is not None:
        found.append("interpreters")
    return found


def run(quick: bool) -> list[Result]:
    n = harness.usable_cpus()
    repeat = 1 if harness.tiny() else 3 if quick else 7
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds()}
    for i in range(repeat):
        for kind in samples:
            harness.log(f"startup: {kind}, pool of {n} ({i + 1}/{repeat})")
            samples[kind].append(_probe_in_a_new_process(kind, n))
    results = []
    for kind, runs in samples.items():
        distinct = min(r["distinct"] for r in runs)
        note = f"{distinct} distinct workers answered" + ("" if distinct == n else " (fewer!)")
        params = {"runner": kind, "workers": n}
        results.append(Result(f"startup/ready/{kind}", [max(r["ready"], 1e-6) for r in runs],
                              group="startup/ready", baseline=kind == "processes-fork",
                              params=params, note=note))
        if kind.startswith("processes-"):
            for field in ("pss", "uss", "rss"):
                per_worker = [sum(c[field] for c in r["children"]) / max(1, len(r["children"]))
                              for r in runs]
                results.append(Result(
                    f"startup/memory/{kind}{'' if field == 'pss' else ' ' + field.upper()}",
                    per_worker, unit="byte", group="startup/memory",
                    baseline=(kind == "processes-fork" and field == "pss"), params=params,
                    note={"pss": "PSS of each worker process",
                          "uss": "private pages of each worker",
                          "rss": "RSS of each worker, counting pages shared with others"}[field]))
        else:
            per_worker = [max(1.0, (r["after"]["rss"] - r["before"]["rss"]) / n) for r in runs]
            results.append(Result(f"startup/memory/{kind}", per_worker, unit="byte",
                                  group="startup/memory", params=params,
                                  note="growth of this process's RSS / N"))
    return results


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--probe":
        print(json.dumps(_probe(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
        sys.exit(0)
    sys.exit(harness.suite_main(run))
