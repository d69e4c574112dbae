"""Functions that sandboxes run in tests/test_shared_ref.py (importable by name there)."""

from __future__ import annotations

from typing import Any

import subsandbox


def describe(value: Any) -> tuple[str, bool, int]:
    """What arrived: its type, whether it is a shared object, and a checksum of it."""
    return type(value).__name__, subsandbox.is_shared(value), checksum(value)


def checksum(value: Any) -> int:
    """Reads the whole value; returns only an int, so nothing shared comes back."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, int):
        return value % 1_000_003
    if isinstance(value, (tuple, subsandbox.immutableset)):
        return sum(checksum(v) for v in value)
    if isinstance(value, subsandbox.frozendict):
        return sum(checksum(k) + checksum(v) for k, v in value.items())
    return 0


def receive_and_describe(channel: Any) -> tuple[str, bool, int]:
    return describe(channel.recv())
