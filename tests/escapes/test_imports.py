"""Escapes through the import system: getting a module the policy does not grant."""

from __future__ import annotations

import os
from pathlib import Path

import subsandbox
from ._escape import assert_not_read, assert_refused, attempt

READ_WITH_OS = """
fd = os.open(secret, os.O_RDONLY)
result = os.read(fd, 100)
"""


def test_import_statement(sb: subsandbox.Sandbox, secret: Path) -> None:
    """`import os`, then read the secret with os.open/os.read."""
    outcome = attempt(sb, "import os" + READ_WITH_OS, secret=str(secret))
    assert_not_read(outcome, secret)
    assert isinstance(outcome, ImportError) and "'os'" in str(outcome)
    assert "policy" in str(outcome)


def test_dunder_import_builtin(sb: subsandbox.Sandbox, secret: Path) -> None:
    """Call __import__ directly, by name, from the builtins."""
    outcome = attempt(sb, "os = __import__('posix')" + READ_WITH_OS, secret=str(secret))
    assert_not_read(outcome, secret)
    assert isinstance(outcome, ImportError) and "'posix'" in str(outcome)


def test_import_through_builtins_dict(sb: subsandbox.Sandbox, secret: Path) -> None:
    """Fetch __import__ from the __builtins__ mapping of __main__ and import os with it."""
    outcome = attempt(sb, "os = __builtins__['__import__']('os')" + READ_WITH_OS,
                      secret=str(secret))
    assert_not_read(outcome, secret)


def test_importlib_import_module(sb: subsandbox.Sandbox, secret: Path) -> None:
    """importlib.import_module bypasses __import__ in ordinary Python."""
    outcome = attempt(sb, "import importlib\nos = importlib.import_module('os')" + READ_WITH_OS,
                      secret=str(secret))
    assert_not_read(outcome, secret)
    assert isinstance(outcome, ImportError) and "'importlib'" in str(outcome)


def test_sys_modules(sb: subsandbox.Sandbox, secret: Path) -> None:
    """os is already loaded in every interpreter: take it from sys.modules."""
    outcome = attempt(sb, "import sys\nos = sys.modules['os']" + READ_WITH_OS,
                      secret=str(secret))
    assert_not_read(outcome, secret)


def test_module_reached_through_a_granted_module(sb: subsandbox.Sandbox, secret: Path) -> None:
    """json imports codecs, and codecs imports sys: walk json.codecs.sys.modules['os']."""
    outcome = attempt(sb, "import json\nos = json.codecs.sys.modules['os']" + READ_WITH_OS,
                      secret=str(secret))
    assert_not_read(outcome, secret)


def test_from_import_of_an_ungranted_sibling(sb: subsandbox.Sandbox, secret: Path) -> None:
    """`from re import copyreg`: IMPORT_FROM falls back to sys.modules['re.copyreg']."""
    outcome = attempt(sb, "from re import enum\nresult = enum.sys.modules['os'].getpid()")
    assert_refused(outcome)


def test_private_module_attribute(sb: subsandbox.Sandbox, secret: Path) -> None:
    """collections keeps `_sys`; random keeps `_os`: private names of granted modules."""
    outcome = attempt(sb, "import random\nos = random._os" + READ_WITH_OS, secret=str(secret))
    assert_not_read(outcome, secret)
    outcome = attempt(sb, "import collections\nresult = collections._sys.modules")
    assert_refused(outcome)


def test_relative_import(sb: subsandbox.Sandbox) -> None:
    """A relative import resolved against a forged __package__."""
    outcome = attempt(sb, "__package__ = 'subsandbox'\nfrom . import shared\n"
                          "result = shared.share")
    assert_refused(outcome)


def test_import_through_exec_with_own_builtins(sb: subsandbox.Sandbox, secret: Path) -> None:
    """exec() with a namespace of one's own choosing still imports through the gate."""
    outcome = attempt(sb, "g = {'__builtins__': {'__import__': __import__}}\n"
                          "exec('import os', g)\nos = g['os']" + READ_WITH_OS,
                      secret=str(secret))
    assert_not_read(outcome, secret)


def test_loader_get_data(sb: subsandbox.Sandbox, secret: Path) -> None:
    """__main__.__loader__ (an importer) reads any file with get_data()."""
    outcome = attempt(sb, "result = globals()['__loader__'].get_data(secret)",
                      secret=str(secret))
    assert_not_read(outcome, secret)
    outcome = attempt(sb, "import json\nresult = json.__loader__.get_data(secret)",
                      secret=str(secret))
    assert_not_read(outcome, secret)


def test_spec_loader(sb: subsandbox.Sandbox, secret: Path) -> None:
    """A module's __spec__.loader, taken through the module dict instead of an attribute."""
    outcome = attempt(sb, "result = globals()['__spec__'].loader.get_data(secret)",
                      secret=str(secret))
    assert_not_read(outcome, secret)


def test_call_by_reference_to_os_system(sb: subsandbox.Sandbox, canary: Path) -> None:
    """Sandbox.call(os.system, ...): pickle imports posix inside the sandbox to find it."""
    try:
        sb.call(os.system, f"touch {canary}")
    except ImportError as exc:
        assert "posix" in str(exc) and "policy" in str(exc)
    else:
        raise AssertionError("os.system crossed")
    assert not canary.exists()


def test_call_eval_by_reference(sb: subsandbox.Sandbox, secret: Path) -> None:
    """Sandbox.call(eval, src): the real eval would run src with the worker's globals."""
    try:
        result = sb.call(eval, f"open({str(secret)!r}).read()")
    except Exception as exc:  # noqa: BLE001
        result = exc
    assert_not_read(result, secret)
    try:
        result = sb.call(eval, "_core")  # a global of the worker loop's module
    except Exception as exc:  # noqa: BLE001
        result = exc
    assert isinstance(result, NameError)
