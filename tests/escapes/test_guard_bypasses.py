"""Escapes around the guards themselves: a guarded factory that hands out the real,
unguarded object; a name check that a str subclass answers one way and the real lookup
another; vars() and jumps around the str.format rule; and the enforcer's own state."""

from __future__ import annotations

import dis

import pytest

import subsandbox
from subsandbox import PolicyError
from ._escape import assert_refused, attempt


# -- the str.format rule ---------------------------------------------------------------------

def test_format_through_vars_of_str(sb: subsandbox.Sandbox) -> None:
    """vars(str)['format'] is str.format: the same name rule as getattr applies to vars."""
    outcome = attempt(sb, """
        fmt = vars(str)['format']
        result = fmt('{0.__class__.__base__.__subclasses__}', 1)
    """)
    assert_refused(outcome)
    outcome = attempt(sb, """
        result = sorted(k for k in list(vars(str)) + list(vars(type(''))) + list(vars(str.mro()[0]))
                        if k in ('format', 'format_map'))
    """)
    assert outcome == []


def test_format_on_a_jump_target(sb: subsandbox.Sandbox) -> None:
    """`(t if c else '{}').format(x)`: in straight-line order LOAD_CONST '{}' comes just
    before LOAD_ATTR format, but a jump lands on the LOAD_ATTR with `t` on the stack."""
    for source in (
        "result = (t if c else '{}').format(min)",
        "result = (c and t or '{}').format(min)",
        "result = (d or '{}').format(min)",
    ):
        outcome = attempt(sb, "t = '{0.__self__}'\nc = 1\nd = t\n" + source)
        assert_refused(outcome)
        assert "module 'builtins'" not in str(outcome), source


@pytest.mark.parametrize("source", [
    "x = (t if c else '{}').format(1)",
    "x = (c and t or '{}').format(1)",
    "x = (t or '{}').format(1)",
    "x = ('{}' if c else t).format(1)",
    "for i in range(3):\n    x = (t if i else '{}').format_map({})",
])
def test_check_code_refuses_format_after_a_jump(source: str) -> None:
    """The code check itself, on this Python's bytecode."""
    from subsandbox._enforce import check_code

    with pytest.raises(PolicyError, match="str.format"):
        check_code(compile(source, "<test>", "exec"), "test")


def test_check_code_keeps_literal_templates() -> None:
    """A literal template with plain fields still passes, also inside try/except and
    loops (where jump targets and handlers are all around it)."""
    from subsandbox._enforce import check_code

    source = """
for i in range(2):
    try:
        x = "{} {x:>3}".format(i, x=2)
    except Exception:
        y = "{0}!".format(i)
    finally:
        z = "{}".format_map({})
"""
    check_code(compile(source, "<test>", "exec"), "test")


def test_exception_handler_offsets_match_dis() -> None:
    """_handler_offsets reads co_exceptiontable: the same targets as dis on this Python."""
    from subsandbox._enforce import _handler_offsets

    source = """
try:
    a = 1
except ValueError:
    b = 2
except Exception as e:
    with open('x') as f:
        c = [i for i in range(3)]
finally:
    d = 4
"""
    code = compile(source, "<test>", "exec")
    expected = {instr.offset for instr in dis.get_instructions(code)
                if instr.opname == "PUSH_EXC_INFO"}
    found = _handler_offsets(code)
    assert expected and expected <= found
    parse = getattr(dis, "_parse_exception_table", None)
    if parse is not None:
        assert found == {entry.target for entry in parse(code)}
