"""The escape corpus: each test is one technique, tried against Policy.nothing() and
Policy.compute(), and asserts that its *effect* did not happen.

An attempt is untrusted source code, run with ``Sandbox.exec`` (so it is compiled inside
the sandbox, as untrusted code would be), that stores what it obtained in ``result``.
``attempt()`` returns the exception it raised, or the value of ``result``. The tests then
look at the world: the secret file's content must not have come out, the canary file a
process would create must not exist, the listening socket must have no connection.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import subsandbox
from subsandbox import Policy

POLICIES = {"nothing": Policy.nothing, "compute": Policy.compute}


@pytest.fixture(scope="module", params=sorted(POLICIES))
def sb(request: pytest.FixtureRequest) -> Iterator[subsandbox.Sandbox]:
    with subsandbox.Sandbox(policy=POLICIES[request.param]()) as sandbox:
        yield sandbox


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file the sandbox must not read: random content, outside every import path."""
    path = tmp_path / "secret.txt"
    path.write_text("SECRET-" + os.urandom(8).hex())
    return path


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A path that a started process (or forbidden code) would create."""
    return tmp_path / "canary"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening TCP socket on localhost; a connection from the sandbox would queue."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    yield server
    server.close()
