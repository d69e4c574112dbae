"""Stress: four sandboxes and the main interpreter hammer one shared graph at once.

The graph (tests/_stress_work.py) has more than 300,000 arena objects: strings of every
kind, ints, floats, complex numbers, bytes, tuples, immutable sets and frozendicts. Each
interpreter hashes them, keys its own dicts with them, looks them up with equal keys of
its own, sets attributes and dunder slots with shared names, interns, encodes, formats,
compares, iterates and evaluates them, all at the same time; the sandboxes then close and
the main interpreter checks every value (type, value, hash, interned state) against a
fresh copy. The same run repeats in a fresh process under ``-X dev`` and under
``PYTHONMALLOC=debug``, whose allocator checks catch a write into memory that is not the
writer's own.

``SUBSANDBOX_STRESS_RECORDS`` sets the size (default 22,000 records, about 333,000
objects); the sanitizer runs (tools/sanitizers.sh) make it smaller.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import subsandbox

import _stress_work
from conftest import without_allocator_race_warning

DEFAULT_RECORDS = 22_000
RECORDS = int(os.environ.get("SUBSANDBOX_STRESS_RECORDS", DEFAULT_RECORDS))
SANDBOXES = 4
# make_data() gives about 15 distinct arena objects per record (see its layout).
MIN_OBJECTS_PER_RECORD = 15


def _check_result(result: dict[str, int]) -> None:
    assert result["objects"] >= MIN_OBJECTS_PER_RECORD * RECORDS
    if RECORDS >= DEFAULT_RECORDS:
        assert result["objects"] >= 300_000
    # Every record was checked by every interpreter (they agreed on the count), and the
    # final walk compared at least every arena object once.
    assert result["checks"] >= RECORDS
    assert result["compared"] >= result["objects"]


def test_sandboxes_and_main_hammer_one_shared_graph() -> None:
    _check_result(_stress_work.run_stress(RECORDS, SANDBOXES))


def test_graph_is_as_big_as_claimed() -> None:
    # The object count itself must not be an artefact of the counting walk: the arena
    # grew by at least the bytes of that many objects (16 bytes is the smallest object).
    with subsandbox.Arena() as arena:
        graph = arena.share(_stress_work.make_data(1000))
        objects = _stress_work.count_shared_objects(graph)
        assert objects >= MIN_OBJECTS_PER_RECORD * 1000
        assert arena.nbytes >= 16 * objects


@pytest.mark.parametrize(
    "options, env",
    [(["-X", "dev"], {}), ([], {"PYTHONMALLOC": "debug"})],
    ids=["X-dev", "malloc-debug"],
)
def test_stress_under_dev_mode_and_debug_malloc(options: list[str], env: dict[str, str]) -> None:
    # The package the main interpreter imported (installed or a checkout), and this
    # directory for the workload module; sandboxes copy the process's sys.path.
    package_root = Path(subsandbox.__file__).resolve().parents[1]
    path = os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, *options, str(Path(_stress_work.__file__)),
         str(RECORDS), str(SANDBOXES)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=path, PYTHONFAULTHANDLER="1", **env),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # -X dev shows every warning (ResourceWarning, DeprecationWarning...), and the debug
    # allocator reports on stderr: a clean run prints nothing there but, on 3.12, the
    # warning about its interpreter creation under these hooks (the workload starts its
    # sandboxes one at a time, before any of them works, so the race cannot strike).
    assert without_allocator_race_warning(proc.stderr) == ""
    _check_result(ast.literal_eval(proc.stdout.strip()))
