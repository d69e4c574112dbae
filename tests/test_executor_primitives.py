"""The executor's C building blocks (taskqueue.c, futurecond.c) and its futures, alone.

test_executor.py and test_executor_cpython.py check them through the executor; here each
promise they make is checked directly, including the ones the executor does not reach
every run (a timed-out wait, notify order, a fork while a task is held).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future

import pytest

from subsandbox import _core
from subsandbox.executor import _PoolFuture

from conftest import run_script

# Long enough that a thread which should block has surely blocked on a loaded machine;
# no test asserts a duration, only an order of events.
SETTLE = 0.05


# -- _FutureCondition ---------------------------------------------------------------------

def test_condition_is_a_reentrant_lock() -> None:
    cond = _core._FutureCondition()
    assert not cond._is_owned()
    assert cond.acquire() and cond.acquire()
    cond.release()
    assert cond._is_owned()
    cond.release()
    assert not cond._is_owned()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.release()


def test_condition_lock_excludes_other_threads() -> None:
    cond = _core._FutureCondition()
    seen: list[bool] = []
    with cond:
        for attempt in (lambda: cond.acquire(False), lambda: cond.acquire(timeout=0.01)):
            thread = threading.Thread(target=lambda: seen.append(attempt()))
            thread.start()
            thread.join()
    assert seen == [False, False]
    with pytest.raises(ValueError, match="non-blocking"):
        cond.acquire(False, 1.0)

    counter = [0]

    def bump() -> None:
        for _ in range(5000):
            with cond:
                value = counter[0]
                time.sleep(0) if value % 1000 == 0 else None   # let others run inside
                counter[0] = value + 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter[0] == 20000


def test_condition_wait_needs_the_lock_and_times_out() -> None:
    cond = _core._FutureCondition()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0)
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.notify_all()
    with cond, cond:             # held twice: wait releases it whole, and restores it
        assert cond.wait(0) is False
        assert cond.wait(0.01) is False
        assert cond.wait(-1) is False
        cond.release()
        assert cond._is_owned()  # still held once
        cond.acquire()
    assert not cond._is_owned()


def test_condition_wait_releases_the_lock_while_it_waits() -> None:
    cond = _core._FutureCondition()
    woke: list[bool] = []

    def waiter() -> None:
        with cond, cond:
            woke.append(cond.wait(10))
            assert cond._is_owned()
        assert not cond._is_owned()

    thread = threading.Thread(target=waiter)
    thread.start()
    while True:                 # the waiter holds the lock until it waits
        with cond:
            if repr(cond).endswith("waiters=1>"):
                cond.notify()
                break
        time.sleep(0.001)
    thread.join()
    assert woke == [True]


def test_condition_notify_wakes_the_oldest_waiters_first() -> None:
    cond = _core._FutureCondition()
    order: list[int] = []

    def waiter(i: int) -> None:
        with cond:
            cond.wait()
            order.append(i)

    threads = []
    for i in range(3):
        threads.append(threading.Thread(target=waiter, args=(i,)))
        threads[-1].start()
        while True:             # each waits before the next starts
            with cond:
                if repr(cond).endswith(f"waiters={i + 1}>"):
                    break
            time.sleep(0.001)
    with cond:
        cond.notify()
    threads[0].join()
    assert order == [0]
    with cond:
        cond.notify(n=5)
    for thread in threads:
        thread.join()
    assert sorted(order[1:]) == [1, 2]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_condition_works_in_the_child_of_a_fork() -> None:
    cond = _core._FutureCondition()
    stop = threading.Event()

    def churn() -> None:        # the lock taken and let go at the instant of the fork
        while not stop.is_set():
            with cond:
                cond.wait(0.0001)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        time.sleep(SETTLE)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # Free in the child whatever the parent thread was doing with it.
                if cond.acquire(timeout=1.0):
                    assert cond.wait(0.01) is False
                    cond.release()
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        thread.join()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_lock_held_by_another_thread_is_free_in_the_child_of_a_fork() -> None:
    # Only the forking thread exists in the child: a lock owned by any other thread of
    # the parent (or handed to one that had not woken yet) could never be let go there.
    cond = _core._FutureCondition()
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with cond:
            held.set()
            done.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        held.wait()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if cond.acquire(timeout=1.0):
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not cond.acquire(blocking=False)     # still the thread's in the parent
    finally:
        done.set()
        thread.join()


def test_condition_refuses_timeouts_it_cannot_keep() -> None:
    # inf once made the deadline overflow, and the sleeper spun at 100 % CPU for good.
    cond = _core._FutureCondition()
    with cond:
        for wrong, error in ((float("inf"), OverflowError), (1e19, OverflowError),
                             (float("nan"), ValueError)):
            with pytest.raises(error):
                cond.wait(wrong)
        assert cond.wait(0.001) is False            # the lock is still held and usable
    for wrong, error in ((float("inf"), OverflowError), (float("nan"), ValueError)):
        with pytest.raises(error):
            cond.acquire(timeout=wrong)
    assert cond.acquire(timeout=threading.TIMEOUT_MAX)
    cond.release()


# -- _PoolFuture ---------------------------------------------------------------------------

def test_pool_future_has_the_fields_of_a_future() -> None:
    # _PoolFuture.__init__ sets Future.__init__'s fields itself (to make its condition in
    # C without making a threading.Condition first): a Python that adds one must fail here.
    assert set(vars(_PoolFuture())) == set(vars(Future()))
    assert isinstance(_PoolFuture()._condition, _core._FutureCondition)


def test_pool_future_behaves_as_a_future() -> None:
    future = _PoolFuture()
    calls: list[object] = []
    future.add_done_callback(calls.append)
    assert repr(future).endswith("state=pending>")
    assert future.set_running_or_notify_cancel()
    assert not future.cancel()
    threading.Timer(SETTLE, future.set_result, (42,)).start()
    assert future.result(timeout=10) == 42
    assert future.exception() is None
    assert calls == [future]

    failed = _PoolFuture()
    failed.set_exception(ValueError("x"))
    with pytest.raises(ValueError):
        failed.result()
    assert isinstance(failed.exception(), ValueError)

    pending = _PoolFuture()
    from concurrent.futures import TimeoutError as FuturesTimeout, wait
    with pytest.raises(FuturesTimeout):
        pending.result(timeout=0.01)
    assert pending.cancel()
    done, not_done = wait([pending, failed], timeout=1)
    assert done == {failed} and not_done == {pending}   # not notified yet
    assert not pending.set_running_or_notify_cancel()
    done, _ = wait([pending], timeout=1)
    assert done == {pending}


# -- _TaskQueue ----------------------------------------------------------------------------

def test_task_queue_put_get_and_idle_tokens() -> None:
    tasks = _core._TaskQueue(2)
    assert len(tasks) == 0
    assert tasks.put("a") is False          # no driver waits: no token to take
    assert tasks.put("b") is False
    assert len(tasks) == 2
    assert tasks.get(0) == "a" and tasks.get(1) == "b"   # in order, no wait
    assert sorted(tasks.unsettled()) == ["a", "b"]        # held by slots 0 and 1

    got: list[object] = []
    driver = threading.Thread(target=lambda: got.append(tasks.get(0)))
    driver.start()                          # lets "a" go, finds the queue empty, waits
    while "a" in tasks.unsettled():
        time.sleep(0.001)
    time.sleep(SETTLE)
    assert tasks.put("c") is True           # the waiting driver's token
    driver.join()
    assert got == ["c"]
    assert sorted(tasks.unsettled()) == ["b", "c"]

    for item in range(100):                 # past the ring's first size
        tasks.put(item)
    assert tasks.drain() == list(range(100))
    assert len(tasks) == 0

    with pytest.raises(IndexError, match="slot 2"):
        tasks.get(2)
    with pytest.raises(ValueError):
        _core._TaskQueue(0)


def test_task_queue_refuses_a_second_thread_on_a_busy_slot() -> None:
    # Each driver has its own slot; a second thread in get() on a slot already waited on
    # once overflowed the queue's list of sleepers (one entry per slot). It is refused.
    tasks = _core._TaskQueue(1)
    tasks.put("held")
    assert tasks.get(0) == "held"
    got: list[object] = []
    driver = threading.Thread(target=lambda: got.append(tasks.get(0)))
    driver.start()
    # get() marks the slot busy before it lets "held" go: once "held" is gone, the driver
    # is inside get(0), and only a put() can let it out.
    while "held" in tasks.unsettled():
        time.sleep(0.001)

    # Not a timing check: without the refusal, this thread's get(0) would sleep forever;
    # the rescue lets both gets return, so that the test fails instead of hanging.
    main_returned = threading.Event()

    def rescue() -> None:
        if not main_returned.is_set():
            tasks.put("rescue")
            tasks.put("rescue")

    watchdog = threading.Timer(60, rescue)
    watchdog.start()
    try:
        with pytest.raises(RuntimeError, match="slot 0 is already being waited on by "
                           "another thread; each driver thread needs its own slot"):
            tasks.get(0)
    finally:
        main_returned.set()
        watchdog.cancel()
    tasks.put("next")                       # the refused call changed nothing
    driver.join()
    assert got == ["next"]
    tasks.put("again")                      # free again once the driver's get() returned
    assert tasks.get(0) == "again"
    with pytest.raises(IndexError, match="slot -1"):
        tasks.get(-1)


def test_task_queue_drain_loses_nothing_when_out_of_memory() -> None:
    # drain() used to pop a task, then fail to append it to its list: the task was lost.
    # Allocations are made to fail with _testcapi's hooks, in a process of its own, where
    # no other thread can be hit by them.
    pytest.importorskip("_testcapi")
    result = run_script("""
        import _testcapi
        from subsandbox import _core

        for n in (1, 3, 100):
            tasks = _core._TaskQueue(1)
            for item in range(n):
                tasks.put(item)
            failed = False
            _testcapi.set_nomemory(0)       # every allocation from here fails
            try:
                tasks.drain()
            except MemoryError:
                failed = True
            finally:
                _testcapi.remove_mem_hooks()
            assert failed, "drain() needed no memory"
            assert len(tasks) == n, (n, len(tasks))
            assert tasks.drain() == list(range(n))
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_task_queue_lets_a_task_go_at_the_next_get() -> None:
    # A driver must not keep a finished task (and its future, arguments, result) alive
    # while it waits for the next one.
    import gc
    import weakref

    class Task:
        pass

    tasks = _core._TaskQueue(1)
    task = Task()
    ref = weakref.ref(task)
    tasks.put(task)
    assert tasks.get(0) is task
    del task
    gc.collect()
    assert ref() is not None                # held by its slot
    tasks.put(None)
    assert tasks.get(0) is None
    assert ref() is None
