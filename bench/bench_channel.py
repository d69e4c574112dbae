#!/usr/bin/env python3
"""Channel benchmarks (issue #4), side by side in one pyperf run.

    python bench/bench_channel.py [pyperf options, e.g. --fast, -o result.json]

What is measured (each value is the time of one operation):

- ``pingpong``: one round trip, A sends, B answers, A receives. ``subsandbox.Channel``
  between two sandboxes; the interpreters queue of the standard library (3.14
  ``concurrent.interpreters``, 3.13 ``interpreters_backport``) between two sandboxes;
  ``multiprocessing.Queue`` between two processes.
- ``oneway``: one small message (a tuple of an int and a short str) from a producer to a
  consumer that runs at the same time, the same three ways.
- ``shared``: one send of a shared object (``subsandbox.share``) of 1 KB and of 100 MB
  from a sandbox to another: both move a pointer.

Targets: >= 50,000 Channel round trips/s on 2 cores; Channel one-way >= 5x
``multiprocessing.Queue``; the 100 MB send within 2x of the 1 KB send. The summary after
the run prints the figures and the ratios.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from typing import Any, Callable

import pyperf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import subsandbox  # noqa: E402
from harness import result_metadata  # noqa: E402
from subsandbox import Channel, Sandbox  # noqa: E402

MESSAGE = (12345, "a short message")


def _stdlib_queues() -> Any:
    """The interpreters queue module of the standard library or its backport, or None."""
    try:
        from concurrent.interpreters import _queues as queues  # type: ignore[import-not-found]
        return queues
    except ImportError:
        pass
    if sys.version_info >= (3, 13):
        try:
            from interpreters_backport.interpreters import queues  # type: ignore[import-not-found]
            return queues
        except ImportError:
            pass
    return None  # 3.12: the backport's build segfaults on import (see _backend.py)


# -- code that runs inside sandboxes (crosses by value: defined in __main__) -------------

def sb_echo(inbox: Any, outbox: Any, n: int, get: str, put: str) -> None:
    receive, send = getattr(inbox, get), getattr(outbox, put)
    for _ in range(n):
        send(receive())


def sb_ping(outbox: Any, inbox: Any, n: int, get: str, put: str) -> float:
    import time

    receive, send = getattr(inbox, get), getattr(outbox, put)
    start = time.perf_counter()
    for i in range(n):
        send(i)
        receive()
    return time.perf_counter() - start


def sb_produce(out: Any, n: int, item: Any, put: str) -> None:
    send = getattr(out, put)
    for _ in range(n):
        send(item)


def sb_consume(inbox: Any, n: int, get: str) -> float:
    import time

    receive = getattr(inbox, get)
    receive()  # the clock starts at the first message: the producer is running
    start = time.perf_counter()
    for _ in range(n - 1):
        receive()
    return time.perf_counter() - start


# -- sandboxes and processes, made once per pyperf worker ---------------------------------

_pair: list[Sandbox] = []


def sandbox_pair() -> list[Sandbox]:
    if not _pair:
        _pair.extend([Sandbox(), Sandbox()])
    return _pair


def pingpong_sandboxes(loops: int, make: Callable[[], Any], get: str, put: str) -> float:
    a, b = sandbox_pair()
    there, back = make(), make()
    echo = threading.Thread(target=b.call, args=(sb_echo, there, back, loops, get, put))
    echo.start()
    elapsed = a.call(sb_ping, there, back, loops, get, put)
    echo.join()
    return elapsed


def oneway_sandboxes(loops: int, make: Callable[[], Any], item: Any, get: str,
                     put: str) -> float:
    a, b = sandbox_pair()
    channel = make()
    producer = threading.Thread(target=a.call, args=(sb_produce, channel, loops + 1, item, put))
    producer.start()
    elapsed = b.call(sb_consume, channel, loops + 1, get)
    producer.join()
    return elapsed


def mp_echo(inbox: Any, outbox: Any) -> None:
    while True:
        n = inbox.get()
        for _ in range(n):
            outbox.put(inbox.get())


def mp_consume(inbox: Any, outbox: Any) -> None:
    import time

    while True:
        n = inbox.get()
        inbox.get()
        start = time.perf_counter()
        for _ in range(n - 1):
            inbox.get()
        outbox.put(time.perf_counter() - start)


_procs: dict[str, tuple[Any, Any]] = {}


def mp_worker(target: Callable[..., None]) -> tuple[Any, Any]:
    name = target.__name__
    if name not in _procs:
        ctx = multiprocessing.get_context("spawn")
        there, back = ctx.Queue(), ctx.Queue()
        ctx.Process(target=target, args=(there, back), daemon=True).start()
        _procs[name] = (there, back)
    return _procs[name]


def pingpong_mp(loops: int) -> float:
    import time

    there, back = mp_worker(mp_echo)
    there.put(loops)
    start = time.perf_counter()
    for i in range(loops):
        there.put(i)
        back.get()
    return time.perf_counter() - start


def oneway_mp(loops: int) -> float:
    there, back = mp_worker(mp_consume)
    there.put(loops + 1)
    for _ in range(loops + 1):
        there.put(MESSAGE)
    return float(back.get())


# -- the run ----------------------------------------------------------------------------------

def add_benchmarks(runner: pyperf.Runner, quick: bool) -> dict[str, Any]:
    """The suite's benchmarks, for ``python -m subsandbox bench`` (harness.py) and main().

    ``quick`` changes nothing here: every benchmark is one operation, timed by pyperf's
    own loop calibration (``--fast`` is what makes a quick run short)."""
    runner.metadata["description"] = ("subsandbox.Channel vs interpreters queue vs "
                                      "multiprocessing.Queue")
    queues = _stdlib_queues()
    results: dict[str, Any] = {}

    def bench(name: str, func: Callable[..., float], *args: Any,
              metadata: dict[str, str]) -> None:
        results[name] = runner.bench_time_func(name, func, *args, metadata=metadata)

    def compared(group: str, baseline: bool = False) -> dict[str, str]:
        return result_metadata(f"channel {group}", baseline=baseline)

    bench("pingpong Channel (2 sandboxes)", pingpong_sandboxes, Channel, "recv", "send",
          metadata=compared("pingpong"))
    if queues is not None:
        bench("pingpong interpreters queue (2 sandboxes)", pingpong_sandboxes, queues.create,
              "get", "put", metadata=compared("pingpong"))
    bench("pingpong multiprocessing.Queue (2 processes)", pingpong_mp,
          metadata=compared("pingpong", baseline=True))

    bench("oneway Channel (2 sandboxes)", oneway_sandboxes, Channel, MESSAGE, "recv", "send",
          metadata=compared("oneway"))
    if queues is not None:
        bench("oneway interpreters queue (2 sandboxes)", oneway_sandboxes, queues.create,
              MESSAGE, "get", "put", metadata=compared("oneway"))
    bench("oneway multiprocessing.Queue (2 processes)", oneway_mp,
          metadata=compared("oneway", baseline=True))

    # The send-cost plot's "shared value via Channel" line: the same cost at any size.
    small = subsandbox.share(bytes(1024))
    bench("shared 1 KB via Channel", oneway_sandboxes, Channel, small, "recv", "send",
          metadata=result_metadata("channel shared value", baseline=True,
                                   method="shared value via Channel", payload_bytes=1024))
    bench("shared 100 MB via Channel", oneway_big, Channel,  # made where it is sent
          metadata=result_metadata("channel shared value", method="shared value via Channel",
                                   payload_bytes=100 << 20))
    return results


def main() -> None:
    runner = pyperf.Runner()
    results = add_benchmarks(runner, quick=False)
    if not runner.args.worker:
        summary(results)


_big: list[Any] = []


def oneway_big(loops: int, make: Callable[[], Any]) -> float:
    if not _big:
        _big.append(subsandbox.share(bytes(100 * 1024 * 1024)))
    return oneway_sandboxes(loops, make, _big[0], "recv", "send")


def summary(results: dict[str, Any]) -> None:
    def mean(name: str) -> float | None:
        b = results.get(name)
        return b.mean() if b is not None else None

    def rate(name: str) -> str:
        m = mean(name)
        return f"{1 / m:>12,.0f}/s" if m else f"{'-':>14}"

    print()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs "
          f"({len(os.sched_getaffinity(0))} usable)")
    for name in results:
        print(f"  {name:<48} {rate(name)}")
    ch_rt = mean("pingpong Channel (2 sandboxes)")
    mp_rt = mean("pingpong multiprocessing.Queue (2 processes)")
    iq_rt = mean("pingpong interpreters queue (2 sandboxes)")
    ch_1 = mean("oneway Channel (2 sandboxes)")
    mp_1 = mean("oneway multiprocessing.Queue (2 processes)")
    iq_1 = mean("oneway interpreters queue (2 sandboxes)")
    small, big = mean("shared 1 KB via Channel"), mean("shared 100 MB via Channel")
    print("Targets:")
    if ch_rt:
        print(f"  Channel round trips/s: {1 / ch_rt:,.0f} (target >= 50,000)")
    if ch_rt and mp_rt:
        print(f"  ping-pong vs multiprocessing.Queue: {mp_rt / ch_rt:.1f}x faster")
    if ch_rt and iq_rt:
        print(f"  ping-pong vs interpreters queue: {iq_rt / ch_rt:.1f}x faster")
    if ch_1 and mp_1:
        print(f"  one-way vs multiprocessing.Queue: {mp_1 / ch_1:.1f}x (target >= 5x)")
    if ch_1 and iq_1:
        print(f"  one-way vs interpreters queue: {iq_1 / ch_1:.1f}x")
    if small and big:
        print(f"  100 MB shared send / 1 KB shared send: {big / small:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
