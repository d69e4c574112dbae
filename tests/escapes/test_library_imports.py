"""Imports that library code inside the sandbox does with the real ``__import__``, by a
name sandboxed code chose (a red-team run, round 6).

Formatting a sandbox's exception computes traceback's "did you mean" for an ImportError
by importing ``exc.name``; the sandbox's pickler imports the module an object's
``__module__`` names. A ``str`` subclass as that name steered importlib (its hash missed
``sys.modules``, so a granted module was loaded again under it and bound on its real
package), and a module view trusted that module's ``__name__``: it later hashed like
``"sys"``, and the view handed out the real ``sys``.
"""

from __future__ import annotations

import pytest

import subsandbox

from ._escape import REFUSALS, assert_refused, attempt, text_of

STR_SUBCLASS = '''
class S(str):
    mode = ["import"]
    def __hash__(self):
        if S.mode[0] == "import":
            return hash("json.decoder") ^ 0x5A5A5A
        return hash(S.mode[0])
    def __eq__(self, other):
        if S.mode[0] == "import":
            return self is other
        return other == S.mode[0]
'''


def test_a_str_subclass_as_a_module_name(sb: subsandbox.Sandbox) -> None:
    """Stage 1: an ImportError whose name is the subclass, formatted by the sandbox.
    Stage 2: the subclass now compares like "sys"; json.decoder through the json view."""
    attempt(sb, STR_SUBCLASS + '''
KEEP = S("json.decoder")
error = ImportError("no", name=KEEP)
error.name_from = "x"
raise error
''')
    outcome = attempt(sb, '''
S.mode[0] = "sys"
import json
found = json.decoder
S.mode[0] = "import"
result = sorted(found.modules)[:3]
''')
    assert_refused(outcome)


def test_traceback_suggestions_import_nothing(sb: subsandbox.Sandbox,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    """An ImportError naming an ungranted module, formatted by the sandbox: traceback's
    suggestion imported it with the real __import__ (``this`` prints as it loads)."""
    outcome = attempt(sb, '''
error = ImportError("no", name="this")
error.name_from = "x"
raise error
''')
    assert isinstance(outcome, ImportError)
    assert "Beautiful is better than ugly" not in capfd.readouterr().out


def test_the_pickler_imports_no_module_a_class_body_names(sb: subsandbox.Sandbox) -> None:
    """A result whose __reduce__ returns a string is saved as a global: pickle imported
    its class's __module__ (a class body sets it) with the real __import__, and read the
    name from it."""
    outcome = attempt(sb, '''
class Loads:
    __module__ = "tomllib"
    def __reduce__(self):
        return "loads"
result = Loads()
''')
    # The result cannot cross either way; before the fix it failed only after pickle had
    # imported tomllib and compared its loads with the object (3.12/3.13 hide why an
    # import failed: "import of module 'tomllib' failed").
    assert isinstance(outcome, (TypeError, *REFUSALS)), outcome
    assert "not the same object" not in text_of(outcome), "tomllib was imported and read"


def test_the_pickler_imports_no_module_named_by_a_str_subclass(
        sb: subsandbox.Sandbox) -> None:
    """The same with a str subclass as the name, of a module the policy would grant:
    importlib would hash, compare and split it with the subclass's methods."""
    outcome = attempt(sb, '''
class Named(str):
    pass
class Sqrt:
    __module__ = Named("cmath")
    def __reduce__(self):
        return "sqrt"
result = Sqrt()
''')
    assert isinstance(outcome, (TypeError, *REFUSALS)), outcome
    assert "not the same object" not in text_of(outcome), "cmath was imported and read"
