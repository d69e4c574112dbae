"""Channel (issue #4): what crosses, what is refused, closing, timeouts, backpressure,
many senders and receivers in many interpreters, lifetime, and waiting without the GIL.

The C core is reached in one place: ``_core._channel_stats()``, because nothing public
can observe that a queue's memory was given back.
"""

from __future__ import annotations

import _thread
import gc
import math
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subsandbox
from subsandbox import (
    Channel,
    ChannelClosed,
    ChannelEmpty,
    ChannelFull,
    NotShareableError,
    Sandbox,
)
from subsandbox import _core

from _channel_work import (
    drain,
    echo,
    forward_to_reply_channel,
    identity_of_received,
    keep_in_global,
    make_channel_with_items,
    recv_n,
    recv_until_closed,
    send_all,
    send_unshareable,
)

LIVENESS = 60.0  # seconds before a thread that should have ended is called stuck


def stats() -> dict[str, int]:
    gc.collect()
    return _core._channel_stats()


def live_queues() -> int:
    return stats()["queues"]


# -- values that cross ------------------------------------------------------------------

INTS = [0, 1, -1, 255, 256, -5, 2**31, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64,
        -(2**64), 10**5000, -(10**5000) + 7]
STRS = ["", "ascii", "latin-1 é\xff", "bmp €\u4e2d", "astral 😀\U0010ffff", "\ud800",
        "\udfff", "lone \ud800 surrogate then 😀", "\x00nul\x00", "x" * 100_000]
BYTES = [b"", b"\x00", bytes(range(256)), b"\xff" * 100_000]
FLOATS = [0.0, -0.0, 1.5, float("inf"), float("-inf"), 5e-324, 1.7976931348623157e308]


def sample_values() -> list[Any]:
    return [None, True, False, *INTS, *STRS, *BYTES, *FLOATS, 1 + 2j, complex(-0.0, math.inf),
            (), (1,), ((),), (1, ("two", (3.0, (b"four", None)))), tuple(range(10_000))]


def same(a: Any, b: Any) -> bool:
    """Equality that also tells -0.0 from 0.0, NaN from NaN, and checks exact types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def test_values_round_trip_through_a_sandbox(sandbox: Sandbox) -> None:
    values = sample_values() + [float("nan")]
    to_sb, from_sb = Channel(), Channel()
    for v in values:
        to_sb.send(v)
    sandbox.call(echo, to_sb, from_sb, len(values))
    back = [from_sb.recv() for _ in values]
    for sent, got in zip(values, back):
        assert same(sent, got), (sent, got)


crossable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False) | st.text() | st.binary()
    | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
    lambda children: st.lists(children, max_size=5).map(tuple),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(crossable)
def test_every_crossable_value_comes_back_equal(value: Any) -> None:
    ch = Channel()
    ch.send(value)
    assert same(ch.recv_nowait(), value)


def test_deep_tuples_cross_and_too_deep_is_a_recursion_error() -> None:
    ch = Channel()
    deep: Any = ()
    for _ in range(300):
        deep = (deep, 1)
    ch.send(deep)
    assert ch.recv() == deep
    for _ in range(100_000):
        deep = (deep,)
    with pytest.raises(RecursionError):
        ch.send(deep)
    assert ch.qsize() == 0


def test_large_value_is_intact(sandbox: Sandbox) -> None:
    big = bytes(range(256)) * (40 * 4096)  # 40 MiB
    inbox, outbox = Channel(), Channel()
    inbox.send((big, "tail"))
    sandbox.call(echo, inbox, outbox, 1)
    got, tail = outbox.recv()
    assert got == big and tail == "tail"


# -- what is refused, and how it is said -------------------------------------------------

class Point:
    pass


class MyInt(int):
    pass


@pytest.mark.parametrize("value, message", [
    (("x", {"a": 1}), "item[1] is a dict: pass subsandbox.share(value) or a tuple of pairs"),
    ([1, 2], "item is a list, which is mutable: use a tuple, or pass subsandbox.share(value)"),
    ((1, (2, {3})), "item[1][1] is a set: pass subsandbox.share(value)"),
    (bytearray(b"x"), "item is a bytearray, which is mutable: use bytes"),
    ((Point(),), "item[0] is a Point, which belongs to one interpreter and cannot cross"),
    (len, "item is a builtin_function_or_method, which belongs to one interpreter"),
    ((0, MyInt(3)), "item[1] is a MyInt, a subclass of a builtin type"),
    (subsandbox.frozendict(a=1), "item is a container that is not shared yet: pass "
                                 "subsandbox.share(value)"),
])
def test_unshareable_values_are_refused_with_path_and_fix(value: Any, message: str) -> None:
    ch = Channel()
    with pytest.raises(NotShareableError) as info:
        ch.send(value)
    assert message in str(info.value)
    assert isinstance(info.value, TypeError)
    with pytest.raises(NotShareableError):
        ch.send_nowait(value)
    assert ch.qsize() == 0  # nothing was enqueued


def test_deep_path_is_named() -> None:
    value: Any = {}
    for _ in range(40):
        value = (0, value)
    with pytest.raises(NotShareableError, match=r"item(\[1\]){32}\.\.\.\[1\] is a dict"):
        Channel().send(value)


def test_nothing_is_pickled_silently() -> None:
    class Picklable:
        def __reduce__(self) -> tuple[Any, ...]:
            return (int, (3,))

    with pytest.raises(NotShareableError, match="Picklable"):
        Channel().send(Picklable())


def test_refusal_inside_a_sandbox_is_the_same_exception(sandbox: Sandbox) -> None:
    message = sandbox.call(send_unshareable, Channel())
    assert message.startswith("item[1] is a dict: pass subsandbox.share(value)")


def test_refused_value_releases_the_channels_it_held() -> None:
    before = live_queues()
    ch, passenger = Channel(), Channel()
    with pytest.raises(NotShareableError):
        ch.send((passenger, [1]))
    del ch, passenger
    assert live_queues() == before


# -- the channel object -------------------------------------------------------------------

def test_basic_fifo_and_properties() -> None:
    ch = Channel(maxsize=3)
    assert (ch.maxsize, ch.qsize(), ch.closed) == (3, 0, False)
    for i in range(3):
        ch.send(i)
    assert ch.qsize() == 3
    assert f"id={ch.id}" in repr(ch) and "size=3" in repr(ch)
    assert [ch.recv(), ch.recv_nowait(), ch.recv(timeout=1)] == [0, 1, 2]
    assert Channel().id != ch.id
    with pytest.raises(ValueError, match="maxsize"):
        Channel(maxsize=-1)


def test_bad_timeouts_are_refused() -> None:
    ch = Channel()
    with pytest.raises(ValueError, match="non-negative"):
        ch.recv(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        ch.recv(timeout=float("nan"))
    with pytest.raises(TypeError, match="timeout must be a number"):
        ch.send(1, timeout="soon")  # type: ignore[arg-type]
    assert ch.qsize() == 0


def test_huge_timeouts_wait_without_overflowing() -> None:
    ch = Channel()
    ch.send("a")
    ch.send("b")
    assert ch.recv(timeout=1e300) == "a"
    assert ch.recv(timeout=float("inf")) == "b"


def test_channel_cannot_be_pickled_directly() -> None:
    import pickle

    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Channel())


def test_same_channel_everywhere(sandbox: Sandbox) -> None:
    ch = Channel()
    back = Channel()
    sandbox.call(echo, channel_holding(ch), back, 1)
    received = back.recv()
    assert received == ch and hash(received) == hash(ch) and received.id == ch.id
    received.send("through the returned handle")
    assert ch.recv_nowait() == "through the returned handle"


def channel_holding(*items: Any) -> Channel:
    ch = Channel()
    for item in items:
        ch.send(item)
    return ch


# -- closing, emptiness, fullness, timeouts -----------------------------------------------

def test_close_semantics() -> None:
    ch = Channel()
    ch.send(1)
    ch.send(2)
    ch.close()
    ch.close()  # idempotent
    assert ch.closed
    with pytest.raises(ChannelClosed, match="send"):
        ch.send(3)
    with pytest.raises(ChannelClosed):
        ch.send_nowait(3)
    assert ch.recv() == 1  # what was sent before close is still delivered
    assert ch.recv_nowait() == 2
    with pytest.raises(ChannelClosed, match="recv"):
        ch.recv()
    with pytest.raises(ChannelClosed):
        ch.recv_nowait()
    with pytest.raises(ChannelClosed):
        ch.recv(timeout=0.01)


def test_empty_and_full() -> None:
    ch = Channel(maxsize=1)
    with pytest.raises(ChannelEmpty):
        ch.recv_nowait()
    ch.send_nowait("x")
    with pytest.raises(ChannelFull):
        ch.send_nowait("y")
    with pytest.raises(TimeoutError, match="room"):
        ch.send("y", timeout=0.01)
    assert ch.recv_nowait() == "x"
    with pytest.raises(TimeoutError, match="waiting for an item"):
        ch.recv(timeout=0.01)
    with pytest.raises(TimeoutError):
        ch.recv(timeout=0)
    assert ch.qsize() == 0


def test_iteration_ends_when_closed_and_drained(sandbox: Sandbox) -> None:
    ch = Channel()
    for i in range(5):
        ch.send(i)
    ch.close()
    assert sandbox.call(drain, ch) == (0, 1, 2, 3, 4)
    assert list(ch) == []


def test_blocked_receiver_in_a_sandbox_wakes_on_close(sandbox: Sandbox) -> None:
    ch = Channel()
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(sandbox.call(recv_until_closed, ch)))
    t.start()
    time.sleep(0.2)  # most likely blocked by now; the outcome is the same either way
    ch.close()
    t.join(LIVENESS)
    assert not t.is_alive()
    assert result == ["closed: recv(): the channel is closed"]


def test_blocked_sender_wakes_on_close() -> None:
    ch = Channel(maxsize=1)
    ch.send(0)
    errors: list[BaseException] = []

    def blocked_send() -> None:
        try:
            ch.send(1)
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    t = threading.Thread(target=blocked_send)
    t.start()
    time.sleep(0.1)
    ch.close()
    t.join(LIVENESS)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ChannelClosed)
    assert ch.recv() == 0


def test_receiver_holding_the_last_handle_times_out_and_frees_it() -> None:
    before = live_queues()
    outcome: list[str] = []

    def wait_alone(ch: Channel) -> None:
        try:
            ch.recv(timeout=0.2)
        except TimeoutError:
            outcome.append("timed out")

    ch = Channel()
    t = threading.Thread(target=wait_alone, args=(ch,))
    t.start()
    del ch  # the waiting thread holds the only handle now
    t.join(LIVENESS)
    assert outcome == ["timed out"]
    del t
    assert live_queues() == before


# -- backpressure and many parties --------------------------------------------------------

def test_maxsize_backpressure(sandbox: Sandbox) -> None:
    ch = Channel(maxsize=3)
    n = 300
    t = threading.Thread(target=sandbox.call, args=(send_all, ch, tuple(range(n))))
    t.start()
    got = []
    for _ in range(n):
        assert ch.qsize() <= 3
        got.append(ch.recv(timeout=LIVENESS))
    t.join(LIVENESS)
    assert got == list(range(n))


def test_many_senders_and_receivers_in_many_interpreters() -> None:
    per_sender = 1500
    ch = Channel(maxsize=64)
    sandboxes = [Sandbox() for _ in range(4)]
    try:
        senders, receivers = sandboxes[:2], sandboxes[2:]
        results: list[tuple[Any, ...]] = []
        lock = threading.Lock()

        def sandbox_sender(sb: Sandbox, who: int) -> None:
            sb.call(send_all, ch, tuple((who, i) for i in range(per_sender)))

        def thread_sender(who: int) -> None:
            for i in range(per_sender):
                ch.send((who, i))

        def sandbox_receiver(sb: Sandbox) -> None:
            got = sb.call(drain, ch)
            with lock:
                results.append(got)

        def thread_receiver() -> None:
            got = tuple(ch)
            with lock:
                results.append(got)

        send_threads = [threading.Thread(target=sandbox_sender, args=(sb, k))
                        for k, sb in enumerate(senders)]
        send_threads += [threading.Thread(target=thread_sender, args=(k,)) for k in (2, 3)]
        recv_threads = [threading.Thread(target=sandbox_receiver, args=(sb,)) for sb in receivers]
        recv_threads += [threading.Thread(target=thread_receiver) for _ in range(2)]
        for t in recv_threads + send_threads:
            t.start()
        for t in send_threads:
            t.join(LIVENESS)
        ch.close()
        for t in recv_threads:
            t.join(LIVENESS)
        assert not any(t.is_alive() for t in send_threads + recv_threads)
    finally:
        for sb in sandboxes:
            sb.close()
    assert len(results) == 4
    everything = Counter(item for got in results for item in got)
    assert everything == Counter((who, i) for who in range(4) for i in range(per_sender))
    for got in results:  # each sender's items reach any one receiver in the order sent
        for who in range(4):
            seq = [i for w, i in got if w == who]
            assert seq == sorted(seq)


# -- lifetime -----------------------------------------------------------------------------

def test_values_sent_by_a_closed_sandbox_are_intact() -> None:
    out = Channel()
    values = tuple(sample_values())
    with Sandbox() as sb:
        sb.call(send_all, out, values)
        sb.call(make_channel_with_items, out)
    # The sandbox's interpreter is gone; the channel owns what it sent.
    for v in values:
        assert same(out.recv_nowait(), v)
    tag, inner = out.recv_nowait()
    assert tag == "here"
    assert inner.recv_nowait() == "left in a channel made by a closed sandbox"
    assert inner.recv_nowait() == 10**50


def test_unreferenced_channel_frees_its_memory() -> None:
    before = stats()
    ch = Channel()
    for i in range(100):
        ch.send(("payload", i, b"x" * 1000))
    during = stats()
    assert during["queues"] == before["queues"] + 1
    assert during["items"] == before["items"] + 100
    assert during["item_bytes"] >= before["item_bytes"] + 100 * 1000
    del ch
    after = stats()
    assert (after["queues"], after["items"]) == (before["queues"], before["items"])
    assert after["item_bytes"] == before["item_bytes"]


def test_channels_held_only_by_a_closed_sandbox_are_freed() -> None:
    before = live_queues()
    with Sandbox() as sb:
        ch = Channel()
        ch.send("kept by the sandbox")
        sb.call(keep_in_global, ch)
        del ch
        assert live_queues() == before + 3  # ours + the sandbox's requests and answers
    del sb
    assert live_queues() == before


def test_channel_sent_into_itself_is_collected() -> None:
    before = stats()
    ch = Channel()
    ch.send(("me", ch))
    del ch
    after = stats()
    assert after["queues"] == before["queues"]
    assert after["cycles_freed"] >= before["cycles_freed"] + 1


def test_cycle_of_channels_through_a_sandbox_is_collected(sandbox: Sandbox) -> None:
    before = live_queues()
    a, b = Channel(), Channel()
    a.send(b)
    b.send(("a is here", a))
    a.send("data behind the link")
    sandbox.call(keep_in_global, a)
    sandbox.call(keep_in_global, None)  # the sandbox drops its handle
    del a, b
    assert live_queues() == before


def test_reachable_cycle_is_kept_until_unreachable() -> None:
    before = live_queues()
    a, b = Channel(), Channel()
    a.send(b)
    b.send(a)
    del b  # only a's item holds b, and a is held here: nothing may be freed
    assert live_queues() == before + 2
    b2 = a.recv()
    assert b2.recv() == a  # the cycle was intact
    del a, b2
    assert live_queues() == before


def test_long_chain_of_channels_is_freed_without_recursion() -> None:
    before = live_queues()
    head = Channel()
    current = head
    for _ in range(50_000):
        nxt = Channel()
        current.send(nxt)
        current = nxt
    del current, nxt
    assert live_queues() == before + 50_001
    del head  # frees 50,001 queues, each held by the previous one's item
    assert live_queues() == before


# -- shared objects and channels cross by reference ----------------------------------------

def test_shared_objects_pass_by_pointer(sandbox: Sandbox) -> None:
    table = subsandbox.share({"k": tuple(range(1000)), "s": "text" * 100})
    ch = Channel()
    ch.send(table)
    assert sandbox.call(identity_of_received, ch) == id(table)
    back = Channel()
    ch.send(("wrapped", table))
    sandbox.call(echo, ch, back, 1)
    assert back.recv()[1] is table


def test_channels_sent_through_channels(sandbox: Sandbox) -> None:
    requests = Channel()
    reply_to = Channel()
    requests.send(("please answer here", reply_to))
    requests.send("the answer")
    sandbox.call(forward_to_reply_channel, requests)
    assert reply_to.recv(timeout=LIVENESS) == "the answer"


# -- waiting: a real wait, the GIL released, prompt wakeups, Ctrl-C --------------------------

def test_waiting_releases_the_gil() -> None:
    # While one thread of this interpreter waits in recv(), another must run Python.
    ch = Channel()
    waiter = threading.Thread(target=lambda: ch.recv())
    waiter.start()
    done = threading.Event()

    def count() -> None:
        total = 0
        for i in range(200_000):
            total += i
        done.set()

    counter = threading.Thread(target=count)
    counter.start()
    counter.join(LIVENESS)
    assert done.is_set() and waiter.is_alive()  # counted while the other was waiting
    ch.send("wake up")
    waiter.join(LIVENESS)
    assert not waiter.is_alive()


def test_send_wakes_a_waiter_that_never_polls() -> None:
    # A thread other than the main one never wakes by itself (no slices, no deadline):
    # only the send can end its wait. Ping-pong so every wait depends on a wakeup.
    ping, pong = Channel(), Channel()
    n = 2000

    def ponger() -> None:
        for _ in range(n):
            pong.send(ping.recv())

    t = threading.Thread(target=ponger)
    t.start()
    order = []
    for i in range(n):
        ping.send(i)
        order.append(pong.recv())
    t.join(LIVENESS)
    assert order == list(range(n))


def test_ping_pong_between_two_sandboxes() -> None:
    a_to_b, b_to_a = Channel(), Channel()
    n = 2000
    with Sandbox() as a, Sandbox() as b:
        t = threading.Thread(target=b.call, args=(echo, a_to_b, b_to_a, n))
        t.start()
        for i in range(n):
            a_to_b.send(i)
        got = a.call(recv_n, b_to_a, n)
        t.join(LIVENESS)
    assert got == tuple(range(n))


@pytest.mark.parametrize("how", ["raise_signal", "interrupt_main"])
@pytest.mark.parametrize("op", ["recv", "send"])
def test_ctrl_c_interrupts_a_blocked_main_thread(how: str, op: str) -> None:
    assert threading.current_thread() is threading.main_thread()
    ch = Channel(maxsize=1)
    if op == "send":
        ch.send("fills it")
    if how == "raise_signal":
        fire = lambda: signal.raise_signal(signal.SIGINT)  # noqa: E731
    else:
        fire = _thread.interrupt_main
    timer = threading.Timer(0.2, fire)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            if op == "recv":
                ch.recv()
            else:
                ch.send("blocks")
    finally:
        timer.join()
    assert ch.qsize() == (1 if op == "send" else 0)


@pytest.mark.skipif(sys.platform != "linux", reason="signals as on Linux")
def test_signal_handler_runs_while_waiting_and_wait_goes_on() -> None:
    # A handler that does not raise: the wait resumes and still gets the item.
    ch = Channel()
    seen: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        threading.Timer(0.1, signal.raise_signal, args=(signal.SIGUSR1,)).start()
        threading.Timer(0.4, ch.send, args=("after the signal",)).start()
        assert ch.recv(timeout=LIVENESS) == "after the signal"
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert seen == [signal.SIGUSR1]


# -- a value that cannot be rebuilt in the receiver is not lost -------------------------


def test_failed_decode_puts_the_item_back_at_the_head() -> None:
    ch = Channel()
    inner = Channel()
    shared = subsandbox.share({"k": (1, 2)})
    big = 10**40
    ch.send(("first", shared, inner, big))
    ch.send("second")
    # Nodes in depth-first order: 0 the tuple, 1 "first", 2 shared, 3 inner, 4 big: the
    # failure comes after a shared object and a channel were already rebuilt.
    _core._testing_fail_decode(4)
    with pytest.raises(MemoryError) as info:
        ch.recv()
    assert any("put back at the head" in note for note in info.value.__notes__)
    assert ch.qsize() == 2
    got = ch.recv_nowait()
    assert got[0] == "first" and got[1] is shared and got[3] == big
    inner.send("through the rebuilt channel")
    assert got[2].recv_nowait() == "through the rebuilt channel"
    assert ch.recv_nowait() == "second"
    assert ch.qsize() == 0


def test_failed_decode_on_a_full_closed_channel() -> None:
    ch = Channel(maxsize=1)
    ch.send("only")
    ch.close()
    _core._testing_fail_decode(0)
    with pytest.raises(MemoryError):
        ch.recv_nowait()
    # closing refused new items, not the one that went back: it is still delivered
    assert ch.qsize() == 1
    assert ch.recv() == "only"
    with pytest.raises(ChannelClosed):
        ch.recv_nowait()


def test_failed_decode_hook_fires_once() -> None:
    ch = Channel()
    for i in range(3):
        ch.send(i)
    _core._testing_fail_decode(5)  # beyond the value: nothing fails, and it is disarmed
    assert ch.recv() == 0
    assert [ch.recv(), ch.recv()] == [1, 2]
    with pytest.raises(ValueError, match=">= 0"):
        _core._testing_fail_decode(-1)


def test_send_nowait_names_itself_when_closed() -> None:
    ch = Channel()
    ch.close()
    with pytest.raises(ChannelClosed, match=r"^send_nowait\(\): the channel is closed"):
        ch.send_nowait(1)
    with pytest.raises(ChannelClosed, match=r"^send\(\): the channel is closed"):
        ch.send(1)


def test_huge_int_timeouts_wait_without_a_deadline() -> None:
    ch = Channel()
    ch.send("a")
    assert ch.recv(timeout=10**400) == "a"
    ch.send("b", timeout=10**400)
    assert ch.recv() == "b"
    with pytest.raises(ValueError, match="non-negative"):
        ch.recv(timeout=-(10**400))


def test_copy_of_a_channel_is_the_channel() -> None:
    import copy

    ch = Channel()
    assert copy.copy(ch) is ch
    assert copy.deepcopy(ch) is ch
    assert copy.deepcopy([ch, ch])[0] is ch


# -- interrupting a task blocked in a channel ------------------------------------------------

PROMPT = 2.0  # seconds: an interrupted wait ends at once; this is slack for a loaded machine


def _call_in_thread(sandbox: Sandbox, *call: Any) -> tuple[threading.Thread, list[Any]]:
    started = _call_in_thread_now(sandbox, *call)
    time.sleep(0.3)  # blocked in the channel by now
    return started


def test_interrupt_of_a_task_blocked_in_recv_loses_no_item(sandbox: Sandbox) -> None:
    ch = Channel()
    t, outcome = _call_in_thread(sandbox, recv_n, ch, 1)
    start = time.monotonic()
    assert sandbox.interrupt()
    t.join(PROMPT)
    took = time.monotonic() - start
    if t.is_alive():  # unblock it before failing
        ch.send("unblock")
        t.join(LIVENESS)
    assert took < PROMPT
    assert len(outcome) == 1 and isinstance(outcome[0], subsandbox.TaskInterrupted)
    ch.send("precious")  # the interrupted recv() must not take it
    assert sandbox.call(recv_n, ch, 1) == ("precious",)
    assert ch.qsize() == 0


def test_interrupt_of_a_task_blocked_in_send_queues_nothing(sandbox: Sandbox) -> None:
    ch = Channel(maxsize=1)
    ch.send("first")
    t, outcome = _call_in_thread(sandbox, send_all, ch, ("second",))
    start = time.monotonic()
    assert sandbox.interrupt()
    t.join(PROMPT)
    took = time.monotonic() - start
    if t.is_alive():
        ch.recv()
        t.join(LIVENESS)
    assert took < PROMPT
    assert len(outcome) == 1 and isinstance(outcome[0], subsandbox.TaskInterrupted)
    assert ch.recv(timeout=1) == "first"
    time.sleep(0.2)
    assert ch.qsize() == 0  # the interrupted send() did not queue "second" after all
    assert sandbox.call(abs, -3) == 3


def test_call_with_timeout_returns_once_a_recv_it_gave_up_can_take_nothing(
        sandbox: Sandbox) -> None:
    # TimeoutError used to be raised before the interrupt was delivered: an item sent
    # right after it could still be taken by the recv() of the call given up.
    ch = Channel()
    assert sandbox.call(abs, -1) == 1    # the sandbox's start is not part of the timeout
    for i in range(20):
        with pytest.raises(TimeoutError):
            sandbox.call_with_timeout(0.05, recv_n, ch, 1)
        ch.send(f"kept {i}")    # for the next call, not the one given up
        assert sandbox.call_with_timeout(LIVENESS, recv_n, ch, 1) == (f"kept {i}",)
    assert ch.qsize() == 0


def test_executor_timeout_stops_a_task_blocked_in_recv() -> None:
    from concurrent.futures import TimeoutError as FuturesTimeoutError

    ch = Channel()
    with subsandbox.SandboxPoolExecutor(max_workers=1) as ex:
        future = ex.schedule(recv_n, (ch, 1), timeout=0.3)
        try:
            with pytest.raises(FuturesTimeoutError, match="timeout"):
                future.result(timeout=PROMPT + 0.3)
            ch.send("kept")  # for the next task, not the one that timed out
            assert ex.submit(recv_n, ch, 1).result(timeout=LIVENESS) == ("kept",)
        finally:
            ch.close()  # a task still blocked (the bug) ends, so the executor can shut down


def test_interrupt_just_before_the_wait_is_not_missed(sandbox: Sandbox) -> None:
    # Many interrupts at random moments around the start of the wait: each call ends,
    # interrupted, and no item sent afterwards is lost.
    ch = Channel()
    for i in range(30):
        t, outcome = _call_in_thread_now(sandbox, recv_n, ch, 1)
        time.sleep((i % 6) * 0.0005)
        give_up = time.monotonic() + PROMPT
        while t.is_alive() and time.monotonic() < give_up:
            sandbox.interrupt()
            t.join(0.01)
        if t.is_alive():
            ch.send("unblock")
            t.join(LIVENESS)
            pytest.fail(f"call {i}: the interrupted recv() went on waiting")
        if outcome and isinstance(outcome[0], tuple):
            pytest.fail(f"the recv took an item that nobody sent: {outcome}")
        ch.send(i)
        assert ch.recv(timeout=1) == i


def _call_in_thread_now(sandbox: Sandbox, *call: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(sandbox.call(*call))
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, outcome
