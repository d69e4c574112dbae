"""Shared fixtures. Tests use the public API; a few reach the C core where nothing
public can observe the behaviour (stated at each use)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

import subsandbox


def pytest_configure(config: pytest.Config) -> None:
    # The Ctrl-C tests need SIGINT to reach Python, here and in the processes they start.
    # A shell without job control starts a background command with SIGINT ignored (bash:
    # "asynchronous commands"), Python then leaves it ignored, and so would every child:
    # raise_signal() and interrupt_main() do nothing, and a blocked recv() waits forever.
    # Handled as in a terminal, it is inherited as the default action (exec resets a
    # handler), which each child Python turns into KeyboardInterrupt again.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # A blocked signal is inherited across exec too, and stays pending forever.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.fixture
def sandbox() -> Iterator[subsandbox.Sandbox]:
    with subsandbox.Sandbox() as sb:
        yield sb


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_script(source: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a script (its functions live in ``__main__``) in a fresh process.

    The tests' folder is put on its ``PYTHONPATH``: a script may import a test module's
    helpers (``from test_executor_cpython import sleep_and_print``) whatever folder pytest
    runs from (tools/sanitizers.sh runs it outside the checkout, so that the child's current
    folder, first on its sys.path, holds no subsandbox/ to shadow the installed one)."""
    path = os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONFAULTHANDLER="1", PYTHONPATH=path)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], capture_output=True,
                          text=True, timeout=timeout, env=env)


# CPython 3.12 warns once per process, before its first sandbox under a hooked raw
# allocator (-X dev, PYTHONMALLOC=debug): subsandbox.AllocatorRaceWarning.
ALLOCATOR_RACE_WARNED_HERE = sys.version_info < (3, 13)


def without_allocator_race_warning(stderr: str) -> str:
    """The stderr of a run under a hooked raw allocator, less the one AllocatorRaceWarning
    it must hold on 3.12 (and must not on 3.13+): asserts that, then returns the rest."""
    lines = stderr.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if ": AllocatorRaceWarning: " in line]
    assert len(hits) == (1 if ALLOCATOR_RACE_WARNED_HERE else 0), stderr[-4000:]
    for i in reversed(hits):
        # Python prints the warning's source line under it, indented, when it can read it.
        shown_source = i + 1 < len(lines) and lines[i + 1].startswith(" ")
        del lines[i:i + (2 if shown_source else 1)]
    return "".join(lines)
