"""Helpers of the escape corpus (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import pickle
import socket
import textwrap
from pathlib import Path

import subsandbox


def attempt(sb: subsandbox.Sandbox, source: str, **values: object) -> object:
    """Run untrusted ``source`` with ``values`` as globals; the exception or ``result``."""
    sb.exec("result = None")
    for name, value in values.items():
        sb.exec(f"{name} = {value!r}")
    try:
        sb.exec(textwrap.dedent(source))
        # Under a policy eval runs in __main__; unrestricted, the real eval would run in
        # the worker loop's globals.
        fetch = ("result" if not sb.policy.is_unrestricted
                 else "__import__('sys').modules['__main__'].result")
        outcome: object = sb.call(eval, fetch)
    except BaseException as exc:  # noqa: BLE001 - the outcome is what the test checks
        outcome = exc
    log = os.environ.get("SUBSANDBOX_ESCAPE_LOG")  # to review why each attempt failed
    if log:
        with open(log, "a") as f:
            f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}: "
                    f"{text_of(outcome)[:300]!r}\n")
    return outcome


def text_of(outcome: object) -> str:
    """Everything the attempt let out: the value, or the message and remote traceback."""
    if isinstance(outcome, BaseException):
        return f"{outcome!r} {outcome} {outcome.__cause__}"
    return repr(outcome)


# What a refusal looks like: the policy's errors, a gated import, a builtin that is not
# there, a private name a module view does not have. Anything else (a SyntaxError...)
# means the attempt itself is broken and proves nothing.
REFUSALS = (subsandbox.PolicyError, ImportError, NameError, AttributeError, KeyError,
            pickle.UnpicklingError, subsandbox.RemoteError)


def assert_refused(outcome: object) -> None:
    """The attempt raised a refusal (it did not get what it was after)."""
    assert isinstance(outcome, Exception), f"the attempt got through: {outcome!r}"
    assert isinstance(outcome, REFUSALS), f"the attempt failed for another reason: {outcome!r}"


def assert_not_read(outcome: object, secret: Path) -> None:
    assert secret.read_text() not in text_of(outcome), "the secret came out"
    assert_refused(outcome)


def assert_no_connection(listener: socket.socket) -> None:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return
    conn.close()
    raise AssertionError("the sandbox opened a connection")
