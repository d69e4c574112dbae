"""Single-phase-init extension modules never run in a CPython 3.12 sandbox.

3.12 runs such a module's init function inside an isolated interpreter before refusing
it (CPython gh-117953), and ``_datetime`` and ``_decimal`` then corrupt the heap: a few
sandboxes that ``import datetime`` and the main interpreter's own import abort the
process. ``subsandbox._single_phase`` refuses those modules in every 3.12 sandbox before
any of their code runs; 3.13 runs the init function in the main interpreter itself.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import subsandbox
from conftest import run_script
from subsandbox._single_phase import RefuseSinglePhase, SINGLE_PHASE_STDLIB

IS_312 = sys.version_info < (3, 13)


def test_sandboxes_that_import_datetime_and_decimal_leave_the_process_whole() -> None:
    # Without the refusal, 3.12.1 aborts this script in 3 runs of 3 ("double free or
    # corruption"); each sandbox is destroyed before the next, and the main interpreter
    # imports both modules last.
    result = run_script("""
        import gc
        import subsandbox

        def use():
            import datetime, decimal, statistics
            day = datetime.date(2026, 11, 27) + datetime.timedelta(days=3)
            return str(day), str(statistics.mean([decimal.Decimal("1.1"), decimal.Decimal("2.2")]))

        for _ in range(8):
            with subsandbox.Sandbox() as sb:
                answer = sb.call(use)
            garbage = [str(i) * 5 for i in range(20_000)]
            gc.collect()
        import datetime, decimal
        print(answer, datetime.date(2026, 1, 1) + datetime.timedelta(1), decimal.Decimal(1) / 4)
    """, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout == "('2026-11-30', '1.65') 2026-01-02 0.25\n"


def _inside_report(names: list[str]) -> tuple[dict[str, str | None], bool, bool, bool]:
    import sys

    found: dict[str, str | None] = {}
    for name in names:
        try:
            __import__(name)
        except ImportError as exc:
            found[name] = str(exc)
        else:
            found[name] = None
    import datetime  # noqa: F401
    return (found, any(getattr(f, "__name__", "") == "RefuseSinglePhase" for f in sys.meta_path),
            "_pydatetime" in sys.modules, "_datetime" in sys.modules)


def test_what_a_sandbox_refuses_on_this_python(sandbox: subsandbox.Sandbox) -> None:
    found, finder_installed, pure_datetime, c_datetime = sandbox.call(
        _inside_report, sorted(SINGLE_PHASE_STDLIB))
    assert finder_installed  # on every version (it refuses xxsubtype too: test_guard.py)
    if IS_312:
        # Every one refused by us (not by CPython, after its init ran), and datetime
        # falls back to its pure-Python implementation.
        assert all(message is not None and "gh-117953" in message for message in found.values())
        assert (pure_datetime, c_datetime) == (True, False)
    else:
        # 3.13 loads the multi-phase _datetime in a sandbox; nothing of ours refuses.
        assert not any(message and "gh-117953" in message for message in found.values())
        assert c_datetime
    # The main interpreter is never touched.
    assert RefuseSinglePhase not in sys.meta_path


def _import_outcomes(names: list[str]) -> dict[str, tuple[str | None, bool]]:
    import sys

    found: dict[str, tuple[str | None, bool]] = {}
    for name in names:
        try:
            __import__(name)
        except ImportError as exc:
            found[name] = (str(exc), name in sys.modules)
        else:
            found[name] = (None, name in sys.modules)
    return found


# Single-phase-init modules of CPython's own build on 3.12, 3.13 and 3.14 (faulthandler is
# built in; the others are built where the build has them).
SINGLE_PHASE_EVERYWHERE = ("faulthandler", "_testsinglephase", "readline", "xxlimited_35") + (
    # multi-phase from 3.15 on (and refused in sandboxes for its static types: test_guard.py)
    ("_testcapi",) if sys.version_info < (3, 15) else ())


def test_no_sandbox_loads_a_single_phase_module_on_any_version(
        sandbox: subsandbox.Sandbox) -> None:
    # Eby, 2005: "extension modules can store pointers to PyObjects anywhere they like".
    # A single-phase module keeps its objects in C statics and a process-wide copy of its
    # module dict, which outlive the interpreter that made them. None of them runs in a
    # sandbox: refused by us before its init runs (3.12), by CPython after running its
    # init in the main interpreter (3.13+), so that a sandbox's objects, and the shared
    # objects it received, never end up in such a static.
    names = [n for n in SINGLE_PHASE_EVERYWHERE if importlib.util.find_spec(n) is not None]
    assert "faulthandler" in names
    for name, (message, loaded) in sandbox.call(_import_outcomes, names).items():
        assert message is not None and "does not support loading in subinterpreters" in message, name
        assert not loaded, name
    # Control: the main interpreter, which may use them, imports them.
    assert _import_outcomes(["faulthandler"]) == {"faulthandler": (None, True)}


_PROBE = """
import _xxsubinterpreters as X
interp = X.create(isolated=True)
try:
    X.run_string(interp, "import {name}")
except X.RunFailedError as exc:
    print("refused" if "does not support loading in subinterpreters" in str(exc) else "other")
else:
    print("loaded")
"""


@pytest.mark.skipif(not IS_312, reason="the list is of CPython 3.12's single-phase modules; "
                    "3.13+ never runs their init in a sandbox, and has no list")
def test_the_list_holds_every_single_phase_module_of_this_python() -> None:
    # Each module is tried in a bare isolated interpreter of a fresh process (its init may
    # corrupt that process: that is the bug): CPython's own refusal names the single-phase
    # ones. The list must hold all of them (it may hold more: other builds have more).
    dynload = Path(sys.base_prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                   "lib-dynload")
    names = {f.name.split(".")[0] for f in dynload.glob("*.so")} | set(sys.builtin_module_names)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}

    def probe(name: str) -> tuple[str, str]:
        result = subprocess.run([sys.executable, "-c", _PROBE.format(name=name)],
                                capture_output=True, text=True, timeout=60, env=env)
        return name, result.stdout.strip()

    with ThreadPoolExecutor(4) as pool:
        outcomes = dict(pool.map(probe, sorted(names)))
    refused = {name for name, outcome in outcomes.items() if outcome == "refused"}
    assert "_datetime" in refused and "_decimal" in refused   # the probe itself works
    assert refused <= SINGLE_PHASE_STDLIB, sorted(refused - SINGLE_PHASE_STDLIB)


@pytest.mark.parametrize("policy", [None, subsandbox.Policy.compute()],
                         ids=["unrestricted", "compute"])
def test_datetimes_cross_both_ways_as_the_callers_own_classes(
        policy: subsandbox.Policy | None) -> None:
    """On 3.12 a sandbox's datetime is _pydatetime's: its values came back as
    ``_pydatetime.datetime``, equal to none of the caller's (and refused outright under a
    policy, which does not grant _pydatetime). Every public class, aware and naive, must
    come back as the caller's own, equal to what was sent and with the same repr."""
    import datetime as dt

    offset = dt.timezone(dt.timedelta(hours=-3), "BRT")
    values = (dt.date(2026, 1, 2), dt.datetime(2026, 1, 2, 3, 4, 5, 6),
              dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
              dt.datetime(2026, 1, 2, 12, tzinfo=offset), dt.time(1, 2, 3, 4, tzinfo=offset),
              dt.timedelta(1, 2, 3), offset, dt.timezone.utc, dt.datetime.max, dt.date.min)
    def make() -> tuple[object, ...]:
        import datetime

        return (datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone(
            datetime.timedelta(hours=5))), datetime.timedelta(days=-1))

    with subsandbox.Sandbox(policy=policy) as sb:
        made = sb.call(make)
        back = sb.call(lambda v: v, values)
        shown = sb.call(repr, values)
    assert back == values and shown == repr(values)
    assert [type(v) for v in back] == [type(v) for v in values]
    assert made == (dt.datetime(2026, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5))),
                    dt.timedelta(days=-1))
    assert type(made[0]) is dt.datetime and type(made[0].tzinfo) is dt.timezone
