"""The benchmark harness: finds the suites in this folder, runs each in its own process,
and writes one results folder (pyperf JSON, a Markdown table, PNG plots).

Run it as ``python -m subsandbox bench [--quick] [--out DIR]``, or as
``python bench/harness.py [--quick] [--out DIR]`` from a checkout. The suite convention is
in bench/README.md; in short, a module ``bench/bench_<name>.py`` exposes either

    run(quick: bool) -> list[Result]            # measures side by side itself (preferred)
    add_benchmarks(runner: pyperf.Runner, quick: bool) -> None   # classic pyperf suites

Why a suite runs in its own process: a fork-based ProcessPoolExecutor cannot start workers
while any subinterpreter exists (the child hangs or aborts, CPython 3.12 and 3.13), memory
that destroyed interpreters keep (gh-110411) would distort the next suite's memory
figures, and a crash in one suite must not lose the others' results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

BENCH_DIR = Path(__file__).resolve().parent
SUITE_PREFIX = "bench_"


# -- what a suite returns --------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """One benchmark: the values measured for it and what they are comparable with.

    ``name``      unique in the run, "/"-separated: "scaling/nbody/sandboxes/2".
    ``values``    every measured value (not a summary): seconds, or bytes for memory.
    ``unit``      "second" or "byte" (pyperf's units).
    ``group``     results that were measured side by side and are compared in the table;
                  the one with ``baseline=True`` is what the others' ratios are against.
    ``params``    what the plots read: ``kernel``/``runner``/``workers`` (speedup plot),
                  ``method``/``payload_bytes`` (send-cost plot); anything else is shown.
    ``note``      one line for the table (e.g. "forkserver: pool made before sandboxes").
    """

    name: str
    values: list[float]
    unit: str = "second"
    group: str = ""
    baseline: bool = False
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        return cls(**data)


# -- helpers for suites -------------------------------------------------------------------


def usable_cpus() -> int:
    """The cores this process may run on (affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def worker_counts(cores: int | None = None) -> list[int]:
    """1..cores on small machines; on big ones 1, 2, 4, 8... and cores, to keep runs short."""
    cores = cores or usable_cpus()
    if cores <= 4:
        return list(range(1, cores + 1))
    counts = [1]
    while counts[-1] * 2 < cores:
        counts.append(counts[-1] * 2)
    return counts + [cores]


def tiny() -> bool:
    """``SUBSANDBOX_BENCH_TINY=1``: the smallest sizes that still exercise every path, for
    the harness's own smoke test (tests/test_bench.py). The numbers mean nothing."""
    return os.environ.get("SUBSANDBOX_BENCH_TINY") == "1"


def log(message: str) -> None:
    """Progress for the person waiting: stderr, so that stdout stays machine-readable."""
    print(f"  {message}", file=sys.stderr, flush=True)


def time_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_side_by_side(candidates: dict[str, Callable[[], object]], repeat: int,
                         warmup: int = 1) -> dict[str, list[float]]:
    """Time each candidate ``repeat`` times, round-robin, after ``warmup`` untimed rounds.

    Interleaving makes drift (turbo, other load on the machine) hit every candidate alike,
    so the ratios between them stay fair even when absolute times wander.
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    values: dict[str, list[float]] = {label: [] for label in candidates}
    for _ in range(repeat):
        for label, fn in candidates.items():
            values[label].append(time_call(fn))
    return values


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc)."""
    return _status_kib(pid, "VmRSS") * 1024


def memory_rollup(pid: int | str = "self") -> dict[str, int]:
    """RSS, PSS (shared pages split among sharers) and USS (private) of a process, bytes."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0),
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def _status_kib(pid: int | str, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def interpreter_pool_executor() -> type | None:
    """The standard InterpreterPoolExecutor (3.14+) or the backport's (3.13), else None.

    On 3.12 there is none that works: the backport for 3.12 segfaults on import here.
    """
    try:
        from concurrent.futures import InterpreterPoolExecutor  # type: ignore[attr-defined]

        return InterpreterPoolExecutor  # type: ignore[no-any-return]
    except ImportError:
        pass
    if sys.version_info >= (3, 13):
        try:
            from interpreters_backport.concurrent.futures.interpreter import (  # type: ignore
                InterpreterPoolExecutor,
            )

            return InterpreterPoolExecutor  # type: ignore[no-any-return]
        except ImportError:
            return None
    return None


def subsandbox_has(name: str) -> bool:
    """Whether ``subsandbox.<name>`` exists in this build (the executor and the policy
    arrive on their own branches; a lazy name whose module is missing raises ImportError)."""
    import subsandbox

    try:
        getattr(subsandbox, name)
    except (AttributeError, ImportError):
        return False
    return True


# -- the machine, named in every results folder -----------------------------------------


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import subsandbox

        version = subsandbox.__version__
    except ImportError:
        version = "not importable"
    return {
        "cpu": cpu,
        "cores": f"{usable_cpus()} usable of {os.cpu_count()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "subsandbox": version,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- finding and running suites ---------------------------------------------------------


def find_suites(bench_dir: Path = BENCH_DIR) -> list[str]:
    return sorted(p.stem for p in bench_dir.glob(f"{SUITE_PREFIX}*.py"))


def run_suite_here(name: str, quick: bool) -> list[Result]:
    """Import ``bench/<name>.py`` and run its ``run(quick)`` in this process."""
    module = importlib.import_module(name)
    run = getattr(module, "run", None)
    if run is None:
        raise TypeError(f"bench/{name}.py has no run(quick) (see bench/README.md)")
    results = []
    for r in run(quick):
        if not isinstance(r, Result) and dataclasses.is_dataclass(r):
            # The suite imported this file as "harness" while it runs as __main__.
            r = Result.from_json(dataclasses.asdict(r))  # type: ignore[arg-type]
        results.append(r)
        if not r.values or any(v <= 0 for v in r.values):
            raise ValueError(f"{name}: result {r.name!r} has values {r.values!r}; "
                             "every value must be a positive number")
    return results


# A quick run, not a precise one: one worker process per benchmark, two values, and loops
# calibrated to 20 ms instead of 100 ms. pyperf's own --fast still spends most of a quick
# run calibrating and starting processes (measured: bench_channel 114 s with --fast
# --processes 1, 15 s with these, on the loaded 2-core VM).
QUICK_PYPERF_OPTIONS = ["--quick-suite", "--processes", "1", "--values", "2",
                        "--warmups", "1", "--min-time", "0.02"]


def _suite_command(name: str, quick: bool, out: Path) -> list[str]:
    # Read, not imported: importing a suite here could create interpreters in the parent.
    source = (BENCH_DIR / f"{name}.py").read_text()
    if "\ndef run(" in source:
        return [sys.executable, str(BENCH_DIR / "harness.py"), "--run-suite", name,
                "--json", str(out)] + (["--quick"] if quick else [])
    if "\ndef add_benchmarks(" in source:
        return [sys.executable, str(BENCH_DIR / "harness.py"), "--pyperf-suite", name,
                "--output", str(out), "--quiet"] + (QUICK_PYPERF_OPTIONS if quick else [])
    raise TypeError(f"bench/{name}.py has neither run(quick) nor add_benchmarks(runner, "
                    "quick) (see bench/README.md)")


def _package_root() -> str:
    """The folder the running ``subsandbox`` was found in, for the suites' processes, if
    its C extension is built there.

    ``python -m subsandbox bench`` from a checkout built in place finds the package through
    the current folder, which a suite's process (PYTHONPATH=bench/) would not see. A
    checkout without the built extension is of no use to a suite: the installed package,
    found through sys.path as usual, is. Found without importing it (no interpreters are
    made in this process)."""
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("subsandbox")
    if spec is None or not spec.submodule_search_locations:
        return ""
    package = Path(next(iter(spec.submodule_search_locations))).resolve()
    built = any((package / f"_core{suffix}").exists()
                for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    return str(package.parent) if built else ""


def run_suite_in_subprocess(name: str, quick: bool, scratch: Path,
                            timeout: float) -> tuple[list[Result], str]:
    """Run one suite in a fresh interpreter; return its results and an error ("" if none)."""
    out = scratch / f"{name}.json"
    command = _suite_command(name, quick, out)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), _package_root(),
                                                      env.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run(command, env=env, timeout=timeout, stdout=subprocess.PIPE,
                              text=True)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f} s"
    if proc.returncode != 0:
        return [], f"exited with status {proc.returncode}"
    if "--pyperf-suite" in command:
        return _results_from_pyperf(name, out), ""
    data = json.loads(out.read_text())
    return [Result.from_json(d) for d in data], ""


# The pyperf metadata key under which a classic suite tells the report what a benchmark
# is compared with (see result_metadata).
RESULT_METADATA_KEY = "subsandbox_result"


def result_metadata(group: str, *, baseline: bool = False, note: str = "",
                    **params: Any) -> dict[str, str]:
    """``metadata=`` for ``runner.bench_time_func``: what a classic suite's benchmark is
    compared with in the table (``group``, ``baseline``) and plotted by (``params``), the
    same fields as a Result's. pyperf keeps it in its JSON; the harness reads it back."""
    info = {"group": group, "baseline": baseline, "note": note, "params": params}
    return {RESULT_METADATA_KEY: json.dumps(info, separators=(",", ":"))}


def _results_from_pyperf(suite: str, path: Path) -> list[Result]:
    import pyperf

    results = []
    for bench in pyperf.BenchmarkSuite.load(str(path)):
        unit = bench.get_unit()
        info = json.loads(bench.get_metadata().get(RESULT_METADATA_KEY, "{}"))
        results.append(Result(name=bench.get_name(), values=list(bench.get_values()),
                              unit=unit if unit in ("second", "byte") else "second",
                              group=info.get("group", suite),
                              baseline=bool(info.get("baseline", False)),
                              params=info.get("params", {}), note=info.get("note", "")))
    return results


def _run_pyperf_suite(name: str, argv: list[str]) -> None:
    """Entry point for classic suites: pyperf.Runner spawns its worker processes by running
    this file again with the same ``--pyperf-suite NAME`` argument."""
    import pyperf

    def keep_suite_arguments(cmd: list[str], args: argparse.Namespace) -> None:
        # pyperf's workers run "the benchmark number N": they must register the very same
        # list, so they get the same suite and the same quick flag (pyperf does not pass
        # --fast on to them).
        cmd.extend(["--pyperf-suite", args.pyperf_suite])
        if args.quick_suite:
            cmd.append("--quick-suite")

    runner = pyperf.Runner(add_cmdline_args=keep_suite_arguments)
    runner.argparser.add_argument("--pyperf-suite", required=True)
    runner.argparser.add_argument("--quick-suite", action="store_true")
    args = runner.parse_args(argv)
    importlib.import_module(name).add_benchmarks(runner, bool(args.quick_suite))


# -- writing the results folder --------------------------------------------------------------


def write_pyperf_json(results: Iterable[Result], path: Path, meta: dict[str, str]) -> None:
    """One pyperf BenchmarkSuite: ``python -m pyperf show/stats/compare_to`` read it."""
    import pyperf

    benchmarks = []
    for r in results:
        metadata: dict[str, Any] = {"name": r.name, "unit": r.unit,
                                    "description": _describe(r)}
        metadata.update({"cpu_model_name": meta["cpu"], "python_version": meta["python"]})
        run = pyperf.Run(r.values, metadata=metadata, collect_metadata=False)
        benchmarks.append(pyperf.Benchmark([run]))
    if benchmarks:
        pyperf.BenchmarkSuite(benchmarks).dump(str(path), replace=True)


def _describe(r: Result) -> str:
    parts = [f"{k}={v}" for k, v in r.params.items()]
    if r.group:
        parts.insert(0, f"group={r.group}")
    if r.note:
        parts.append(r.note)
    return "; ".join(parts) or r.name


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--pyperf-suite" in argv:
        name = argv[argv.index("--pyperf-suite") + 1]
        _run_pyperf_suite(name, argv)
        return 0
    parser = argparse.ArgumentParser(prog="python -m subsandbox bench",
                                     description="Run the benchmark suites in bench/.")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, few repeats: the whole run in under two minutes "
                             "on 2 cores")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: bench/results-<python>-<date>)")
    parser.add_argument("--suite", action="append", default=[],
                        help="run only this suite (e.g. scaling); may repeat")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds one suite may run (default 600, 110 with --quick)")
    parser.add_argument("--run-suite", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bench-dir", help=argparse.SUPPRESS)  # consumed by subsandbox
    args = parser.parse_args(argv)

    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    if args.run_suite:  # the child process of run_suite_in_subprocess
        results = run_suite_here(args.run_suite, args.quick)
        args.json.write_text(json.dumps([r.to_json() for r in results]))
        return 0

    names = find_suites()
    if args.suite:
        wanted = {s if s.startswith(SUITE_PREFIX) else SUITE_PREFIX + s for s in args.suite}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"no suite {', '.join(sorted(unknown))} in {BENCH_DIR} "
                         f"(found: {', '.join(names) or 'none'})")
        names = [n for n in names if n in wanted]
    meta = machine()
    out = args.out or BENCH_DIR / (
        f"results-{platform.python_version()}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "suites"
    scratch.mkdir(exist_ok=True)
    timeout = args.timeout or (110.0 if args.quick else 600.0)
    print(f"subsandbox benchmarks{' (quick)' if args.quick else ''}: {meta['python']}, "
          f"{meta['cpu']}, {meta['cores']} cores", flush=True)
    load_at_start = os.getloadavg()[0]
    all_results: list[Result] = []
    failures: dict[str, str] = {}
    started = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"- {name}", flush=True)
        results, error = run_suite_in_subprocess(name, args.quick, scratch, timeout)
        if error:
            failures[name] = error
            print(f"  FAILED: {error}", flush=True)
        else:
            print(f"  {len(results)} results in {time.perf_counter() - t0:.1f} s", flush=True)
        all_results.extend(results)
    meta["wall time"] = f"{time.perf_counter() - started:.0f} s"
    # Judged at the start only: by the end the 1-minute average counts this run's own
    # processes. (It decays slowly too: a run started right after another reads high.)
    meta["load average"] = f"{load_at_start:.2f} at start, {os.getloadavg()[0]:.2f} at end " + (
        "(other work was running or had just run: absolute times and scaling may be "
        "disturbed)" if load_at_start > 0.5 else "(machine quiet at start)")
    meta["mode"] = "quick" if args.quick else "full"

    import report

    write_pyperf_json(all_results, out / "results.pyperf.json", meta)
    (out / "results.json").write_text(json.dumps(
        {"machine": meta, "failures": failures,
         "results": [r.to_json() for r in all_results]}, indent=1))
    written = report.write_report(all_results, meta, failures, out)
    print(f"wrote {out}/: results.pyperf.json, results.json, "
          f"{', '.join(p.name for p in written)}")
    return 1 if failures else 0


def suite_main(run: Callable[[bool], list[Result]], argv: list[str] | None = None) -> int:
    """``__main__`` of a suite module: run it alone and print/write its results.

    ``python bench/bench_scaling.py [--quick] [-o FILE.json]`` writes pyperf JSON that
    ``python -m pyperf show FILE.json`` reads, and prints the Markdown table.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    results = run(args.quick)
    meta = machine()
    import report

    print(report.markdown_table(results, meta))
    if args.output:
        write_pyperf_json(results, args.output, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
