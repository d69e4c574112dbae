"""How programs that use sandboxes end: exit, Ctrl-C, and the memory of closed sandboxes
(issue #8). Each program runs as a script in a fresh process, also under ``-X dev``
(which turns on warnings and the debug hooks of the allocators); a hang fails the test
through run_script's timeout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import threading

import pytest

import subsandbox

from conftest import run_script

DEV = pytest.mark.parametrize("dev", [False, True], ids=["plain", "dev"])

# Things a program may leave open at its end.
OPEN_EVERYTHING = """
import os, signal, sys, threading, time
import subsandbox
sandboxes = [subsandbox.Sandbox() for _ in range(2)]
channel = subsandbox.Channel()
arena = subsandbox.Arena()
in_arena = arena.share(("in", "an", "arena"))
shared = subsandbox.share(frozenset({1, 2}))
# Each holds something: a channel, the arena's object, a shared object.
sandboxes[0].call(len, in_arena)
sandboxes[1].call(len, shared)
channel.send(("queued", 1))
"""


# CPython 3.12 swaps the process-wide raw allocator to plain malloc while it creates any
# subinterpreter (gh-123134; docs/lifecycle.md, "Ctrl-C"): with the debug allocator's hooks
# on the raw domain, which -X dev turns on, another thread's raw allocation in that window
# corrupts the heap. So on 3.12 the dev runs keep dev mode (every warning, faulthandler)
# but use the plain allocators; 3.13 runs them with the debug hooks, and the stress and
# type-guard tests run PYTHONMALLOC=debug on both.
DEV_ALLOCATOR = {"PYTHONMALLOC": "malloc"} if sys.version_info < (3, 13) else {}


def run(source: str, dev: bool, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """conftest.run_script, optionally under ``-X dev``."""
    if not dev:
        return run_script(source, timeout=timeout)
    env = dict(os.environ, PYTHONFAULTHANDLER="1", **DEV_ALLOCATOR)
    return subprocess.run([sys.executable, "-X", "dev", "-c", textwrap.dedent(source)],
                          capture_output=True, text=True, timeout=timeout, env=env)


@DEV
def test_exit_with_everything_open(dev: bool) -> None:
    result = run(OPEN_EVERYTHING + "print('end')\n", dev)
    assert (result.returncode, result.stdout, result.stderr) == (0, "end\n", "")


@DEV
def test_exit_by_uncaught_exception_with_everything_open(dev: bool) -> None:
    result = run(OPEN_EVERYTHING + "raise LookupError('the program failed')\n", dev)
    assert result.returncode == 1
    # The program's own traceback, and nothing else after it.
    assert result.stderr.rstrip().endswith("LookupError: the program failed"), result.stderr
    assert result.stderr.count("Traceback") == 1, result.stderr


@DEV
def test_sys_exit_with_everything_open(dev: bool) -> None:
    result = run(OPEN_EVERYTHING + "sys.exit(4)\n", dev)
    assert (result.returncode, result.stderr) == (4, "")


@DEV
def test_sys_exit_and_exception_in_worker_threads(dev: bool) -> None:
    result = run(OPEN_EVERYTHING + """
def leaves():
    sandboxes[0].call(abs, -1)
    sys.exit(3)            # ends this thread only, silently

def fails():
    sandboxes[1].call(abs, -1)
    raise ValueError("a worker thread failed")

threads = [threading.Thread(target=leaves), threading.Thread(target=fails)]
for t in threads:
    t.start()
print("main ends")
""", dev)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "main ends\n"
    # threading's report of the failed thread, and nothing else.
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert result.stderr.rstrip().endswith("ValueError: a worker thread failed"), result.stderr


@DEV
def test_exit_interrupts_running_python_tasks(dev: bool) -> None:
    # A daemon thread is in the middle of a call that would never end: exit interrupts
    # the task, closes the sandbox, and the program's exit status is its own (an
    # interrupted exec() of a string must not turn it into "killed by SIGINT").
    # Registered before subsandbox's own exit hook, so run after it (atexit runs last
    # first): waits for the daemon thread to have seen its call interrupted.
    result = run("""
import atexit, threading
seen = threading.Event()
atexit.register(seen.wait, 30)
""" + OPEN_EVERYTHING + """
def forever():
    try:
        sandboxes[0].call(exec, "while True: pass")
    except subsandbox.TaskInterrupted as exc:
        # Says who interrupted it: the exit, not a Sandbox.interrupt() of the program's.
        assert "because the program is exiting" in str(exc), exc
        os.write(1, b"interrupted by the exit\\n")
        seen.set()

threading.Thread(target=forever, daemon=True).start()
time.sleep(0.2)
print("main ends", flush=True)
""", dev)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "main ends\ninterrupted by the exit\n", "")


def test_exit_gives_up_on_a_task_blocked_in_c() -> None:
    # time.sleep() in a sandbox cannot be interrupted: exit says so and does not hang.
    result = run_script(OPEN_EVERYTHING + """
subsandbox._lifecycle.EXIT_GRACE = 0.5
threading.Thread(target=sandboxes[0].call, args=(time.sleep, 600), daemon=True).start()
time.sleep(0.2)
print("main ends", flush=True)
""", timeout=60)
    assert result.returncode == 1
    assert result.stdout == "main ends\n"
    assert "subsandbox: exiting without closing <subsandbox.Sandbox" in result.stderr
    assert "blocked in C" in result.stderr


# -- Ctrl-C -----------------------------------------------------------------------------------

CTRL_C = """
def ctrl_c_after(seconds):
    # What the terminal does: SIGINT to the process, handled by the main thread.
    threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT)).start()

baseline_threads = threading.active_count()
"""


@DEV
def test_ctrl_c_during_a_call_interrupts_the_task(dev: bool) -> None:
    result = run(OPEN_EVERYTHING + CTRL_C + """
sb = sandboxes[0]
for round in range(3):
    ctrl_c_after(0.2)
    start = time.monotonic()
    try:
        sb.call(exec, "while True: pass")
    except KeyboardInterrupt:
        waited = time.monotonic() - start
    else:
        sys.exit("the call returned")
    # The task was interrupted too: the sandbox answers the next call at once, with
    # its own answer (not the interrupted task's).
    assert sb.call(abs, -round) == round
    print(f"interrupted after {waited:.2f} s")
time.sleep(0.1)   # the timers' threads end
for s in sandboxes:
    s.close()
assert threading.active_count() == baseline_threads - 2, threading.enumerate()
print("no thread left")
""", dev)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[-1] == "no thread left"
    assert len(lines) == 4


@DEV
def test_ctrl_c_during_channel_recv(dev: bool) -> None:
    result = run(OPEN_EVERYTHING + CTRL_C + """
empty = subsandbox.Channel()
ctrl_c_after(0.2)
try:
    empty.recv()
except KeyboardInterrupt:
    print("recv interrupted")
empty.send("still usable")
assert empty.recv() == "still usable"
""", dev)
    assert (result.returncode, result.stdout, result.stderr) == (0, "recv interrupted\n", "")


@DEV
def test_ctrl_c_around_a_sandbox_blocked_in_a_channel_ends_the_with_block(dev: bool) -> None:
    # The task waits in recv() inside the sandbox: interrupting it wakes that wait.
    result = run("""
import os, signal, threading, time
import subsandbox

def consume(ch):
    return [x for x in ch]

ch = subsandbox.Channel()
pressed = []
def press():
    pressed.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)
try:
    with subsandbox.Sandbox() as sb:
        # Timed from here, not from before Sandbox(): a slow build (the sanitizer ones)
        # may still be importing at 0.3 s, and a KeyboardInterrupt between importlib's
        # open() and its `with` leaves a ResourceWarning (unclosed .pyc) under -X dev.
        threading.Timer(0.3, press).start()
        sb.call(consume, ch)
except KeyboardInterrupt:
    took = time.monotonic() - pressed[0]
    print("left the with block" if took < 2.0 else f"took {took:.2f} s")
ch.send("kept")
assert ch.recv_nowait() == "kept"
""", dev, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "left the with block\n", "")


def test_ctrl_c_left_unhandled_exits_like_python() -> None:
    # The program dies of its KeyboardInterrupt: traceback, status of SIGINT, no hang,
    # and the sandbox's task was stopped on the way out.
    result = run_script(OPEN_EVERYTHING + CTRL_C + """
ctrl_c_after(0.2)
sandboxes[0].call(exec, "while True: pass")
""")
    assert result.returncode in (-2, 130), (result.returncode, result.stderr)
    assert result.stderr.rstrip().endswith("KeyboardInterrupt"), result.stderr
    assert "subsandbox" not in result.stderr.split("KeyboardInterrupt")[-1]


# -- Ctrl-C in a SandboxPoolExecutor ---------------------------------------------------------

# A Ctrl-C whose delivery time is known, and what must be left once the pool is gone: no
# thread but the main one, no open sandbox, no interpreter made by a sandbox.
EXECUTOR_CTRL_C = """
import os, signal, sys, threading, time
import subsandbox
from subsandbox import _lifecycle
from subsandbox import sandbox as sandbox_module

def spin(x):
    while True:
        pass

def work(x):
    return sum(range(200_000)) + x

sent = []

def ctrl_c_after(seconds):
    def press():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)
    timer = threading.Timer(seconds, press)
    timer.start()
    return timer

def took_since_ctrl_c():
    return time.monotonic() - sent[-1]

def assert_nothing_left(timer):
    timer.join()
    assert threading.enumerate() == [threading.main_thread()], threading.enumerate()
    assert sandbox_module._live_sandboxes() == [], sandbox_module._live_sandboxes()
    assert not _lifecycle._interpreter_ids, _lifecycle._interpreter_ids
"""

# Generous: it only tells a slow machine from a hang (measured: ~0.1 s after the signal).
PROMPT = 5.0


@DEV
@pytest.mark.parametrize("task", ["spin", "work"])
def test_ctrl_c_during_executor_map_in_a_with_block(task: str, dev: bool) -> None:
    # The standard executors' __exit__ waits for running tasks: with `while True` tasks
    # that is forever. Ours cancels the pending tasks and interrupts the running ones.
    result = run(EXECUTOR_CTRL_C + f"""
fn = {task}
timer = ctrl_c_after(0.3)
try:
    with subsandbox.SandboxPoolExecutor(2) as ex:
        results = list(ex.map(fn, range(2000)))
except KeyboardInterrupt:
    took = took_since_ctrl_c()
else:
    sys.exit("map ended before Ctrl-C")
assert took < {PROMPT}, took
assert_nothing_left(timer)
print(f"stopped {{took:.2f}} s after Ctrl-C")
""", dev)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("stopped "), result.stdout


@DEV
def test_ctrl_c_in_a_with_block_interrupts_running_and_cancels_pending(dev: bool) -> None:
    result = run(EXECUTOR_CTRL_C + f"""
def spin_after_saying_so(channel):
    channel.send("started")
    while True:
        pass

started = subsandbox.Channel()
try:
    with subsandbox.SandboxPoolExecutor(2) as ex:
        futures = [ex.submit(spin_after_saying_so, started) for i in range(6)]
        assert [started.recv(timeout=30) for _ in range(2)] == ["started"] * 2
        timer = ctrl_c_after(0.1)
        futures[0].result()
except KeyboardInterrupt:
    took = took_since_ctrl_c()
assert took < {PROMPT}, took
assert all(f.done() for f in futures), futures
interrupted = [f for f in futures if not f.cancelled()]
assert len(interrupted) == 2, futures          # the two that ran
for f in interrupted:
    assert isinstance(f.exception(), subsandbox.TaskInterrupted), f.exception()
assert_nothing_left(timer)
# The program goes on and may use a new pool.
with subsandbox.SandboxPoolExecutor(2) as ex:
    assert list(ex.map(abs, [-1, -2])) == [1, 2]
print("ok")
""", dev)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


@pytest.mark.parametrize("wait", ["result", "exception", "shutdown"])
def test_ctrl_c_whose_handler_ran_in_another_thread_still_reaches_the_main_thread(
        wait: str) -> None:
    # The lost Ctrl-C: the C signal handler runs in a thread other than the main one, so
    # the main thread asleep in a lock is neither interrupted nor told by the eval breaker
    # (seen with busy drivers, ~1 Ctrl-C in 100 on 3.12.1). Forced here: the main thread
    # blocks SIGINT, so the kernel gives it to another thread. The executor's waits in the
    # main thread still raise KeyboardInterrupt within a slice, not when the task ends.
    result = run_script(EXECUTOR_CTRL_C + f"""
def spin_for(seconds):
    import time
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass

with subsandbox.SandboxPoolExecutor(1) as ex:
    ex.submit(abs, 1).result()                       # the worker is up
    timer = ctrl_c_after(0.3)                        # its thread does not block SIGINT
    signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT}})
    future = ex.submit(spin_for, 20)
    try:
        if {wait!r} == "result":
            future.result()
        elif {wait!r} == "exception":
            future.exception()
        else:
            ex.shutdown(wait=True)
    except KeyboardInterrupt:
        took = took_since_ctrl_c()
    else:
        sys.exit("the wait ended without the Ctrl-C")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
    assert took < 5.0, took                          # not the task's 20 s
    ex.shutdown(wait=True, cancel_futures=True, interrupt_running=True)
timer.join()
print("ok")
""", timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_ctrl_c_while_shutdown_waits() -> None:
    # shutdown(wait=True) of runaway tasks: Ctrl-C stops them and is raised at once.
    result = run_script(EXECUTOR_CTRL_C + f"""
ex = subsandbox.SandboxPoolExecutor(2)
futures = [ex.submit(spin, i) for i in range(4)]
# Both workers must be running a task when Ctrl-C comes (two interrupted, two cancelled):
# a slow build (the sanitizer ones) may still be starting the second worker after 0.3 s.
deadline = time.monotonic() + 60
while sum(f.running() for f in futures) < 2:
    assert time.monotonic() < deadline, futures
    time.sleep(0.01)
timer = ctrl_c_after(0.3)
try:
    ex.shutdown(wait=True)
except KeyboardInterrupt:
    took = took_since_ctrl_c()
else:
    sys.exit("shutdown returned")
assert took < {PROMPT}, took
ex.shutdown(wait=True)          # the interrupted tasks end: this returns
assert sum(not f.cancelled() and isinstance(f.exception(), subsandbox.TaskInterrupted)
           for f in futures) == 2
assert sum(f.cancelled() for f in futures) == 2
assert_nothing_left(timer)
print("ok")
""")
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_ctrl_c_left_unhandled_during_executor_map_exits() -> None:
    # No `with`, nothing catches it: the program dies of KeyboardInterrupt, and the exit
    # hook interrupts the runaway tasks instead of waiting for them (run_script's timeout
    # fails the test on a hang).
    result = run_script(EXECUTOR_CTRL_C + """
ex = subsandbox.SandboxPoolExecutor(2)
ctrl_c_after(0.3)
print(list(ex.map(spin, range(10))))
""", timeout=30)
    assert result.returncode in (-2, 130), (result.returncode, result.stderr)
    assert result.stderr.rstrip().endswith("KeyboardInterrupt"), result.stderr
    assert result.stderr.count("Traceback") == 1, result.stderr


@pytest.mark.parametrize("late", [
    pytest.param("a sandbox starts", marks=pytest.mark.skipif(
        sys.version_info < (3, 13), reason="CPython 3.12 starts no thread once exit has "
        "begun, so no sandbox can start then (docs/cpython-3.12.md)")),
    "a sandbox runs exec()"])
def test_a_ctrl_c_exit_stays_an_exit_by_sigint_whatever_sandboxes_run_meanwhile(
        late: str) -> None:
    # The program dies of KeyboardInterrupt; then, while it exits, a sandbox starts, or an
    # existing one runs exec() of a string. On 3.12/3.13 each run of source in any
    # interpreter resets CPython's process-wide "exit by SIGINT" flag, and the program
    # exited with status 1 instead.
    result = run_script(f"""
import sys, threading, time, subsandbox

def after_the_main_module_died():
    while getattr(sys, "last_exc", None) is None:   # set once the traceback is printed
        time.sleep(0.01)
    if {late == "a sandbox starts"!r}:
        with subsandbox.Sandbox() as late_sandbox:
            late_sandbox.call(abs, -1)
    else:
        sandbox.call(exec, "x = 1")

sandbox = subsandbox.Sandbox()
threading.Thread(target=after_the_main_module_died).start()
raise KeyboardInterrupt
""", timeout=60)
    assert result.returncode in (-2, 130), (result.returncode, result.stderr)
    assert result.stderr.rstrip().endswith("KeyboardInterrupt"), result.stderr


def test_shutdown_can_interrupt_running_tasks() -> None:
    ex = subsandbox.SandboxPoolExecutor(2)
    started = subsandbox.Channel()

    def spin_after_saying_so(channel: subsandbox.Channel) -> None:
        channel.send("started")
        while True:
            pass

    running = [ex.submit(spin_after_saying_so, started) for _ in range(2)]
    pending = [ex.submit(abs, -1) for _ in range(3)]
    assert [started.recv(timeout=30) for _ in running] == ["started"] * 2
    ex.shutdown(wait=True, cancel_futures=True, interrupt_running=True)
    for future in running:
        assert isinstance(future.exception(timeout=0), subsandbox.TaskInterrupted)
    assert all(future.cancelled() for future in pending)
    # This pool's threads (other tests' pools may still be winding down).
    mine = re.compile(rf"SandboxPoolExecutor-{ex._pool.number}[-_].*")
    assert not [t for t in threading.enumerate() if mine.fullmatch(t.name)]


def test_shutdown_without_interrupt_running_lets_tasks_finish() -> None:
    # The standard contract stays the default: running tasks complete.
    ex = subsandbox.SandboxPoolExecutor(1)
    started = subsandbox.Channel()

    def busy_after_saying_so(channel: subsandbox.Channel) -> int:
        channel.send("started")
        return sum(range(2_000_000))

    future = ex.submit(busy_after_saying_so, started)
    assert started.recv(timeout=30) == "started"
    ex.shutdown(wait=True, cancel_futures=True)
    assert future.result(timeout=0) == sum(range(2_000_000))


# -- churn -------------------------------------------------------------------------------------

# What a destroyed interpreter leaves in its object-allocator (obmalloc) arenas, for the
# reclaiming to hand back and for the census to count: CPython's interned strings, in a
# release build (gh-113055). Nothing in a CPython built --without-pymalloc (no arenas: the
# ASan Python of tools/sanitizers.sh), nor in a debug build: with Py_DEBUG,
# _PyUnicode_ClearInterned makes the immortal interned strings mortal again and frees them
# when the interpreter is finalized (both sanitizer Pythons are pydebug builds).
LEAVES_BLOCKS = (bool(sysconfig.get_config_var("WITH_PYMALLOC"))
                 and not hasattr(sys, "gettotalrefcount"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.skipif(not LEAVES_BLOCKS, reason="this CPython (debug build, or built "
                    "--without-pymalloc) leaves nothing in a destroyed interpreter's "
                    "arenas to hand back")
def test_closed_sandboxes_give_memory_back() -> None:
    # CPython keeps the object-allocator arenas of a destroyed isolated interpreter;
    # closing a sandbox hands back the pages of them that are provably dead. Measured
    # against the same cycles with reclaiming turned off, in the same process kind.
    template = """
import os
import subsandbox
from subsandbox import _core
if {off}:
    _core._reclaim_interpreter = lambda interp_id: 0
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
def cycle():
    with subsandbox.Sandbox() as sb:
        sb.call(abs, -1)
cycle()
start = rss()
for _ in range(15):
    cycle()
print((rss() - start) / 15)
"""
    grown = {}
    for off in (False, True):
        result = run_script(template.format(off=off))
        assert result.returncode == 0, result.stderr
        grown[off] = float(result.stdout)
    if sys.version_info >= (3, 14):
        # 3.14 frees the arenas of a destroyed interpreter itself once no block in them is
        # still allocated (free_obmalloc_arenas), and a sandbox leaves none: nothing is
        # left for us to reclaim, and a cycle must not keep what 3.12/3.13 kept (~1.7 MiB).
        assert grown[False] < 256 * 1024, grown
    else:
        assert grown[False] < 0.75 * grown[True], grown


# What a destroyed interpreter keeps: every string it interned as immortal (CPython's, see
# docs/lifecycle.md). A sandbox keeps more of them than a bare interpreter only for what it
# imports: typing, re, enum and pickle.py once made it ~2,000-2,600 more blocks; the
# modules of a sandbox's own side now make ~900-1,100.
_CENSUS_SCRIPT = """
import json, sys
import subsandbox
from subsandbox import _core
if sys.version_info >= (3, 13):
    import _interpreters as xi
    def bare():
        i = xi.create('isolated'); xi.exec(i, 'pass'); xi.destroy(i); return i
else:
    import _xxsubinterpreters as xi
    def bare():
        i = xi.create(isolated=True); xi.run_string(i, 'pass'); xi.destroy(i); return int(i)
def sandbox():
    with subsandbox.Sandbox() as sb:
        sb.call(abs, -1)
        imported = sb.call(eval, "sorted(__import__('sys').modules)")
    return sb.id, imported
def census(interp_id):
    c = _core._leak_census(interp_id)
    _core._reclaim_interpreter(interp_id)
    return c
bare()                                  # the first of a process may differ: not counted
sandbox()
b = census(bare())
sandbox_id, imported = sandbox()
s = census(sandbox_id)
print(json.dumps({"bare": b["blocks"], "sandbox": s["blocks"], "imported": imported,
                  "sandbox_kinds": {k: v[0] for k, v in s["kinds"].items()},
                  "bare_kinds": {k: v[0] for k, v in b["kinds"].items()}}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the census is Linux-only")
def test_a_closed_sandbox_keeps_few_more_blocks_than_a_bare_interpreter() -> None:
    import json

    result = run_script(_CENSUS_SCRIPT)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    heavy = {"typing", "re", "enum", "pickle"} & set(found["imported"])
    assert not heavy, (f"a sandbox imports {sorted(heavy)}: every string their code interns "
                       "stays allocated for good once the sandbox is destroyed")
    # Deterministic counts (no timing, no RSS): what CPython leaks of any interpreter is in
    # "bare"; the difference is what our side of a sandbox imports.
    extra = found["sandbox"] - found["bare"]
    if not LEAVES_BLOCKS:
        # Nothing of CPython's is left (LEAVES_BLOCKS): nothing of ours may be either.
        assert (found["bare"], found["sandbox"]) == (0, 0), found
    elif sys.version_info >= (3, 14):
        # 3.14 leaks nothing of a bare interpreter, and frees its arenas when it is
        # destroyed; a single block a sandbox left allocated would keep all of its arenas
        # (and the census would find it there).
        assert (found["bare"], found["sandbox"]) == (0, 0), found
    else:
        assert found["bare"] > 1000, found          # the census sees CPython's own leak
        assert extra < 1500, (extra, found["sandbox_kinds"], found["bare_kinds"])


def test_leak_census_refuses_a_live_interpreter(sandbox: subsandbox.Sandbox) -> None:
    from subsandbox import _core

    with pytest.raises(ValueError, match="not destroyed yet"):
        _core._leak_census(sandbox.id)
