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
import sysconfig
import textwrap

import pytest

from conftest import ALLOCATOR_RACE_WARNED_HERE

# A debug build (--with-pydebug, as the sanitizer Pythons of tools/sanitizers.sh are)
# installs the debug hooks by default (PYTHONMALLOC's documentation): its default
# allocators are hooked ones.
DEFAULT_HOOKED = hasattr(sys, "gettotalrefcount")
# pymalloc_debug exists only in a build with pymalloc; one built --without-pymalloc (the
# ASan Python of tools/sanitizers.sh: ASan must see every allocation) refuses it at startup
# ("PYTHONMALLOC: unknown allocator").
needs_pymalloc = pytest.mark.skipif(
    not sysconfig.get_config_var("WITH_PYMALLOC"),
    reason="CPython built --without-pymalloc has no pymalloc_debug allocator")
DEFAULT = pytest.param([], {}, id="default")
HOOKED = [
    pytest.param(["-X", "dev"], {}, id="X-dev"),
    pytest.param([], {"PYTHONMALLOC": "debug"}, id="malloc-debug"),
    pytest.param([], {"PYTHONMALLOC": "pymalloc_debug"}, id="pymalloc-debug",
                 marks=needs_pymalloc),
    *([DEFAULT] if DEFAULT_HOOKED else []),
]
NOT_HOOKED = [
    *([] if DEFAULT_HOOKED else [DEFAULT]),
    # dev mode without the allocator hooks
    pytest.param(["-X", "dev"], {"PYTHONMALLOC": "malloc"}, id="X-dev-malloc"),
    pytest.param([], {"PYTHONMALLOC": "malloc"}, id="malloc"),
]


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
"""


@pytest.mark.parametrize("options, env", HOOKED)
def test_hooked_allocators_are_seen_and_warned_of_once(options, env) -> None:
    result = run(options, env, HOOKED_PROBE)
    assert (result.returncode, result.stdout) == (0, "True\n"), result.stderr
    result = run(options, env, TWO_SANDBOXES)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("1\n" if ALLOCATOR_RACE_WARNED_HERE else "0\n")


@pytest.mark.parametrize("options, env", NOT_HOOKED)
def test_default_allocators_get_no_warning(options, env) -> None:
    result = run(options, env, HOOKED_PROBE)
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr
    result = run(options, env, TWO_SANDBOXES)
    assert (result.returncode, result.stdout) == (0, "0\n"), result.stderr


def test_tracemalloc_hooks_the_raw_allocator_too() -> None:
    result = run(["-X", "tracemalloc"], {}, HOOKED_PROBE)
    assert (result.returncode, result.stdout) == (0, "True\n"), result.stderr


# Under tracemalloc every supported CPython crashes once an isolated interpreter made while
# tracing is destroyed (subsandbox.TracemallocError): no sandbox is made, nothing is lost,
# and one made after tracemalloc.stop() works, up to a clean exit.
TRACEMALLOC_REFUSED = """
import importlib, sys, threading
import subsandbox
xi = importlib.import_module("_interpreters" if sys.version_info >= (3, 13)
                             else "_xxsubinterpreters")
def count(): return len(xi.list_all())
for attempt in (1, 2):
    try:
        subsandbox.Sandbox()
    except subsandbox.TracemallocError as exc:
        message = str(exc)
        assert "tracemalloc.stop()" in message and "CPython %d.%d" % sys.version_info[:2] in message
        assert "gh-" in message, message
        # Refused before any interpreter or worker thread existed.
        assert count() == 1 and threading.active_count() == 1, (count(), threading.enumerate())
        print("refused", flush=True)
try:
    with subsandbox.SandboxPoolExecutor(1) as pool:
        pool.submit(abs, -3).result()
except subsandbox.BrokenSandboxPool as exc:
    assert isinstance(exc.__cause__, subsandbox.TracemallocError), repr(exc.__cause__)
    assert count() == 1, count()
    print("pool refused", flush=True)
import tracemalloc
tracemalloc.stop()
with subsandbox.Sandbox() as sb:
    print(sb.call(sum, range(10)), flush=True)
with subsandbox.SandboxPoolExecutor(1) as pool:
    print(pool.submit(abs, -3).result(), flush=True)
"""


@pytest.mark.parametrize("options, env, start", [
    (["-X", "tracemalloc"], {}, ""),
    ([], {"PYTHONTRACEMALLOC": "5"}, ""),
    ([], {}, "import tracemalloc; tracemalloc.start()\n"),
], ids=["X-tracemalloc", "PYTHONTRACEMALLOC", "started-later"])
def test_no_sandbox_is_made_while_tracemalloc_traces(options, env, start) -> None:
    result = run(options, env, start + textwrap.dedent(TRACEMALLOC_REFUSED))
    # returncode 0: the process also exits cleanly, which it does not when an interpreter
    # was made while tracing (an abort or a segfault at exit, whatever subsandbox does).
    assert (result.returncode, result.stdout) == (0, "refused\nrefused\npool refused\n45\n3\n"), result.stderr


def test_tracemalloc_started_later_is_seen() -> None:
    # The hooks can come and go while the process runs: the check is made at each creation.
    # (PYTHONMALLOC=malloc: no hooks before tracemalloc, in a debug build too.)
    result = run([], {"PYTHONMALLOC": "malloc"}, """
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
