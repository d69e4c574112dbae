"""Soak: a mixed workload for a given number of minutes, with a report every minute.

    python bench/soak.py [minutes] [--sandboxes N]      (default 10 minutes, 3 sandboxes)

Not part of the tests. Each client thread owns one long-lived sandbox and loops over:
calls with arguments and results, a round trip through two channels, a read of an object
shared in a long-lived Arena, and an interrupted busy task. An executor thread drives a
SandboxPoolExecutor of 2 workers: submit and map over the shared object, a schedule()
whose timeout interrupts a runaway task, and cancel() of a running task. A churn thread creates a
sandbox and a fresh Arena, reads a tuple shared into it, and closes both, every
``--churn-interval`` seconds. Every minute it prints RSS,
the process's thread count, open sandboxes and operations done; at the end a verdict on
RSS growth over the second half of the run. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import subsandbox
from subsandbox import sandbox as sandbox_module


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def os_threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def echo(channel_in: subsandbox.Channel, channel_out: subsandbox.Channel, n: int) -> int:
    for _ in range(n):
        channel_out.send(channel_in.recv())
    return n


def total(values: tuple[int, ...]) -> int:
    return sum(values)


LONG_LIVED: list[object] = []


def spin() -> None:
    while True:
        pass


def interrupt_until(sb: subsandbox.Sandbox, done: threading.Event) -> None:
    while not done.wait(0.02):
        sb.interrupt()


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n


def client(stop: threading.Event, counters: Counters) -> None:
    with subsandbox.Sandbox() as sb:
        while not stop.is_set():
            assert sb.call(pow, 3, 4) == 81
            counters.add("calls")

            to_sb, from_sb = subsandbox.Channel(), subsandbox.Channel()
            for i in range(20):
                to_sb.send(("item", i))
            assert sb.call(echo, to_sb, from_sb, 20) == 20
            assert [from_sb.recv() for _ in range(20)][-1] == ("item", 19)
            counters.add("channel items", 40)

            # Zero-copy reads of a long-lived arena's object. (A fresh arena per call to a
            # long-lived sandbox would grow without bound: an arena is freed only once
            # every interpreter that saw it is destroyed, docs/shared-memory.md.)
            assert sb.call(total, LONG_LIVED[0]) == 499500
            counters.add("shared reads")

            # interrupt() only stops a task that has started: keep trying until it ends.
            done = threading.Event()
            interrupter = threading.Thread(target=interrupt_until, args=(sb, done))
            interrupter.start()
            try:
                sb.call(spin)
            except subsandbox.TaskInterrupted:
                counters.add("interrupts")
            done.set()
            interrupter.join()


def executor_client(stop: threading.Event, counters: Counters) -> None:
    # The executor's paths: submit and map with a shared argument, a schedule() whose
    # timeout interrupts a runaway task, and cancel() of a running one. Workers are not
    # recycled here (max_tasks_per_worker): each recycle destroys an interpreter, whose
    # memory CPython keeps (docs/lifecycle.md), and the churn thread already does that.
    with subsandbox.SandboxPoolExecutor(2) as ex:
        while not stop.is_set():
            futures = [ex.submit(total, LONG_LIVED[0]) for _ in range(50)]
            assert all(f.result() == 499500 for f in futures)
            assert list(ex.map(abs, range(-100, 0), chunksize=10)) == list(range(100, 0, -1))
            counters.add("executor tasks", 60)
            runaway = ex.schedule(spin, timeout=0.05)
            try:
                runaway.result()
            except TimeoutError:
                counters.add("executor timeouts")
            started = subsandbox.Channel()
            running = ex.schedule(say_then_spin, (started,))
            started.recv()
            if running.cancel():
                counters.add("executor cancels")


def say_then_spin(channel: subsandbox.Channel) -> None:
    channel.send("started")
    spin()


def churn(stop: threading.Event, counters: Counters, interval: float) -> None:
    while not stop.wait(interval):
        # A fresh arena for a fresh sandbox: both are given back after close.
        with subsandbox.Arena() as arena, subsandbox.Sandbox() as sb:
            assert sb.call(total, arena.share(tuple(range(1000)))) == 499500
        counters.add("create/close with an arena")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", type=float, nargs="?", default=10.0)
    parser.add_argument("--sandboxes", type=int, default=3)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between reports")
    parser.add_argument("--churn-interval", type=float, default=1.0,
                        help="seconds between two sandbox create/close cycles")
    args = parser.parse_args()

    print(f"CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.sandboxes} "
          f"client sandboxes + churn every {args.churn_interval:g} s, {args.minutes:g} min", flush=True)
    long_lived = subsandbox.Arena()
    LONG_LIVED.append(long_lived.share(tuple(range(1000))))
    stop = threading.Event()
    counters = Counters()
    threads = [threading.Thread(target=client, args=(stop, counters), name=f"client-{i}")
               for i in range(args.sandboxes)]
    threads.append(threading.Thread(target=churn, args=(stop, counters, args.churn_interval),
                                    name="churn"))
    threads.append(threading.Thread(target=executor_client, args=(stop, counters),
                                    name="executor"))
    for t in threads:
        t.start()
    start = time.monotonic()
    end = start + args.minutes * 60
    samples: list[tuple[float, float]] = []
    print(f"{'min':>5} {'RSS MiB':>8} {'threads':>7} {'sandboxes':>9}  operations", flush=True)
    while time.monotonic() < end:
        time.sleep(min(args.every, max(0.0, end - time.monotonic())))
        minute = (time.monotonic() - start) / 60
        rss = rss_mib()
        samples.append((minute, rss))
        with counters.lock:
            ops = ", ".join(f"{k} {v}" for k, v in sorted(counters.counts.items()))
        print(f"{minute:5.1f} {rss:8.1f} {os_threads():7d} {len(sandbox_module._live):9d}  "
              f"{ops}", flush=True)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(0.2)
    print(f"after stop: RSS {rss_mib():.1f} MiB, threads {os_threads()}, open sandboxes "
          f"{len(sandbox_module._live)}")
    half = [rss for minute, rss in samples if minute >= args.minutes / 2]
    if len(half) >= 2:
        print(f"second half: RSS {half[0]:.1f} -> {half[-1]:.1f} MiB "
              f"({half[-1] - half[0]:+.1f} MiB)")


if __name__ == "__main__":
    main()
