"""The benchmark harness (bench/), on tiny sizes: it finds suites, runs each in its own
process, reports a failing suite without losing the others, and writes pyperf JSON, the
Markdown table and the plots. No time is asserted: the numbers of a tiny run mean nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import mmap
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import subsandbox

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The folder holding the subsandbox under test: the checkout (PYTHONPATH) in development,
# site-packages when installed (tools/sanitizers.sh installs an instrumented build, and the
# checkout's own subsandbox/ has no _core for that Python).
PACKAGE_PARENT = Path(subsandbox.__file__).resolve().parents[1]
# The plots need matplotlib, a test dependency. The sanitizer Pythons of tools/sanitizers.sh
# are pydebug builds (ABI cpython-313d), for which PyPI has no numpy or matplotlib wheels:
# there the report must say instead that it drew none, and everything else is checked.
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
NO_PLOTS = "No plots: matplotlib is not installed"

sys.path.insert(0, str(BENCH))
import harness  # noqa: E402  (bench/ is not a package: its modules import each other flat)
import report  # noqa: E402

from harness import Result  # noqa: E402


def _bench(*args: str, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "subsandbox", "bench", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_report_ratios_tables_and_plots(tmp_path: Path) -> None:
    results = [
        Result("scaling/k/sequential", [2.0, 2.0, 2.2], group="scaling/k", baseline=True,
               params={"kernel": "k"}),
        Result("scaling/k/sandboxes/2", [1.0, 1.1, 0.9], group="scaling/k",
               params={"kernel": "k", "runner": "sandboxes", "workers": 2}),
        Result("scaling/k/threads/2", [2.0, 2.1], group="scaling/k",
               params={"kernel": "k", "runner": "threads", "workers": 2}),
        Result("share/send/pickle/1MB", [1e-3], group="share/send", baseline=True,
               params={"method": "pickle", "payload_bytes": 1 << 20}),
        Result("share/send/share/1MB", [1e-6], group="share/send",
               params={"method": "share", "payload_bytes": 1 << 20}),
        Result("startup/memory/process", [8 << 20], unit="byte", group="startup/memory",
               baseline=True),
        Result("startup/memory/sandbox", [2 << 20], unit="byte", group="startup/memory"),
    ]
    meta = {"cpu": "test cpu", "cores": "2 usable of 2", "python": "CPython x"}
    written = report.write_report(results, meta, {"bench_broken": "exited with status 1"},
                                  tmp_path)
    md = (tmp_path / "results.md").read_text()
    if HAVE_MATPLOTLIB:
        assert [p.name for p in written] == ["results.md", "speedup.png", "send_cost.png"]
    else:
        assert [p.name for p in written] == ["results.md"] and NO_PLOTS in md
    assert "| sandboxes/2 | 1 s | ± 10% | 3 | 2.00x |" in md     # 2.0 / 1.0: a speedup
    assert "| threads/2 | 2.05 s |" in md
    assert "| sandbox | 2.0 MiB |" in md and "0.25x" in md          # bytes: value / baseline
    assert "**bench_broken failed**: exited with status 1" in md
    assert "test cpu" in md
    for png in written[1:]:
        assert png.read_bytes().startswith(PNG_MAGIC)

    import pyperf

    harness.write_pyperf_json(results, tmp_path / "r.json", meta)
    suite = pyperf.BenchmarkSuite.load(str(tmp_path / "r.json"))
    assert suite.get_benchmark_names() == [r.name for r in results]
    memory = suite.get_benchmark("startup/memory/sandbox")
    assert memory.get_unit() == "byte" and memory.get_values() == (2 << 20,)


def test_worker_counts() -> None:
    assert harness.worker_counts(1) == [1]
    assert harness.worker_counts(2) == [1, 2]
    assert harness.worker_counts(16) == [1, 2, 4, 8, 16]
    assert harness.worker_counts(12) == [1, 2, 4, 8, 12]


def _fake_bench_dir(tmp_path: Path, suites: dict[str, str]) -> Path:
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("harness.py", "report.py"):
        shutil.copy(BENCH / name, bench / name)
    for name, source in suites.items():
        (bench / f"{name}.py").write_text(textwrap.dedent(source))
    return bench


def test_a_failing_suite_is_reported_and_the_others_kept(tmp_path: Path) -> None:
    bench = _fake_bench_dir(tmp_path, {
        "bench_boom": """
            def run(quick):
                raise RuntimeError("this suite is broken")
        """,
        "bench_fine": """
            import sys
            import harness
            from harness import Result

            def run(quick):
                assert quick is True
                return [Result("fine/one", [0.5, 0.25], group="fine", baseline=True),
                        Result("fine/two", [0.125], group="fine")]

            if __name__ == "__main__":
                sys.exit(harness.suite_main(run))
        """,
        "not_a_suite": "raise SystemExit('the harness must not import this')",
    })
    out = tmp_path / "out"
    proc = _bench("--quick", "--out", str(out), "--bench-dir", str(bench))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "this suite is broken" in proc.stderr
    data = json.loads((out / "results.json").read_text())
    assert data["failures"] == {"bench_boom": "exited with status 1"}
    assert [r["name"] for r in data["results"]] == ["fine/one", "fine/two"]
    assert "| two | 125 ms |" in (out / "results.md").read_text()

    # A suite also runs alone, as a script, and prints its table.
    alone = subprocess.run([sys.executable, str(bench / "bench_fine.py"), "--quick"],
                           capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0, alone.stderr
    assert "| one | 375 ms |" in alone.stdout and "3.00x" in alone.stdout


def test_a_pyperf_suite_says_what_its_benchmarks_are_compared_with(tmp_path: Path) -> None:
    # A classic suite (pyperf's Runner, worker processes of its own) passes result_metadata:
    # the table compares within its groups and the send-cost plot reads its params. It
    # imports subsandbox from the folder the command found it in, whatever PYTHONPATH is.
    bench = _fake_bench_dir(tmp_path, {
        "bench_sends": """
            import harness
            import subsandbox

            def sleeper(seconds):
                def time_func(loops):
                    return loops * seconds
                return time_func

            def add_benchmarks(runner, quick):
                assert quick is True
                for size, copy, shared in ((1024, 0.004, 0.001), (1 << 20, 0.064, 0.001)):
                    runner.bench_time_func(
                        f"copy/{size}", sleeper(copy), metadata=harness.result_metadata(
                            f"send {size}", baseline=True, method="copy", payload_bytes=size))
                    runner.bench_time_func(
                        f"shared/{size}", sleeper(shared), metadata=harness.result_metadata(
                            f"send {size}", method="shared", payload_bytes=size,
                            note=type(subsandbox.share(size)).__name__))
        """,
    })
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Started from the folder holding the package under test, PYTHONPATH unset: only the
    # current folder (sys.path[0] of `python -m`) can find it.
    proc = subprocess.run([sys.executable, "-m", "subsandbox", "bench", "--quick", "--out",
                           str(out), "--bench-dir", str(bench)], capture_output=True,
                          text=True, timeout=600, cwd=PACKAGE_PARENT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = _by_name(json.loads((out / "results.json").read_text())["results"])
    assert results["copy/1024"]["group"] == "send 1024" and results["copy/1024"]["baseline"]
    assert results["shared/1048576"]["params"] == {"method": "shared", "payload_bytes": 1 << 20}
    assert results["shared/1048576"]["note"] == "int"
    md = (out / "results.md").read_text()
    assert "4.00x" in md and "64.00x" in md       # copy / shared, within each size's group
    if HAVE_MATPLOTLIB:
        assert (out / "send_cost.png").read_bytes().startswith(PNG_MAGIC)
    else:
        assert NO_PLOTS in md


def test_unknown_suite_and_missing_bench_dir(tmp_path: Path) -> None:
    proc = _bench("--suite", "nonesuch", "--bench-dir", str(BENCH), "--out", str(tmp_path))
    assert proc.returncode == 2 and "no suite bench_nonesuch" in proc.stderr
    proc = _bench("--bench-dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "--bench-dir" in proc.stderr


def _by_name(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in results}


def test_the_real_suites_run_on_tiny_sizes(tmp_path: Path) -> None:
    """bench_scaling and bench_startup end to end: every kind of worker runs every kernel
    (each checks its answers against the sequential ones), the fork pool starts before the
    first sandbox, and the plots are drawn. Found from the current folder (no --bench-dir):
    bench/ itself, which (unlike the checkout's root) holds no subsandbox/ that could shadow
    the package under test."""
    out = tmp_path / "out"
    proc = _bench("--quick", "--suite", "scaling", "--suite", "startup", "--out", str(out),
                  env={"SUBSANDBOX_BENCH_TINY": "1"}, cwd=BENCH)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = _by_name(json.loads((out / "results.json").read_text())["results"])
    runners = ["threads", "sandboxes", "processes-fork", "processes-forkserver"]
    if harness.interpreter_pool_executor() is not None:
        runners.append("interpreters")
    cores = harness.usable_cpus()
    for kernel in ("nbody", "fannkuch", "text-scoring"):
        assert results[f"scaling/{kernel}/sequential"]["baseline"]
        counts = harness.worker_counts(cores)
        for runner in runners:
            # threads do not scale: measured at 1 and N only
            for w in (counts[0], counts[-1]) if runner == "threads" else counts:
                r = results[f"scaling/{kernel}/{runner}/{w}"]
                assert r["params"] == {"kernel": kernel, "runner": runner, "workers": w,
                                       "tasks": 4 * cores}
    for runner in ("processes-fork", "processes-forkserver", "threads", "sandboxes"):
        ready = results[f"startup/ready/{runner}"]
        assert ready["note"] == f"{cores} distinct workers answered"
        assert f"startup/memory/{runner}" in results
    if HAVE_MATPLOTLIB:
        assert (out / "speedup.png").read_bytes().startswith(PNG_MAGIC)
    else:
        assert NO_PLOTS in (out / "results.md").read_text()
    assert not (out / "send_cost.png").exists()       # no suite here measured sends


def test_startup_probes_again_with_a_longer_hold_when_workers_were_shared(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool whose second worker started after the first finished its held task answers
    with fewer distinct workers: not a ready pool. The probe runs again in a new process
    with twice the hold, and gives up (reporting the shortfall) past HOLD_MAX."""
    import bench_startup

    holds: list[float] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert argv[2:5] == ["--probe", "threads", "2"]
        hold = float(argv[5])
        holds.append(hold)
        distinct = 2 if hold >= answers_from else 1
        out = json.dumps({"ready": 0.01, "distinct": distinct, "hold": hold})
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(bench_startup.subprocess, "run", fake_run)
    answers_from = 0.8
    sample = bench_startup._probe_in_a_new_process("threads", 2)
    assert holds == [0.2, 0.4, 0.8] and sample["distinct"] == 2 and sample["hold"] == 0.8
    holds.clear()
    answers_from = 100.0
    sample = bench_startup._probe_in_a_new_process("threads", 2)
    assert holds == [0.2, 0.4, 0.8, 1.6, 3.2] and sample["distinct"] == 1


def test_efficiency_pairs_every_runner_in_every_round(tmp_path: Path) -> None:
    """bench/efficiency.py end to end on tiny sizes: every runner ran every kernel in every
    round (each run checked against the sequential answers), and the table's efficiencies
    are computed per round from that round's own times."""
    out = tmp_path / "times.json"
    proc = subprocess.run([sys.executable, str(BENCH / "efficiency.py"), "--rounds", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={**os.environ, "SUBSANDBOX_BENCH_TINY": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    n = harness.usable_cpus()
    labels = {"sequential"} | {f"{kind}/{w}" for kind in ("sandbox-pool", "processes-fork",
                                                          "processes-forkserver")
                               for w in {1, n}}
    assert set(result["times"]) == {"nbody", "fannkuch", "text-scoring"}
    for times in result["times"].values():
        assert set(times) == labels
        assert all(len(v) == 2 and min(v) > 0 for v in times.values())
    import efficiency

    fork = result["times"]["nbody"]
    expected = [a / (n * b) for a, b in zip(fork["processes-fork/1"],
                                            fork[f"processes-fork/{n}"])]
    got = efficiency.efficiencies(result)["nbody"]["processes-fork"]
    assert got["self"] == expected
    # Every task reported its own thread's CPU time: the slowdown and busy share come
    # from those sums, round by round.
    cpu = result["cpu"]["nbody"]
    assert set(cpu) == labels and all(min(v) > 0 for v in cpu.values())
    assert got["slowdown"] == [b / a for a, b in zip(cpu["processes-fork/1"],
                                                     cpu[f"processes-fork/{n}"])]
    assert got["busy"] == [c / (n * w) for c, w in zip(cpu[f"processes-fork/{n}"],
                                                       fork[f"processes-fork/{n}"])]
    assert "| text-scoring | sandbox-pool |" in proc.stdout


def test_efficiency_refuses_a_senseless_round_count() -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "efficiency.py"), "--rounds", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--rounds must be at least 1" in proc.stderr


def test_send_cost_pairs_each_size_with_a_call_of_none(tmp_path: Path) -> None:
    """bench/send_cost.py end to end on tiny loops: one cost per round for every kind of
    data, both for the crossing alone and for a whole Sandbox.call."""
    out = tmp_path / "costs.json"
    proc = subprocess.run([sys.executable, str(BENCH / "send_cost.py"), "--sizes", "1KB",
                           "--rounds", "2", "--json", str(out)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "SUBSANDBOX_BENCH_TINY": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert set(result["costs"]) == {"table-1KB", "corpus-1KB", "mapping-1KB"}
    for costs in result["costs"].values():
        assert len(costs["cross"]) == 2 and len(costs["call"]) == 2
    assert "| mapping-1KB |" in proc.stdout


def test_send_cost_names_an_unknown_size() -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "send_cost.py"), "--sizes", "2GB"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown size '2GB'" in proc.stderr and "1KB,1MB,100MB" in proc.stderr


def test_share_ratio_plot_reads_bench_share_files(tmp_path: Path) -> None:
    """bench/plot_share_ratio.py: the ratios it draws are bench_share.py's (share ÷ pickle,
    share-freed ÷ pickle, share-dflt and share-new ÷ pickle-fresh, fresh-mem ÷ pickle),
    from the medians of a pyperf file."""
    import plot_share_ratio

    times = {"share-table-1KB": 4e-6, "share-freed-table-1KB": 1e-6,
             "share-dflt-table-1KB": 6e-6, "pickle-table-1KB": 2e-6,
             "pickle-fresh-table-1KB": 3e-6, "share-new-table-1KB": 1.5e-6,
             "fresh-mem-table-1KB": 5e-6, "share-corpus-1MB": 1e-3,
             "pickle-corpus-1MB": 4e-3}
    results = [Result(name, [t, t * 1.1, t * 0.9]) for name, t in times.items()]
    path = tmp_path / "share.json"
    harness.write_pyperf_json(results, path, {"cpu": "test cpu", "python": "3.99.0"})
    version, found = plot_share_ratio.medians(str(path))
    assert version == "3.99.0" and found["pickle-table-1KB"] == 2e-6
    sets = plot_share_ratio.data_sets(found)
    assert sets == ["table-1KB", "corpus-1MB"]
    r = plot_share_ratio.ratios(found, sets)
    assert r["fresh arena"] == [2.0, 0.25]
    assert r["memory reused"][0] == 0.5 and math.isnan(r["memory reused"][1])  # not run
    assert r["default arena (new data)"][0] == 2.0          # ÷ pickle-fresh, not pickle
    assert r["new data, memory reused"][0] == 0.5           # ÷ pickle-fresh too
    assert r["its new memory alone"][0] == pytest.approx(2.5)   # ÷ pickle

    if not HAVE_MATPLOTLIB:
        return          # the drawing itself is matplotlib's (see HAVE_MATPLOTLIB)
    png = tmp_path / "plot.png"
    proc = subprocess.run([sys.executable, str(BENCH / "plot_share_ratio.py"), str(path),
                           str(path), "-o", str(png)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_bench_share_times_blocks_of_calls_over_every_loop() -> None:
    """bench_share.py times blocks of calls (no clock read around each 1 KB call, which
    cost more than the call on a VM): every loop is still done exactly once, new variants
    are new, and share-freed gives every arena back."""
    import bench_share

    import subsandbox
    from subsandbox import _core

    assert bench_share._blocks(130, "1KB") == [64, 64, 2]
    assert bench_share._blocks(3, "1MB") == [1, 1, 1]
    assert bench_share._blocks(0, "1KB") == []

    calls: list[object] = []
    first = bench_share._next_variant[0]
    seconds = bench_share._time_on_new_variants(130, "corpus", "1KB", calls.append)
    assert len(calls) == 130 and seconds > 0
    assert bench_share._next_variant[0] == first + 130
    assert len({c[0] for c in calls}) == 130    # each a variant of its own (first sentence)

    live = _core._arena_stats()["live_arenas"]
    assert bench_share.time_share_freed(0, "table", "1KB") == 0.0
    assert math.isfinite(bench_share.time_share_freed(70, "table", "1KB"))
    assert _core._arena_stats()["live_arenas"] == live     # every arena given back
    first = bench_share._next_variant[0]
    assert math.isfinite(bench_share.time_share_new(70, "table", "1KB"))
    assert bench_share._next_variant[0] == first + 70      # new data for every call
    assert _core._arena_stats()["live_arenas"] == live     # and every arena given back
    assert bench_share.time_share(70, "table", "1KB") > 0
    # The main interpreter holds each arena it shared into: they stay, closed.
    assert _core._arena_stats()["live_arenas"] == live + 70

    # fresh-mem: whole pages that hold what a fresh arena allocates for the value, in new
    # memory populated for every loop (and kept, so the next timing's is new too); huge
    # pages where the arena's blocks are mapped ones.
    for size, loops, blocks in (("1KB", 70, [64, 6]), ("1MB", 2, [1, 1])):
        arena = subsandbox.Arena()
        ref = arena.share_detached(bench_share.plain("table", size))
        nbytes, huge = bench_share.fresh_memory("table", size)
        assert nbytes % mmap.PAGESIZE == 0
        assert arena.nbytes <= nbytes < arena.nbytes + mmap.PAGESIZE
        assert huge == (size == "1MB")
        del ref
        arena.close()
        kept = len(bench_share._kept_mappings)
        rss_before = harness.memory_rollup()["rss"]
        assert bench_share.time_fresh_mem(loops, "table", size) > 0
        # Faulted in, not just mapped.
        assert harness.memory_rollup()["rss"] - rss_before >= loops * nbytes
        spare = 2 << 20 if huge else 0                         # room to align huge pages
        assert [len(m) for m in bench_share._kept_mappings[kept:]] == [
            n * nbytes + spare for n in blocks]


def test_share_in_a_row_measures_share_and_both_pickles_in_one_process(
        tmp_path: Path) -> None:
    """bench/share_in_a_row.py end to end on a few calls, with huge pages turned off in
    its measuring processes: every data set gets CPU time per call and page faults for
    share() and for pickle.dumps, kept and dropped."""
    out = tmp_path / "row.json"
    proc = subprocess.run([sys.executable, str(BENCH / "share_in_a_row.py"), "--count", "8",
                           "--sizes", "1KB", "--kinds", "table,mapping", "--no-thp",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["thp"] is False
    assert set(result["cells"]) == {"table 1KB", "mapping 1KB"}
    for cell in result["cells"].values():
        assert cell["count"] == 8 and cell["block"] == 8
        for measure in ("share", "pickle kept", "pickle"):
            assert cell[measure]["cpu"] > 0 and 0 <= cell[measure]["sys_share"] <= 1
    assert "| mapping 1KB | 8 |" in proc.stdout


def test_share_in_a_row_refuses_sizes_it_cannot_repeat() -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "share_in_a_row.py"), "--sizes",
                           "100MB"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown size '100MB'" in proc.stderr and "bench_share.py" in proc.stderr
