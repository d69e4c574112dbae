"""The warning before CPython 3.12 creates an interpreter under a hooked raw allocator.

CPython 3.12 sets the process-wide raw allocator to its default and back, without a lock,
while it creates any interpreter (``_Py_ClearStandardStreamEncoding``); with the debug
hooks or tracemalloc on the raw domain, another thread's allocation in that moment
corrupts the heap (docs/lifecycle.md has the evidence). subsandbox cannot close that
window, so it says so: ``subsandbox.AllocatorRaceWarning``, once per process, on 3.12 only.
Each case runs in a fresh process, since the hooks are chosen at startup.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ALLOCATOR_RACE_WARNED_HERE

HOOKED = [
    (["-X", "dev"], {}),
    ([], {"PYTHONMALLOC": "debug"}),
    ([], {"PYTHONMALLOC": "pymalloc_debug"}),
    (["-X", "tracemalloc"], {}),
]
NOT_HOOKED = [
    ([], {}),
    (["-X", "dev"], {"PYTHONMALLOC": "malloc"}),   # dev mode without the allocator hooks
    ([], {"PYTHONMALLOC": "malloc"}),
]
IDS_HOOKED = ["X-dev", "malloc-debug", "pymalloc-debug", "tracemalloc"]
IDS_NOT_HOOKED = ["default", "X-dev-malloc", "malloc"]


def run(options: list[str], env: dict[str, str], source: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "PYTHONDEVMODE",
                                                                  "PYTHONTRACEMALLOC")}
    full_env.update(env, PYTHONFAULTHANDLER="1")
    return subprocess.run([sys.executable, *options, "-c", textwrap.dedent(source)],
                          capture_output=True, text=True, timeout=120, env=full_env)


HOOKED_PROBE = "from subsandbox import _core; print(_core._raw_allocator_hooked())"

TWO_SANDBOXES = """
import warnings
import subsandbox
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for n in (1, 2):
        with subsandbox.Sandbox() as sb:
            assert sb.call(abs, -n) == n
print(sum(issubclass(w.category, subsandbox.AllocatorRaceWarning) for w in caught), flush=True)
# Not the normal exit: under tracemalloc, CPython 3.12 crashes there once an isolated
# interpreter has existed (gh-110029), as the warning says; this test is about the warning.
import os; os._exit(0)
"""


@pytest.mark.parametrize("options, env", HOOKED, ids=IDS_HOOKED)
def test_hooked_allocators_are_seen_and_warned_of_once(options, env) -> None:
    result = run(options, env, HOOKED_PROBE)
    assert (result.returncode, result.stdout) == (0, "True\n"), result.stderr
    result = run(options, env, TWO_SANDBOXES)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("1\n" if ALLOCATOR_RACE_WARNED_HERE else "0\n")


@pytest.mark.parametrize("options, env", NOT_HOOKED, ids=IDS_NOT_HOOKED)
def test_default_allocators_get_no_warning(options, env) -> None:
    result = run(options, env, HOOKED_PROBE)
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr
    result = run(options, env, TWO_SANDBOXES)
    assert (result.returncode, result.stdout) == (0, "0\n"), result.stderr


def test_tracemalloc_started_later_is_seen() -> None:
    # The hooks can come and go while the process runs: the check is made at each creation.
    result = run([], {}, """
        import tracemalloc
        from subsandbox import _core
        before = _core._raw_allocator_hooked()
        tracemalloc.start()
        during = _core._raw_allocator_hooked()
        tracemalloc.stop()
        print(before, during, _core._raw_allocator_hooked())
    """)
    assert (result.returncode, result.stdout) == (0, "False True False\n"), result.stderr


def test_warning_as_error_refuses_the_sandbox_and_loses_nothing() -> None:
    # Under -W error, 3.12 refuses the sandbox before any interpreter exists, and the same
    # call with the warning allowed then works; 3.13+ has nothing to warn of.
    result = run(["-X", "dev"], {}, """
        import sys, threading, warnings
        import subsandbox
        warnings.simplefilter("error", subsandbox.AllocatorRaceWarning)
        try:
            with subsandbox.Sandbox() as sb:
                print("made", sb.call(abs, -1))
        except subsandbox.AllocatorRaceWarning as exc:
            assert "CPython 3.12" in str(exc) and "PYTHONMALLOC=malloc" in str(exc), exc
            assert threading.active_count() == 1    # no worker thread was left behind
            print("refused")
        warnings.simplefilter("ignore", subsandbox.AllocatorRaceWarning)
        with subsandbox.Sandbox() as sb:
            print(sb.call(sum, range(10)))
    """)
    expected = "refused\n45\n" if ALLOCATOR_RACE_WARNED_HERE else "made 1\n45\n"
    assert (result.returncode, result.stdout) == (0, expected), result.stderr
