"""Shared fixtures. Tests use the public API; a few reach the C core where nothing
public can observe the behaviour (stated at each use)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

import subsandbox


@pytest.fixture
def sandbox() -> Iterator[subsandbox.Sandbox]:
    with subsandbox.Sandbox() as sb:
        yield sb


def run_script(source: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a script (its functions live in ``__main__``) in a fresh process."""
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], capture_output=True,
                          text=True, timeout=timeout, env=env)
