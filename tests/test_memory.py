"""Arena memory is given back: cycles of share ~50 MB, use it in two sandboxes, close all.

Each run is a fresh process (tests/_memory_work.py) so that RSS belongs to the run alone.
Per cycle: the main interpreter makes an Arena and passes the handle to sandbox A, which
shares a table into it and sends the root through a channel to sandbox B, which reads it
all; main never receives an object of the arena (docs/shared-memory.md: the main
interpreter would stay a holder until exit). Then both sandboxes close.

What is asserted:
  - right after each cycle the arena is gone from ``_core._arena_stats()``, and at the end
    no arena and no reserved byte is left;
  - RSS after warm-up grows no more than in a control run that does the same sandbox
    churn and builds the same rows without sharing them, give or take one arena. Every
    destroyed interpreter keeps ~3 MiB inside CPython (gh-110411; bench/memory_figures.py
    measures it), in both runs alike, so RSS itself is not flat while sandboxes are
    created and destroyed;
  - the negative control: when main does receive the table, every arena stays and RSS
    grows by at least the arenas' size, so the RSS measurement does see arena memory.

The same check in "detached" mode covers ``Arena.share_detached``: the main interpreter
builds each table and shares it detached, both sandboxes read it through the
``SharedRef``, and the arena must still be gone after each cycle.

The full figure (100 cycles of 50 MB, two runs of 100 cycles) is ``@pytest.mark.slow``;
the default run does 6 cycles of 16 MB. ``SUBSANDBOX_MEMORY_MB`` sets the arena size of
every test here, ``SUBSANDBOX_MEMORY_CYCLES`` the slow test's cycles (the sanitizer runs
use both). Run the slow test with ``pytest -m slow tests/test_memory.py`` (or
``nox -- -m slow``); the default run deselects it (pyproject.toml).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

import subsandbox

import _memory_work

MIB = 2**20
# Under a sanitizer the allocator is the sanitizer's (ASan keeps freed memory in a
# quarantine of up to 256 MB): RSS then says nothing about our arenas, and only the
# arena statistics are checked.
RSS_MEANINGFUL = not any(
    f"--with-{kind}-sanitizer" in (sysconfig.get_config_var("CONFIG_ARGS") or "")
    for kind in ("address", "thread", "memory"))
# Arena size per cycle (MB); the sanitizer runs make it smaller.
MEGABYTES = float(os.environ.get("SUBSANDBOX_MEMORY_MB", 0)) or None


def _run(cycles: int, megabytes: float, mode: str) -> dict[str, Any]:
    package_root = Path(subsandbox.__file__).resolve().parents[1]
    path = os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(Path(_memory_work.__file__)), str(cycles), str(megabytes), mode],
        capture_output=True, text=True, timeout=1800,
        env=dict(os.environ, PYTHONPATH=path, PYTHONFAULTHANDLER="1"),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _check_given_back(cycles: int, megabytes: float, warmup: int, mode: str = "share",
                      control_mode: str = "control") -> dict[str, Any]:
    shared = _run(cycles, megabytes, mode)
    control = _run(cycles, megabytes, control_mode)
    arena_mib = min(shared["arena_nbytes"]) / MIB

    # The arenas were as big as asked, existed while B read them, and each one was
    # freed as soon as its cycle ended.
    assert arena_mib >= 0.9 * megabytes
    assert shared["alive_while_used"]
    assert shared["arenas_left"] == []
    assert shared["live_arenas_after"] == shared["live_arenas_before"]
    assert shared["bytes_reserved_after"] == shared["bytes_reserved_before"]

    if not RSS_MEANINGFUL:
        return shared
    grown = shared["rss_mib"][-1] - shared["rss_mib"][warmup]
    grown_control = control["rss_mib"][-1] - control["rss_mib"][warmup]
    # If arenas were kept, ``grown`` would exceed the control by (cycles - warmup) arenas.
    assert grown - grown_control < 1.5 * arena_mib, (
        f"RSS grew {grown:.0f} MiB over {cycles - warmup} cycles of {arena_mib:.0f} MiB "
        f"arenas, the control {grown_control:.0f} MiB: {shared['rss_mib']} vs "
        f"{control['rss_mib']}")
    return shared


def test_arena_memory_is_given_back() -> None:
    _check_given_back(cycles=6, megabytes=MEGABYTES or 16, warmup=2)


def test_rss_sees_arenas_that_must_stay() -> None:
    # Negative control of the RSS figure: main receives the table, so no arena may go.
    pinned = _run(3, MEGABYTES or 16, "pinned")
    arena_mib = min(pinned["arena_nbytes"]) / MIB
    assert len(pinned["arenas_left"]) == 3
    assert pinned["live_arenas_after"] == pinned["live_arenas_before"] + 3
    if RSS_MEANINGFUL:
        assert pinned["rss_mib"][-1] - pinned["rss_mib"][0] >= 3 * arena_mib


@pytest.mark.slow
def test_arena_memory_is_given_back_100_cycles_of_50_mb() -> None:
    cycles = int(os.environ.get("SUBSANDBOX_MEMORY_CYCLES", 100))
    megabytes = MEGABYTES or 50
    _check_given_back(cycles=cycles, megabytes=megabytes, warmup=max(1, cycles // 10))


# ---- the main interpreter's data, shared detached (Arena.share_detached) ----------------


def test_detached_arena_memory_is_given_back() -> None:
    # Main prepares each table and passes a SharedRef to both sandboxes: main never holds
    # the arena, so each one is freed at the end of its cycle.
    _check_given_back(cycles=4, megabytes=MEGABYTES or 8, warmup=1, mode="detached",
                      control_mode="detached-control")


@pytest.mark.slow
def test_detached_arena_memory_is_given_back_100_cycles_of_50_mb() -> None:
    cycles = int(os.environ.get("SUBSANDBOX_MEMORY_CYCLES", 100))
    megabytes = MEGABYTES or 50
    shared = _check_given_back(cycles=cycles, megabytes=megabytes,
                               warmup=max(1, cycles // 10), mode="detached",
                               control_mode="detached-control")
    # The figure for docs/shared-memory.md, printed with pytest -s.
    print(f"\ndetached: {cycles} cycles of {min(shared['arena_nbytes']) / MIB:.0f} MiB arenas, "
          f"RSS (MiB) after cycle 0/{max(1, cycles // 10)}/{cycles}: "
          f"{shared['rss_mib'][0]:.0f}/{shared['rss_mib'][max(1, cycles // 10)]:.0f}/"
          f"{shared['rss_mib'][-1]:.0f}, {shared['seconds']:.0f} s")
