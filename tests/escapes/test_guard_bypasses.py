"""Escapes around the guards themselves: a guarded factory that hands out the real,
unguarded object; a name check that a str subclass answers one way and the real lookup
another; vars() and jumps around the str.format rule; and the enforcer's own state."""

from __future__ import annotations

import dis
import types
from pathlib import Path

import pytest

import subsandbox
from subsandbox import Policy, PolicyError
from ._escape import assert_refused, attempt, text_of

ALL_EFFECTS = ("read", "write", "network", "processes", "native", "hooks", "threads")


def assert_got_nothing(outcome: object) -> None:
    """Refused, or a TypeError: the guards now return plain functions, so `type()` of one
    is the function type, which takes a code object, not an attribute name."""
    if isinstance(outcome, TypeError):
        assert str(outcome).startswith("function()"), outcome
        return
    assert_refused(outcome)


# -- guarded library functions hand out nothing unguarded ----------------------------------

def test_attrgetter_class_behind_the_guard(sb: subsandbox.Sandbox, canary: Path) -> None:
    """type(operator.attrgetter('x')) was the real class: AG('__self__')(getattr) was the
    enforcer, whose writable effects/modules then lifted the policy. (A sandbox of its
    own: had it worked, the shared one would have no policy left for the next tests.)"""
    with subsandbox.Sandbox(policy=sb.policy) as own:
        outcome = attempt(own, f"""
            import operator
            AG = type(operator.attrgetter('x'))
            enforcer = AG('__self__')(getattr)
            enforcer.effects = {ALL_EFFECTS!r}
            enforcer.modules = ('os', 'sys', 'subprocess')
            import os
            os.system('touch ' + canary)
            result = type(enforcer).__name__
        """, canary=str(canary))
    assert_got_nothing(outcome)
    assert not canary.exists()


def test_methodcaller_class_behind_the_guard(sb: subsandbox.Sandbox) -> None:
    """type(operator.methodcaller('upper')) was the real class: any method, any name."""
    outcome = attempt(sb, """
        import operator
        MC = type(operator.methodcaller('upper'))
        result = MC('__getattribute__', '__self__')(getattr).name
    """)
    assert_got_nothing(outcome)


def test_wraps_partial_func_is_the_real_update_wrapper(sb: subsandbox.Sandbox) -> None:
    """functools.wraps() returned functools.partial(update_wrapper, ...): its .func was the
    unguarded update_wrapper, which copies json.loads.__globals__ (the real __import__
    inside) into the caller's dict."""
    outcome = attempt(sb, """
        import functools, json
        real_update_wrapper = functools.wraps(len).func
        D = {}
        class W:
            __globals__ = D
        real_update_wrapper(W(), json.loads, assigned=(), updated=('__globals__',))
        result = D['__builtins__']['__import__']('posix').getcwd()
    """)
    assert_refused(outcome)


def test_wraps_still_decorates(sb: subsandbox.Sandbox) -> None:
    """The guarded wraps/update_wrapper/attrgetter/methodcaller still do their job."""
    outcome = attempt(sb, """
        import functools, operator
        def inner(x):
            "doc"
            return x
        inner.tag = 'kept'
        @functools.wraps(inner)
        def outer(x):
            return inner(x) + 1
        class P:
            def __init__(self, a):
                self.a = a
                self.me = self
        people = [P(3), P(1), P(2)]
        result = (outer.__name__, outer.__doc__, vars(outer)['tag'], outer(1),
                  [p.a for p in sorted(people, key=operator.attrgetter('me.a'))],
                  operator.attrgetter('a', 'me.a')(P(5)),
                  operator.methodcaller('split', ',', 1)('a,b,c'))
    """)
    if isinstance(outcome, ImportError):  # nothing(): no imports at all
        return
    assert outcome == ("inner", "doc", "kept", 2, [1, 2, 3], (5, 5), ["a", "b,c"])


def test_name_check_with_a_lying_str_subclass(sb: subsandbox.Sandbox) -> None:
    """The guards checked `name.split('.')` and `name in defaults`, which a str subclass
    answers as it likes, then passed the object itself to the real lookup, which reads
    the characters."""
    outcome = attempt(sb, """
        import operator
        class S(str):
            def split(self, sep=None, maxsplit=-1):
                return ['upper']
        def f(): pass
        result = sorted(operator.attrgetter(S('__globals__'))(f))
    """)
    assert_refused(outcome)
    outcome = attempt(sb, """
        import functools, json
        class S(str):
            def __hash__(self):
                return hash('__module__')
            def __eq__(self, other):
                return True
        got = []
        class Catch:
            def __setattr__(self, name, value):
                got.append(value)
        functools.update_wrapper(Catch(), json.dumps, assigned=(S('__globals__'),),
                                 updated=())
        result = [sorted(g) for g in got if type(g) is dict]
    """)
    assert_refused(outcome)


def test_update_wrapper_dict_into_a_class_body_dict(sb: subsandbox.Sandbox) -> None:
    """With the default names, update_wrapper copies wrapped.__dict__ into the wrapper's
    __dict__: a class-body `__dict__ = D` makes that a dict the caller holds, and
    wrapping str copies str.format (any template) into it."""
    outcome = attempt(sb, """
        import functools
        D = {}
        class W:
            __dict__ = D
        functools.update_wrapper(W(), str)
        result = D['format']('{0.__class__.__base__.__subclasses__}', 1)
    """)
    assert_refused(outcome)
    outcome = attempt(sb, """
        import functools
        D = {}
        class W:
            __dict__ = D
        functools.wraps(type)(W())
        result = D['__subclasses__'](object)
    """)
    assert_refused(outcome)


def test_guards_hold_nothing_of_the_enforcer(sb: subsandbox.Sandbox) -> None:
    """A guard handed out as a builtin is a guarded function (seal.c), not a bound method
    of the enforcer (whose __self__ a getter that skips the name rule would hand out), and
    what the guarded library functions return are plain functions."""
    outcome = attempt(sb, """
        guards = {type(f).__name__ for f in (getattr, hasattr, setattr, delattr, vars, exec,
                                             eval, compile, __import__)}
        made = set()
        try:
            import operator, functools
            guards.add(type(operator.attrgetter).__name__)
            made = {type(operator.attrgetter('x')).__name__,
                    type(operator.methodcaller('x')).__name__,
                    type(functools.wraps(len)).__name__}
        except ImportError:
            pass
        result = (sorted(guards), sorted(made),
                  [n for n in ('__self__', '__func__', '__wrapped__', '__closure__')
                   if n in dir(getattr)])
    """)
    expected_made = [] if sb.policy.name == "nothing" else ["function"]
    assert outcome == (["guarded_function"], expected_made, [])


def test_enforcer_state_is_read_only() -> None:
    """The enforcer's policy (effects, modules, directories...) cannot be rewritten by
    whoever holds it, by any of the ways to set an attribute; and it holds none of the
    enforcement's internals (the real __import__, sys.modules) under a plain name."""
    from subsandbox import _enforce

    enforcer = _enforce._Enforcer(Policy.compute().spec())
    writes = (
        lambda: setattr(enforcer, "effects", ALL_EFFECTS),
        lambda: object.__setattr__(enforcer, "effects", ALL_EFFECTS),
        lambda: object.__setattr__(enforcer, "modules", ("os",)),
        lambda: delattr(enforcer, "write_dirs"),
        lambda: object.__delattr__(enforcer, "name"),
        lambda: object.__setattr__(enforcer, "anything", 1),
    )
    for write in writes:
        with pytest.raises(AttributeError):
            write()
    assert enforcer.effects == () and "os" not in enforcer.modules
    assert not vars(type(enforcer)).get("__dict__")  # no instance dict to write into
    # A red-team run lifted the policy through the getter of a read-only property: its
    # default argument was the slot's member descriptor's bound __get__, whose __self__
    # has a __set__. No getter may lead to anything that writes.
    prop = vars(type(enforcer))["effects"]
    with pytest.raises(AttributeError):
        prop.fget.__defaults__[0].__self__.__set__(enforcer, ALL_EFFECTS)
    for field in ("name", "modules", "effects", "read_dirs", "write_dirs", "stdlib",
                  "import_roots", "main_dict", "builtins", "replacements"):
        getter = vars(type(enforcer))[field].fget
        for inner in ("__self__", "__defaults__", "__closure__", "__wrapped__", "__func__"):
            assert getattr(getter, inner, None) is None, (field, inner)
    assert not [v for v in vars(type(enforcer)).values()
                if type(v).__name__ in ("member_descriptor", "getset_descriptor")]
    assert enforcer.effects == ()
    for name in ("_real_import", "_modules", "_getframe", "views", "import_system_globals",
                 "_checking", "_machinery"):
        assert not hasattr(enforcer, name), name
    assert isinstance(enforcer.replacements, types.MappingProxyType)


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


def test_format_read_through_a_super_stand_in(sb: subsandbox.Sandbox) -> None:
    """``super(0, "{}").format`` in a function whose compile does not bind ``super``
    compiles to LOAD_SUPER_ATTR, which calls the global ``super`` with the two values and
    reads ``format`` from what it returns; the check took the literal right before it
    (the second value) for the owner. With ``super`` bound to ``lambda c, o: str`` it
    handed out ``str.format``, whose walk reached ``getattr.__globals__`` and, through
    ``AttributeError.obj``, the enforcement's module globals (a red-team run, round 5)."""
    outcome = attempt(sb, '''
ns = {"super": lambda cls, obj: str}
exec("def get():\\n    return super(0, '{}').format\\n", ns)
fmt = ns["get"]()
try:
    fmt("{0.__globals__.x}", getattr)
except AttributeError as exc:
    reached = exc.obj
result = sorted(reached)[:3]
''')
    assert_refused(outcome)
    assert "_SANDBOXED_CODE_EVENTS" not in text_of(outcome)
