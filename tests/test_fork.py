"""fork() in a process that has sandboxes (issue #8).

Without subsandbox's fork hooks the child of such a process hangs or crashes (3.12.1) or
aborts (3.13.0) in CPython's after-fork cleanup of subinterpreters. Each scenario runs in a
fresh process and repeats 20 times; a hang fails the test through run_script's timeout.
The forking parent has sandbox threads, so CPython warns that fork() in a multi-threaded
process is deprecated: that warning is CPython's, about every such process, and is
silenced here (-W ignore in the scripts) to keep the checks on what we promise.
"""

from __future__ import annotations

import sys
import sysconfig

import pytest

from conftest import run_script

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX only")

# Under AddressSanitizer (the ASan Python of tools/sanitizers.sh) the child of a fork made
# while other threads allocate can hang for good: ASan's allocator (libasan of gcc 12)
# takes no fork handler for its size-class locks, and a lock held by another thread at
# the fork stays held in the child (gdb: the child's only thread asleep in
# SizeClassAllocator64::GetFromAllocator -> Mutex::Lock, from PyObject_Malloc). glibc's
# malloc, which every other build uses, is made consistent across fork(). So the
# scenarios whose parent allocates in other threads at the fork run everywhere but there;
# the idle ones run under ASan too. docs/sanitizers.md has the details.
UNDER_ASAN = "--with-address-sanitizer" in (sysconfig.get_config_var("CONFIG_ARGS") or "")
busy_parent = pytest.mark.skipif(
    UNDER_ASAN, reason="ASan's allocator is not fork-safe: a child forked while other "
    "threads allocate can hang in it (libasan takes no fork handler for its locks)")
STATES = ["idle", pytest.param("busy", marks=busy_parent)]
# Under ThreadSanitizer (the TSan Python of tools/sanitizers.sh) the child of a fork made
# while threads run cannot start threads of its own: libtsan (gcc 12) keeps the parent's
# threads in its registry and dies ("ThreadSanitizer: dup thread with used id") when a new
# thread gets the id of one of them, and with the exit status the run sets for reports (0),
# so that a child looked like a success that printed nothing. There the children start no
# sandbox (CHILD_STARTS_THREADS, in every script), and the scenarios that are about a
# child's own sandboxes skip.
UNDER_TSAN = "--with-thread-sanitizer" in (sysconfig.get_config_var("CONFIG_ARGS") or "")
child_starts_threads = pytest.mark.skipif(
    UNDER_TSAN, reason="TSan cannot follow a forked child of a threaded parent that starts "
    "threads (dup thread with used id)")

ROUNDS = 20

# What the child of every scenario checks and prints, then how it ends.
CHILD = r"""
def in_child(old_sandboxes, old_channel, shared_value, make_one=True):
    for sb in old_sandboxes:
        assert sb.closed
        try:
            sb.call(abs, -1)
        except subsandbox.SandboxClosed as exc:
            assert "parent process" in str(exc), exc
        else:
            raise AssertionError("a parent's sandbox ran a call in the child")
    try:
        old_channel.send(1)
    except subsandbox.ChannelClosed as exc:
        assert "fork" in str(exc), exc
    else:
        raise AssertionError("a parent's channel worked in the child")
    assert old_channel.closed
    # Shared objects are plain memory: still readable.
    assert shared_value == ("shared", 1, 2.5), shared_value
    # The child is a normal process: it can make sandboxes of its own.
    if make_one and CHILD_STARTS_THREADS:
        with subsandbox.Sandbox() as mine:
            assert mine.call(sum, range(10)) == 45


def fork_and_check(check):
    # Fork; the child runs check(), prints "child ok" and exits 0 (else the traceback, 1).
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            check()
            print("child ok", flush=True)
        except BaseException:
            import traceback; traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
"""


def _script(body: str) -> str:
    return (f"CHILD_STARTS_THREADS = {not UNDER_TSAN}\n"
            "import os, sys, threading, time, warnings\n"
            "warnings.simplefilter('ignore', DeprecationWarning)\n"
            "import subsandbox\n" + CHILD + body)


def _check(result, expected_lines: int) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert result.stdout.count("child ok") == expected_lines, result.stdout


FORK_LOOP = r"""
def fork_once(i, exit_through_finalization):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            in_child(sandboxes, channel, shared, make_one=(i % 4 == 0))
            print("child ok", flush=True)
        except BaseException:
            import traceback; traceback.print_exc()
            code = 1
        if exit_through_finalization:
            sys.exit(code)     # the child's interpreter finalizes with the parent's copies
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status

for i in range(ROUNDS):
    fork_once(i, exit_through_finalization=(i % 2 == 0))
    # The parent's sandboxes are untouched by the fork.
    assert all(sb.call(abs, -i) == i for sb in sandboxes)
"""


@pytest.mark.parametrize("state", STATES)
def test_bare_fork_works_with_sandboxes(state: str) -> None:
    result = run_script(_script(f"ROUNDS = {ROUNDS}\nSTATE = {state!r}\n" + r"""
sandboxes = [subsandbox.Sandbox() for _ in range(2)]
channel = subsandbox.Channel()
shared = subsandbox.share(("shared", 1, 2.5))
stop = threading.Event()

def keep_busy(sb):
    # Calls that run Python in the sandbox the whole time, back to back.
    while not stop.is_set():
        sb.call(sum, range(200_000))

busy = []
if STATE == "busy":
    busy = [subsandbox.Sandbox() for _ in range(2)]
    threads = [threading.Thread(target=keep_busy, args=(sb,)) for sb in busy]
    for t in threads:
        t.start()
    time.sleep(0.05)
sandboxes_all = sandboxes + busy
""" + FORK_LOOP.replace("in_child(sandboxes,", "in_child(sandboxes_all,") + r"""
stop.set()
for t in (threads if STATE == "busy" else []):
    t.join()
for sb in sandboxes_all:
    sb.close()
channel.close()
"""))
    _check(result, ROUNDS)


@busy_parent
def test_fork_process_pool_while_sandboxes_are_busy() -> None:
    # multiprocessing's "fork" start method (the Linux default before 3.14) forks from
    # the thread that submits, while sandbox threads run calls.
    result = run_script(_script(f"ROUNDS = {ROUNDS}\n" + r"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

def square(x):
    return x * x

stop = threading.Event()
busy = [subsandbox.Sandbox() for _ in range(2)]

def keep_busy(sb):
    while not stop.is_set():
        sb.call(sum, range(200_000))

threads = [threading.Thread(target=keep_busy, args=(sb,)) for sb in busy]
for t in threads:
    t.start()
time.sleep(0.05)
context = multiprocessing.get_context("fork")
for _ in range(ROUNDS):
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        assert list(pool.map(square, range(8))) == [x * x for x in range(8)]
    print("child ok", flush=True)   # the pool's forked workers ran and exited cleanly
stop.set()
for t in threads:
    t.join()
for sb in busy:
    assert sb.call(abs, -2) == 2
    sb.close()
"""), timeout=120)
    _check(result, ROUNDS)


@child_starts_threads
def test_sandbox_in_a_fork_pool_worker() -> None:
    # A forked worker inherits the parent's sandboxes closed, and may make its own.
    result = run_script(_script(r"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

parent_sandbox = subsandbox.Sandbox()

def work(n):
    try:
        parent_sandbox.call(abs, -1)
    except subsandbox.SandboxClosed:
        pass
    else:
        return "parent sandbox ran in the worker"
    with subsandbox.Sandbox() as sb:
        return sb.call(sum, range(n))

with ProcessPoolExecutor(max_workers=2,
                         mp_context=multiprocessing.get_context("fork")) as pool:
    assert list(pool.map(work, [10, 100, 1000])) == [45, 4950, 499500]
print("child ok")
assert parent_sandbox.call(abs, -4) == 4
parent_sandbox.close()
"""))
    _check(result, 1)


# -- SandboxPoolExecutor --------------------------------------------------------------------

# How a parent waits for a child: a hang fails within a bound (each fork takes well under
# a second; the bound only separates "slow on a loaded machine" from "never").
WAIT_CHILD = r"""
CHILD_LIMIT = 30.0

def wait_child(pid):
    deadline = time.monotonic() + CHILD_LIMIT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"a child did not end within {CHILD_LIMIT} s")
        time.sleep(0.002)
"""

# What a child checks of an executor it inherited.
EXECUTOR_CHILD = r"""
def executor_in_child(old, inherited_futures, make_one):
    for attempt in (lambda: old.submit(abs, -1), lambda: list(old.map(abs, [-1]))):
        try:
            attempt()
        except subsandbox.BrokenSandboxPool as exc:
            assert "parent process" in str(exc) and "new SandboxPoolExecutor" in str(exc), exc
        else:
            raise AssertionError("a parent's executor took work in the child")
    # A future inherited unfinished can never finish here: it fails, it does not hang.
    for future in inherited_futures:
        assert future.done(), future
        if not future.cancelled() and future.exception() is not None:
            assert isinstance(future.exception(), subsandbox.BrokenSandboxPool)
    old.shutdown()          # nothing to wait for: returns at once
    if make_one and CHILD_STARTS_THREADS:
        # The child's own pool, left open: its exit (atexit) shuts it down.
        mine = subsandbox.SandboxPoolExecutor(2)
        assert list(mine.map(abs, [-1, -2, -3])) == [1, 2, 3]
        return mine
"""


@pytest.mark.parametrize("state", STATES)
def test_bare_fork_with_a_sandbox_pool_executor(state: str) -> None:
    # In each round the child checks the inherited executor and ends one of three ways:
    # os._exit, sys.exit (atexit hooks: _python_exit must not wait for the parent's
    # workers), and returning from the script's `with` block of the parent's executor.
    result = run_script(_script(f"ROUNDS = {ROUNDS}\nSTATE = {state!r}\n" + WAIT_CHILD
                                + EXECUTOR_CHILD + r"""
def square(x):
    return x * x

def busy_task(n):
    return sum(range(n))

with subsandbox.SandboxPoolExecutor(2) as ex:
    assert list(ex.map(square, range(4))) == [0, 1, 4, 9]   # workers up, then idle
    for i in range(ROUNDS):
        futures = []
        if STATE == "busy":
            futures = [ex.submit(busy_task, 300_000) for _ in range(8)]
            time.sleep(0.01)
        pid = os.fork()
        if pid == 0:
            ending = i % 3
            try:
                mine = executor_in_child(ex, futures, make_one=(i % 4 == 0))
                print("child ok", flush=True)
                code = 0
            except BaseException:
                import traceback; traceback.print_exc()
                code = 1
            if ending == 0 or code:
                os._exit(code)
            if ending == 1:
                sys.exit(0)
            break   # leave the with block: the parent's executor's __exit__ runs here
        assert wait_child(pid) == 0, f"round {i}: the child failed"
        # The parent's executor is untouched by the fork.
        assert [f.result() for f in futures] == [busy_task(300_000)] * len(futures)
        assert ex.submit(square, i).result() == i * i
"""), timeout=180)
    _check(result, ROUNDS)


@busy_parent
def test_fork_process_pool_while_a_sandbox_pool_executor_is_busy() -> None:
    # multiprocessing's "fork" start method (the Linux default before 3.14) while a
    # SandboxPoolExecutor runs tasks; its workers fork while sandbox tasks run, and each
    # worker finds the inherited executor closed and may make one of its own.
    result = run_script(_script(f"ROUNDS = {ROUNDS}\n" + EXECUTOR_CHILD + r"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

def busy_task(n):
    return sum(range(n))

executor = subsandbox.SandboxPoolExecutor(2)

def in_fork_worker(x):
    mine = executor_in_child(executor, [], make_one=(x == 0))
    if mine is not None:
        mine.shutdown()
    return x * x

stop = threading.Event()
checked = []

def keep_busy():
    # The executor has tasks running and queued the whole time.
    while not stop.is_set():
        futures = [executor.submit(busy_task, 200_000) for _ in range(6)]
        checked.append(all(f.result() == busy_task(200_000) for f in futures))

feeder = threading.Thread(target=keep_busy)
feeder.start()
time.sleep(0.05)
context = multiprocessing.get_context("fork")
for _ in range(ROUNDS):
    start = time.monotonic()
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        assert list(pool.map(in_fork_worker, range(4))) == [0, 1, 4, 9]
    assert time.monotonic() - start < 30, "a round took longer than 30 s"
    print("child ok", flush=True)
stop.set()
feeder.join()
assert checked and all(checked), checked
executor.shutdown()
"""), timeout=180)
    _check(result, ROUNDS)


def test_a_fork_by_c_code_also_retires_the_parents_channels() -> None:
    """A fork() that bypasses os.fork() (C code calling fork(): here libc's, through
    ctypes) runs none of the Python fork hooks, but still moves the process to a new fork
    generation: a channel (and the executor's lock objects) made in the parent know
    themselves inherited in the child, and refuse to be used, instead of locking a mutex
    that a thread of the parent may hold."""
    result = run_script(r"""
        import ctypes, os
        import subsandbox
        from subsandbox import _core
        channel = subsandbox.Channel()
        channel.send("before")
        cond = _core._FutureCondition()
        libc = ctypes.CDLL(None, use_errno=True)
        pid = libc.fork()
        if pid == 0:
            code = 0
            try:
                try:
                    channel.send(1)
                except subsandbox.ChannelClosed as exc:
                    assert "fork" in str(exc), exc
                else:
                    raise AssertionError("a parent's channel worked after a C fork()")
                with cond:               # made anew in the child: usable
                    cond.notify_all()
                print("child ok", flush=True)
            except BaseException:
                import traceback; traceback.print_exc()
                code = 1
            os._exit(code)
        assert pid > 0, ctypes.get_errno()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert channel.recv() == "before"       # the parent's channel is untouched
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("child ok") == 1, result.stdout + result.stderr


def test_fork_while_sandboxes_share_leaves_share_working_in_the_child() -> None:
    # A sandbox thread inside share() holds its arena's fill lock at the fork; the child
    # has that lock locked by a thread it does not have. Before the fix the child's next
    # share() into that arena waited for ever.
    result = run_script(_script(f"ROUNDS = {ROUNDS}\n" + r"""
def keep_sharing(arena, stop_at):
    import time
    import subsandbox
    value = {str(i): (i, str(i) * 3) for i in range(20_000)}
    n = 0
    while time.monotonic() < stop_at:
        if arena is None:
            subsandbox.share(value)
        else:
            arena.share(value)
        n += 1
    return n

arena = subsandbox.Arena()
before = arena.share(("made before the fork", 1))
shared = subsandbox.share(("shared", 1, 2.5))
busy = [subsandbox.Sandbox() for _ in range(2)]
stop_at = time.monotonic() + 60
calls = [threading.Thread(target=sb.call, args=(keep_sharing, a, stop_at), daemon=True)
         for sb, a in zip(busy, (None, arena))]
for t in calls:
    t.start()
time.sleep(0.5)
mid_fill = 0
def in_the_child(i):
    assert before == ("made before the fork", 1) and shared == ("shared", 1, 2.5)
    assert subsandbox.share(("new in the child", i)) == ("new in the child", i)
    try:
        arena.share(("child", i))
    except ValueError as exc:   # the sandbox was filling it at the fork
        assert "forked" in str(exc), exc
        print("arena closed", flush=True)

for i in range(ROUNDS):
    fork_and_check(lambda: in_the_child(i))
    time.sleep(0.01)
os._exit(0)
"""), timeout=120)
    _check(result, ROUNDS)
    # The sandbox shares into `arena` most of the time: most children found it mid-fill.
    assert result.stdout.count("arena closed") >= ROUNDS // 4, result.stdout


@child_starts_threads
def test_aio_run_works_in_a_forked_child() -> None:
    # aio's shared pool was the parent's in the child for good: every aio.run failed with
    # BrokenSandboxPool ("belongs to the parent process"), with no way to replace it.
    result = run_script(_script(r"""
import asyncio
import subsandbox.aio as aio

assert asyncio.run(aio.run(abs, -1)) == 1
def child_runs_aio():
    assert asyncio.run(aio.run(abs, -2)) == 2

fork_and_check(child_runs_aio)
assert asyncio.run(aio.run(abs, -3)) == 3
"""))
    _check(result, 1)


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="3.12 keeps no per-type count of interpreters to check")
def test_the_child_stops_counting_the_parents_sandboxes_as_holders_of_type_state() -> None:
    # CPython 3.13+ counts, per static type, the interpreters that hold its state; every
    # sandbox holds state of the builtin types and of our frozendict. The child never
    # finalizes the parent's sandboxes (they are left out of its interpreter list), so it
    # must not count them either: a pydebug CPython asserted at the child's exit that each
    # builtin type's count came back to 0 (the sanitizer Pythons aborted there), and
    # finalization finalizes our types only when it sees the last holder (count 1).
    result = run_script(_script(r"""
from subsandbox import _core, frozendict

def counts():
    info = _core._guard_info(frozendict)
    return info["interp_count"], info["object_interp_count"]

alone = counts()
sandboxes = [subsandbox.Sandbox() for _ in range(2)]
assert all(sb.call(abs, -1) == 1 for sb in sandboxes)
assert counts() == (alone[0] + 2, alone[1] + 2), (alone, counts())

def child_counts_only_its_own():
    assert counts() == alone, (alone, counts())
    if CHILD_STARTS_THREADS:
        with subsandbox.Sandbox() as mine:
            assert mine.call(abs, -2) == 2
            assert counts() == (alone[0] + 1, alone[1] + 1), (alone, counts())
        assert counts() == alone, (alone, counts())

pid = os.fork()
if pid == 0:
    try:
        child_counts_only_its_own()
    except BaseException:
        import traceback; traceback.print_exc()
        sys.exit(1)
    print("child ok", flush=True)
    sys.exit(0)         # through finalization, where the counts are checked (pydebug)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert counts() == (alone[0] + 2, alone[1] + 2), (alone, counts())
for sb in sandboxes:
    sb.close()
assert counts() == alone, (alone, counts())
"""))
    _check(result, 1)
