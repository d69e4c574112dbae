"""Parallel efficiency at N = usable cores, measured in pairs so that a noisy machine can
still answer "is it >= 0.9, and equal to processes?":

    python bench/efficiency.py [--rounds 7] [--seconds 1.5] [--json out.json]

bench_scaling reports speedups from medians of separate phases; on a shared VM those
medians drift by 15-25 % between phases, more than the effect asked about. Here every
pool is made once and kept warm, and each *round* runs the same job on every runner back
to back (in a rotated order, so no runner always goes first after a quiet moment):

    sequential, <kind>/1 and <kind>/N for kind in sandbox-pool, processes-fork,
    processes-forkserver

Per round and kind, the efficiency is ``T(kind, 1 worker) / (N * T(kind, N workers))``:
both times come from the same round, so drift that lasts longer than a round cancels.
The table gives the median over rounds and the lowest and highest round; ``vs
sequential`` is the same with the one-thread loop as the numerator (it also counts what
the pool costs per task). Every answer is checked against the sequential one.

Every task also reports the CPU time of the thread that ran it (kernels.cpu_timed), which
splits a shortfall in two (``efficiencies``): the *slowdown* of tasks that run side by
side (the machine's: caches, memory, vCPUs that share a core; no kind of worker escapes
it) and the *busy* share of the N cores' time the workers computed (the pool's own
doing, and the scheduler's).

Process pools are made (and their workers forked) before any sandbox exists, as in
bench_scaling, and stay alive while the sandboxes run; each process worker builds the
text-scoring corpus in its initializer, so processes are timed computing only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scaling  # noqa: E402  (bench/ is not a package)
import harness  # noqa: E402
import kernels  # noqa: E402
import pools  # noqa: E402

KINDS = ("sandbox-pool", "processes-fork", "processes-forkserver")


def _make_runners(workers: int, docs: int) -> dict[str, pools.Runner]:
    """Every runner this script compares, shared by the kernels. Process pools first
    (before any subinterpreter exists), warmed so that their workers are forked now; each
    process worker builds the text-scoring corpus in its initializer."""
    counts = sorted({1, workers})
    runners: dict[str, pools.Runner] = {"sequential": pools.Sequential()}
    warm = [(kernels.nbody, (10,))] * workers
    for method in ("fork", "forkserver"):
        for w in counts:
            pool = pools.process_pool(method, w, kernels.install_corpus, (docs,))
            pool.map(warm)
            runners[f"processes-{method}/{w}"] = pool
    for w in counts:
        pool = pools.sandbox_pool(w)
        if pool is None:
            raise SystemExit("this subsandbox has no SandboxPoolExecutor")
        pool.map(warm)
        runners[f"sandbox-pool/{w}"] = pool
    return runners


def _job_for(label: str, job: dict[str, list[pools.Call]]) -> list[pools.Call]:
    return job["installed"] if label.startswith("processes-") else job["direct"]


def measure(rounds: int, seconds: float) -> dict[str, Any]:
    workers = harness.usable_cpus()
    tasks = 4 * workers
    docs = 500 if harness.tiny() else bench_scaling.CORPUS_DOCS
    plain_corpus = kernels.make_corpus(docs)
    target = 0.001 if harness.tiny() else seconds / tasks
    jobs = bench_scaling.jobs_for(target, tasks, plain_corpus)
    expected = {k: pools.Sequential().map(j["direct"]) for k, j in jobs.items()}
    runners = _make_runners(workers, docs)
    try:
        jobs = bench_scaling.jobs_with_corpus(jobs, bench_scaling.share_corpus(plain_corpus))
        times: dict[str, dict[str, list[float]]] = {k: {} for k in jobs}
        cpu: dict[str, dict[str, list[float]]] = {k: {} for k in jobs}
        for r in range(rounds):
            harness.log(f"efficiency: round {r + 1} of {rounds}")
            labels = list(runners)
            shift = r % len(labels)
            for kernel, job in jobs.items():
                for label in labels[shift:] + labels[:shift]:
                    runner = runners[label]
                    calls = [(kernels.cpu_timed, (fn, *args))
                             for fn, args in _job_for(label, job)]
                    got: list[Any] = []
                    elapsed = harness.time_call(lambda: got.extend(runner.map(calls)))
                    answers = [answer for answer, _ in got]
                    if answers != expected[kernel]:
                        raise AssertionError(f"{kernel} on {label} computed {answers[:3]}..., "
                                             f"expected {expected[kernel][:3]}...")
                    times[kernel].setdefault(label, []).append(elapsed)
                    cpu[kernel].setdefault(label, []).append(sum(s for _, s in got))
    finally:
        for runner in runners.values():
            runner.close()
    return {"workers": workers, "tasks": tasks, "rounds": rounds, "times": times, "cpu": cpu}


def efficiencies(result: dict[str, Any]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per kernel and kind, per round:

    self        the efficiency against the kind's own one-worker time, T1 / (N * TN)
    sequential  the same against the one-thread loop, T_seq / (N * TN)
    slowdown    the tasks' CPU time with N workers / with one worker: above 1 when tasks
                that run side by side slow each other down (shared caches, memory
                bandwidth, two vCPUs on one physical core); the worker's kind cannot fix it
    busy        the tasks' CPU time with N workers / (N * TN): the share of the N cores'
                time the workers spent computing, below 1 when a worker waited (for the
                machine's scheduler, for its next task, for its result to travel)

    ``self`` is close to ``busy_N / (busy_1 * slowdown)``: on a machine where wall times are
    noisy, slowdown and busy say whether a kind of worker loses to another by its own
    doing (busy) or not at all (slowdown: the same for every kind)."""
    n = result["workers"]
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for kernel, t in result["times"].items():
        out[kernel] = {}
        for kind in KINDS:
            one, many, seq = t[f"{kind}/1"], t[f"{kind}/{n}"], t["sequential"]
            out[kernel][kind] = {
                "self": [a / (n * b) for a, b in zip(one, many)],
                "sequential": [s / (n * b) for s, b in zip(seq, many)],
            }
            if "cpu" in result:
                c = result["cpu"][kernel]
                c1, cn = c[f"{kind}/1"], c[f"{kind}/{n}"]
                out[kernel][kind]["slowdown"] = [b / a for a, b in zip(c1, cn)]
                out[kernel][kind]["busy"] = [b / (n * w) for b, w in zip(cn, many)]
    return out


def markdown(result: dict[str, Any]) -> str:
    n = result["workers"]
    lines = [f"Parallel efficiency at N = {n} workers ({result['tasks']} equal tasks per "
             f"job, {result['rounds']} rounds; median [lowest, highest round]).", "",
             "| kernel | runner | efficiency T1/(N·TN) | vs sequential T_seq/(N·TN) "
             "| task CPU slowdown at N | cores busy at N |",
             "|---|---|---:|---:|---:|---:|"]

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"

    for kernel, by_kind in efficiencies(result).items():
        for kind, e in by_kind.items():
            extra = (f" {cell(e['slowdown'])} | {cell(e['busy'])} |" if "busy" in e
                     else " | |")
            lines.append(f"| {kernel} | {kind} | {cell(e['self'])} | {cell(e['sequential'])} |"
                         + extra)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="the job's sequential time to aim for (default 1.5 s)")
    parser.add_argument("--json", type=Path, help="also write every time to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds above 0")
    result = measure(args.rounds, args.seconds)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(f"CPython {sys.version.split()[0]}, {harness.usable_cpus()} usable cores")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
