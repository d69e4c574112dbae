"""Suite (1): CPU scaling of pure-Python kernels at 1..N workers, every kind of worker.

Kernels: n-body, a fannkuch-like permutation kernel, and BM25 text scoring over a corpus.
A job is ``4 * N`` equal tasks (N = usable cores), sized by timing one task here first
so that the job takes about 0.2 s (``--quick``) or 1.5 s when run sequentially. The same job runs on each kind of worker at
each worker count (threads only at 1 and N: they do not scale); the speedup is the time of a plain loop in one thread (``sequential``)
divided by the job's time. Every runner's answers are checked against the sequential ones.

The text-scoring corpus is ``share()``d once: sandboxes and threads receive it as an
argument of every task (sandboxes get a pointer, no copy). Processes and stdlib
interpreters cannot receive it without copying, so each of their workers builds the same
corpus once in its initializer, outside the timed runs: their figures are for computing
only, the best case for them. (What moving the data costs is what bench_share measures.)

Order matters: the process pools (fork, forkserver) are measured first, before any
subinterpreter exists in this process, because a fork while subinterpreters exist hangs or
aborts the child on CPython 3.12 and 3.13. Then threads, sandboxes and interpreters.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import harness
import kernels
import pools
from harness import Result

CORPUS_DOCS = 20_000
KERNELS = ("nbody", "fannkuch", "text-scoring")


def _task_seconds(quick: bool, tasks: int) -> float:
    """How long one task should take: the whole job, run sequentially, about 0.2 s
    (``--quick``) or 1.5 s, whatever the core count."""
    if harness.tiny():
        return 0.001
    return (0.2 if quick else 1.5) / tasks


def _calibrated(target: float) -> dict[str, tuple[Callable[..., Any], int]]:
    """Per kernel: the task function and the size argument that makes one task take about
    ``target`` seconds on this machine."""
    sizes = {}
    t = harness.time_call(lambda: kernels.nbody(2000))
    sizes["nbody"] = (kernels.nbody, max(100, int(2000 * target / t)))
    t = harness.time_call(lambda: kernels.fannkuch_task(3, 2000))
    sizes["fannkuch"] = (kernels.fannkuch_task, max(100, int(2000 * target / t)))
    return sizes


def jobs_for(target: float, tasks: int,
             corpus: Any) -> dict[str, dict[str, list[pools.Call]]]:
    """Per kernel, ``tasks`` calls of about ``target`` seconds each: "direct" (data as
    arguments) and "installed" (for workers whose initializer built the corpus)."""
    sizes = _calibrated(target)
    jobs: dict[str, dict[str, list[pools.Call]]] = {}
    fn, steps = sizes["nbody"]
    calls = [(fn, (steps,)) for _ in range(tasks)]
    jobs["nbody"] = {"direct": calls, "installed": calls}
    fn, count = sizes["fannkuch"]
    calls = [(fn, (i, count)) for i in range(tasks)]
    jobs["fannkuch"] = {"direct": calls, "installed": calls}
    t = harness.time_call(lambda: kernels.score_documents(corpus, 0, 500))
    per_task = max(50, int(500 * target / t))
    ranges = [(i * per_task, (i + 1) * per_task) for i in range(tasks)]
    jobs["text-scoring"] = {
        "direct": [(kernels.score_documents, (corpus, lo, hi)) for lo, hi in ranges],
        "installed": [(kernels.score_installed, (lo, hi)) for lo, hi in ranges],
    }
    return jobs


def _measure(runners: dict[str, pools.Runner], calls: dict[str, list[pools.Call]],
             expected: list[Any], repeat: int) -> dict[str, list[float]]:
    candidates = {}
    for label, runner in runners.items():
        job = calls[label]

        def once(runner: pools.Runner = runner, job: list[pools.Call] = job,
                 label: str = label) -> None:
            got = runner.map(job)
            if got != expected:
                raise AssertionError(f"{label} computed {got[:3]}..., expected {expected[:3]}...")
        candidates[label] = once
    return harness.measure_side_by_side(candidates, repeat=repeat, warmup=1)


def run(quick: bool) -> list[Result]:
    cores = harness.usable_cpus()
    counts = harness.worker_counts(cores)
    tasks = 4 * cores
    repeat = 1 if harness.tiny() else 3 if quick else 5
    docs = 500 if harness.tiny() else CORPUS_DOCS
    plain_corpus = kernels.make_corpus(docs)
    jobs = jobs_for(_task_seconds(quick, tasks), tasks, plain_corpus)
    expected = {k: pools.Sequential().map(j["direct"]) for k, j in jobs.items()}
    values: dict[tuple[str, str, int], list[float]] = {}
    python = f"Python {sys.version.split()[0]}"

    # Phase 1: processes, before any subinterpreter exists in this process.
    for kernel, job in jobs.items():
        init = (kernels.install_corpus, (docs,)) if kernel == "text-scoring" else (None, ())
        for w in counts:
            harness.log(f"scaling {kernel}: processes, {w} workers ({python})")
            runners: dict[str, pools.Runner] = {}
            if w == counts[0]:  # the baseline, once per phase, side by side with w = 1
                runners["sequential"] = pools.Sequential()
            for method in ("fork", "forkserver"):
                runners[f"processes-{method}"] = pools.process_pool(method, w, *init)
            calls = {label: job["installed"] for label in runners}
            if "sequential" in runners:
                calls["sequential"] = job["direct"]
            try:
                got = _measure(runners, calls, expected[kernel], repeat)
            finally:
                for r in runners.values():
                    r.close()
            for label, v in got.items():
                values.setdefault((kernel, label, 0 if label == "sequential" else w), []).extend(v)

    # Phase 2: in-process workers. One set of sandboxes serves every count.
    corpus = share_corpus(plain_corpus)
    jobs = jobs_with_corpus(jobs, corpus)
    sandboxes = pools.make_sandboxes(max(counts))
    try:
        for kernel, job in jobs.items():
            setup = (f"import kernels\nkernels.install_corpus({docs})"
                     if kernel == "text-scoring" else "")
            for w in counts:
                harness.log(f"scaling {kernel}: threads, sandboxes, interpreters, {w} workers")
                runners = {}
                if w == counts[0]:
                    runners["sequential"] = pools.Sequential()
                if w in (counts[0], counts[-1]):
                    runners["threads"] = pools.OnExecutor("threads", pools.ThreadPoolExecutor(w))
                runners["sandboxes"] = pools.OnSandboxes(sandboxes[:w])
                for extra in (pools.sandbox_pool(w), pools.interpreter_pool(w, setup)):
                    if extra is not None:
                        runners[extra.label] = extra
                calls = {label: job["direct"] for label in runners}
                if "interpreters" in runners:
                    calls["interpreters"] = job["installed"]
                try:
                    got = _measure(runners, calls, expected[kernel], repeat)
                finally:
                    for r in runners.values():
                        r.close()
                for label, v in got.items():
                    key = (kernel, label, 0 if label == "sequential" else w)
                    values.setdefault(key, []).extend(v)
    finally:
        for sb in sandboxes:
            sb.close()

    results = []
    for (kernel, label, w), v in sorted(values.items()):
        group = f"scaling/{kernel}"
        if label == "sequential":
            results.append(Result(f"{group}/sequential", v, group=group, baseline=True,
                                  params={"kernel": kernel, "tasks": tasks},
                                  note="one thread, no pool; measured in both phases"))
            continue
        note = {"processes-fork": "pool made before any sandbox existed",
                "processes-forkserver": "corpus built in each worker, untimed",
                "interpreters": "corpus built in each worker, untimed"}.get(label, "")
        if kernel != "text-scoring" and label != "processes-fork":
            note = ""
        results.append(Result(f"{group}/{label}/{w}", v, group=group,
                              params={"kernel": kernel, "runner": label, "workers": w,
                                      "tasks": tasks}, note=note))
    return results


def share_corpus(corpus: tuple[tuple[str, ...], dict[str, float]]) -> Any:
    import subsandbox

    start = time.perf_counter()
    shared = subsandbox.share(corpus)
    harness.log(f"shared the corpus ({len(corpus[0]):,} documents, {len(corpus[1]):,} "
                f"words) in {time.perf_counter() - start:.3f} s")
    return shared


def jobs_with_corpus(jobs: dict[str, dict[str, list[pools.Call]]],
                      corpus: Any) -> dict[str, dict[str, list[pools.Call]]]:
    """The same jobs, with the shared corpus in place of the plain one."""
    scoring = jobs["text-scoring"]
    direct = [(fn, (corpus, *args[1:])) for fn, args in scoring["direct"]]
    return {**jobs, "text-scoring": {**scoring, "direct": direct}}


if __name__ == "__main__":
    sys.exit(harness.suite_main(run))
