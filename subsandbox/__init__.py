"""subsandbox: sandboxed threads on CPython's own-GIL subinterpreters.

Each Sandbox is an isolated interpreter with its own GIL that shares nothing mutable;
immutable data is shared between them with zero copies (``share``), values move through
``Channel``, and ``SandboxPoolExecutor`` runs tasks on a pool of sandboxes.
"""

import sys

if sys.implementation.name != "cpython" or sys.version_info < (3, 12):
    raise ImportError(
        "subsandbox needs CPython 3.12 or newer (3.12, 3.13 and 3.14+ are supported): "
        f"this is {sys.implementation.name} {sys.version.split()[0]}"
    )

# Not `import typing`: every sandbox imports this package, and one that imports typing
# keeps ~1,300 more strings for good once destroyed (docs/lifecycle.md, "Memory of closed
# sandboxes").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

# Sandboxes import parts of this package to run their side of a call; importing the
# package must stay cheap there, so the public names load on first use (PEP 562).
_LAZY = {
    "Sandbox": "sandbox",
    "Channel": "channel",
    "share": "shared",
    "is_shared": "shared",
    "Arena": "shared",
    "SharedRef": "shared",
    "frozendict": "shared",
    "immutableset": "shared",
    "Policy": "policy",
    "SandboxPoolExecutor": "executor",
    "AllocatorRaceWarning": "errors",
    "BrokenSandbox": "errors",
    "BrokenSandboxPool": "errors",
    "ChannelClosed": "errors",
    "ChannelEmpty": "errors",
    "ChannelFull": "errors",
    "IsolationError": "errors",
    "NotShareableError": "errors",
    "PolicyError": "errors",
    "RemoteError": "errors",
    "SandboxClosed": "errors",
    "TaskInterrupted": "errors",
    "TracemallocError": "errors",
}

# Written out, not sorted(_LAZY): type checkers read only a literal __all__, and without
# it `mypy --strict` in a user's project finds no public name here (tests/test_typing.py
# checks that the two lists agree).
__all__ = [
    "AllocatorRaceWarning", "Arena", "BrokenSandbox", "BrokenSandboxPool", "Channel",
    "ChannelClosed", "ChannelEmpty", "ChannelFull", "IsolationError", "NotShareableError",
    "Policy", "PolicyError", "RemoteError", "Sandbox", "SandboxClosed",
    "SandboxPoolExecutor", "SharedRef", "TaskInterrupted", "TracemallocError", "frozendict",
    "immutableset", "is_shared", "share",
]


def __getattr__(name: str) -> "Any":
    if name == "guard":  # the submodule, on first use (``subsandbox.guard.check()``)
        import importlib

        return importlib.import_module("subsandbox.guard")
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'subsandbox' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"subsandbox.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .channel import Channel
    from .errors import (
        AllocatorRaceWarning,
        BrokenSandbox,
        BrokenSandboxPool,
        ChannelClosed,
        ChannelEmpty,
        ChannelFull,
        IsolationError,
        NotShareableError,
        PolicyError,
        RemoteError,
        SandboxClosed,
        TaskInterrupted,
        TracemallocError,
    )
    from .executor import SandboxPoolExecutor
    from .policy import Policy
    from .sandbox import Sandbox
    from .shared import Arena, SharedRef, frozendict, immutableset, is_shared, share
