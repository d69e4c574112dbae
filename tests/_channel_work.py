"""Functions that tests/test_channel.py runs inside sandboxes.

They live apart so that a sandbox importing them by reference imports only subsandbox
(the test module imports hypothesis, whose C part does not load in subinterpreters).
"""

from __future__ import annotations

from typing import Any

import subsandbox
from subsandbox import Channel, ChannelClosed


def echo(inbox: Channel, outbox: Channel, n: int) -> None:
    for _ in range(n):
        outbox.send(inbox.recv())


def send_all(out: Channel, items: tuple[Any, ...]) -> None:
    for item in items:
        out.send(item)


def recv_n(inbox: Channel, n: int) -> tuple[Any, ...]:
    return tuple(inbox.recv() for _ in range(n))


def drain(inbox: Channel) -> tuple[Any, ...]:
    return tuple(inbox)


def recv_until_closed(inbox: Channel) -> str:
    try:
        inbox.recv()
    except ChannelClosed as exc:
        return f"closed: {exc}"
    return "got an item"


def identity_of_received(inbox: Channel) -> int:
    return id(inbox.recv())


def send_unshareable(out: Channel) -> str:
    try:
        out.send(("fine", {"a": 1}))
    except subsandbox.NotShareableError as exc:
        return str(exc)
    return "sent"


def make_channel_with_items(out: Channel) -> None:
    inner = Channel()
    inner.send("left in a channel made by a closed sandbox")
    inner.send(10**50)
    out.send(("here", inner))


def keep_in_global(ch: Channel) -> None:
    global kept
    kept = ch


def forward_to_reply_channel(requests: Channel) -> None:
    _, reply_to = requests.recv()
    reply_to.send(requests.recv())
