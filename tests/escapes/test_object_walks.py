"""Escapes by walking the object graph: from any object to a module, frame or importer."""

from __future__ import annotations

import sys

from pathlib import Path

import pytest

import subsandbox
from ._escape import assert_not_read, assert_refused, attempt


def test_subclasses_walk_to_fileio(sb: subsandbox.Sandbox, secret: Path) -> None:
    """().__class__.__base__.__subclasses__() lists _io.FileIO, which opens files."""
    outcome = attempt(sb, """
        for c in ().__class__.__base__.__subclasses__():
            if c.__name__ == 'FileIO':
                result = c(secret).read()
    """, secret=str(secret))
    assert_not_read(outcome, secret)


def test_subclasses_walk_with_computed_names(sb: subsandbox.Sandbox, secret: Path) -> None:
    """The same walk, with the dunder names built at run time and fetched by getattr."""
    outcome = attempt(sb, """
        u = '_' * 2
        base = getattr(getattr((), u + 'class' + u), u + 'base' + u)
        for c in getattr(base, u + 'subclasses' + u)():
            if c.__name__ == 'FileIO':
                result = c(secret).read()
    """, secret=str(secret))
    assert_not_read(outcome, secret)


def test_subclasses_walk_to_wrap_close_globals(sb: subsandbox.Sandbox, canary: Path) -> None:
    """os._wrap_close.__init__.__globals__ is the os module's namespace: call system()."""
    outcome = attempt(sb, """
        for c in object.__subclasses__():
            if c.__name__ == '_wrap_close':
                result = c.__init__.__globals__['system']('touch ' + canary)
    """, canary=str(canary))
    assert_refused(outcome)
    assert not canary.exists()


def test_subclasses_walk_to_builtin_importer(sb: subsandbox.Sandbox, canary: Path) -> None:
    """BuiltinImporter.load_module('posix') returns posix without the import statement."""
    outcome = attempt(sb, """
        for c in object.__subclasses__():
            if c.__name__ == 'BuiltinImporter':
                result = c.load_module('posix').system('touch ' + canary)
    """, canary=str(canary))
    assert_refused(outcome)
    assert not canary.exists()


def test_type_mro_then_subclasses(sb: subsandbox.Sandbox) -> None:
    """type.__subclasses__(object) and vars(type) as other ways to the class list."""
    outcome = attempt(sb, "result = type.__subclasses__(object)")
    assert_refused(outcome)
    outcome = attempt(sb, "result = vars(type)['__subclasses__'](object)")
    assert_refused(outcome)


def test_builtins_from_a_library_function(sb: subsandbox.Sandbox, secret: Path) -> None:
    """Any library function's __builtins__ (not audited by CPython) holds the real open."""
    outcome = attempt(sb, "result = min.__self__.open(secret).read()", secret=str(secret))
    assert_not_read(outcome, secret)
    outcome = attempt(sb, "f = sorted\nresult = f.__self__.__dict__['open'](secret).read()",
                      secret=str(secret))
    assert_not_read(outcome, secret)


def test_globals_of_a_granted_module_function(sb: subsandbox.Sandbox, secret: Path) -> None:
    """json.dumps.__globals__ is json's namespace, with the real __builtins__ inside."""
    outcome = attempt(sb, """
        import json
        result = json.dumps.__globals__['__builtins__']['open'](secret).read()
    """, secret=str(secret))
    assert_not_read(outcome, secret)


def test_globals_of_own_function(sb: subsandbox.Sandbox, secret: Path) -> None:
    """A function's own __globals__['__builtins__']: are they the real ones?"""
    outcome = attempt(sb, """
        def f(): pass
        result = f.__globals__['__builtins__']['open'](secret).read()
    """, secret=str(secret))
    assert_not_read(outcome, secret)


def test_builtins_via_globals_and_eval(sb: subsandbox.Sandbox, secret: Path) -> None:
    """globals()/eval('__builtins__') hand out the sandbox's builtins, not the real ones."""
    outcome = attempt(sb, "result = sorted(k for k in eval('__builtins__') "
                          "if k in ('open', '__loader__', 'breakpoint', 'input'))")
    assert outcome == []
    outcome = attempt(sb, "result = [k for k, v in globals().items() "
                          "if type(v).__name__ == 'module']")
    assert outcome == []


def test_frame_via_traceback(sb: subsandbox.Sandbox) -> None:
    """e.__traceback__.tb_frame.f_back.f_globals: the worker loop's globals hold _core."""
    outcome = attempt(sb, """
        try:
            1 / 0
        except ZeroDivisionError as e:
            f = e.__traceback__.tb_frame
            while f.f_back is not None:
                f = f.f_back
            result = f.f_globals['_core']
    """)
    assert_refused(outcome)


def test_frame_via_traceback_with_getattr(sb: subsandbox.Sandbox) -> None:
    """The same through getattr with names assembled at run time."""
    outcome = attempt(sb, """
        try:
            1 / 0
        except ZeroDivisionError as e:
            tb = getattr(e, '__trace' + 'back__')
            result = getattr(tb, 'tb_' + 'frame')
    """)
    assert_refused(outcome)


def test_frame_via_generator(sb: subsandbox.Sandbox) -> None:
    """A running generator's gi_frame.f_back is its caller: walk up to the worker loop."""
    outcome = attempt(sb, """
        def g():
            yield getattr(gen, 'gi_' + 'frame')
        gen = g()
        result = next(gen)
    """)
    assert_refused(outcome)
    outcome = attempt(sb, """
        def g():
            yield gen.gi_frame.f_back.f_back.f_globals
        gen = g()
        result = next(gen)
    """)
    assert_refused(outcome)


def test_frame_via_coroutine(sb: subsandbox.Sandbox) -> None:
    """A coroutine's cr_frame, and an async generator's ag_frame."""
    outcome = attempt(sb, """
        async def c():
            return 1
        co = c()
        result = co.cr_frame.f_globals
    """)
    assert_refused(outcome)
    outcome = attempt(sb, """
        async def a():
            yield 1
        result = a().ag_frame
    """)
    assert_refused(outcome)


def test_format_string_attribute_walk(sb: subsandbox.Sandbox) -> None:
    """'{0.__globals__}'.format(f) walks attributes in C, out of the audit hook's sight."""
    outcome = attempt(sb, "def f(): pass\nresult = '{0.__globals__}'.format(f)")
    assert_refused(outcome)


def test_format_string_built_at_run_time(sb: subsandbox.Sandbox) -> None:
    """A template assembled at run time, used through .format, format_map and str.format."""
    for source in (
        "t = '{0.__init__.__glo' + 'bals__}'\nresult = t.format(json)",
        "t = '{x.__class__.__mro__}'\nresult = t.format_map({'x': 1})",
        "t = '{0.__class__}'\nresult = str.format(t, 1)",
        "t = '{0.__class__}'\nresult = getattr(t, 'format')(1)",
    ):
        outcome = attempt(sb, "import json\n" + source if "json" in source else source)
        assert_refused(outcome)


def test_attrgetter_and_methodcaller(sb: subsandbox.Sandbox) -> None:
    """operator.attrgetter/methodcaller look attributes up by name, in C."""
    outcome = attempt(sb, """
        import operator
        def f(): pass
        result = operator.attrgetter('__globals__')(f)
    """)
    assert_refused(outcome)
    outcome = attempt(sb, """
        import operator
        result = operator.methodcaller('__reduce_ex__', 2)(len)
    """)
    assert_refused(outcome)


def test_string_formatter(sb: subsandbox.Sandbox) -> None:
    """string.Formatter().get_field() walks attributes by name."""
    outcome = attempt(sb, """
        import string
        result = string.Formatter().get_field('0.__globals__', (len,), {})
    """)
    assert_refused(outcome)


def test_getattribute_slot(sb: subsandbox.Sandbox) -> None:
    """object.__getattribute__(f, '__globals__'), or through super()."""
    outcome = attempt(sb, "def f(): pass\nresult = object.__getattribute__(f, '__globals__')")
    assert_refused(outcome)
    outcome = attempt(sb, """
        class A:
            def grab(self, f):
                return super().__getattribute__('__dict__')
        result = A().grab(None)
    """)
    assert_refused(outcome)


def test_vars_of_a_class(sb: subsandbox.Sandbox) -> None:
    """vars() returns a namespace; it must not carry the dunders the name rule hides."""
    outcome = attempt(sb, """
        class A:
            def m(self): pass
        result = sorted(k for k in vars(type(A.m))
                        if k in ('__globals__', '__code__', '__builtins__', '__closure__'))
    """)
    assert outcome == []
    outcome = attempt(sb, "result = vars()")
    assert_refused(outcome)


def test_class_assignment(sb: subsandbox.Sandbox) -> None:
    """Assigning __class__ re-types an object (here to a class with other methods)."""
    for source in (
        "x.__class__ = B",
        "setattr(x, '__class__', B)",
        "object.__setattr__(x, '__class__', B)",
    ):
        outcome = attempt(sb, f"""
            class A: pass
            class B: pass
            x = A()
            try:
                {source}
            finally:
                result = type(x).__name__
        """)
        assert outcome != "B", source


def test_library_evaluates_a_string_annotation(sb: subsandbox.Sandbox) -> None:
    """functools.singledispatch().register(fn) makes typing eval fn's string annotations
    as library code: the walk in the annotation must still be refused."""
    outcome = attempt(sb, """
        import functools
        @functools.singledispatch
        def f(x): pass
        def g(x: "[c for c in ().__class__.__base__.__subclasses__()]"): pass
        try:
            f.register(g)
        except TypeError as e:
            result = str(e)
    """)
    if sys.version_info >= (3, 14) and not isinstance(outcome, Exception):
        # 3.14's functools evaluates it through annotationlib's FORWARDREF format, which
        # turns an evaluation that raised (here: the policy's refusal of the walk) into an
        # unresolved ForwardRef, so the refusal is swallowed. Without a policy the same
        # code puts the list of every class into this message.
        assert isinstance(outcome, str) and "unresolved forward reference" in outcome, outcome
        assert "<class" not in outcome
    else:
        assert_refused(outcome)
    assert "FileIO" not in str(outcome)


def test_library_getattr_with_chosen_names(sb: subsandbox.Sandbox) -> None:
    """functools.update_wrapper(obj, fn, assigned=('__globals__',)) does the getattr for
    you and hands the value to obj's __setattr__."""
    outcome = attempt(sb, """
        import functools, json
        got = []
        class Catch:
            def __setattr__(self, name, value):
                got.append(value)
        functools.update_wrapper(Catch(), json.dumps, assigned=('__globals__',), updated=())
        result = got
    """)
    assert_refused(outcome)
    outcome = attempt(sb, """
        import functools, json
        result = functools.wraps(json.dumps, updated=('__globals__',))
    """)
    assert_refused(outcome)


def test_attribute_error_obj_is_the_view_not_the_module(sb: subsandbox.Sandbox) -> None:
    """AttributeError.obj names the object whose lookup failed: for a module the policy
    hands out, that must be the view, whose failed lookups never reach the real module's
    private names."""
    outcome = attempt(sb, """
        import math
        try:
            math.no_such_name
        except AttributeError as e:
            caught = e.obj
        result = (caught is math, sorted(n for n in dir(caught) if n.startswith('_')))
        try:
            caught._math_private
        except AttributeError as e:
            result = result + (e.obj is math,)
    """)
    if isinstance(outcome, ImportError):  # nothing(): math is not granted at all
        assert "policy" in str(outcome)
        return
    assert outcome == (True, [], True)


def test_guard_annotations_hand_out_no_class(sb: subsandbox.Sandbox) -> None:
    """The policy's guards are the sandbox's exec, getattr, __import__...; __annotations__
    is a safe dunder, and evaluated annotations would hand out classes such as
    types.CodeType (which makes code objects). The guards are guarded functions (seal.c),
    which carry no annotations at all, only a name and a doc."""
    outcome = attempt(sb, """
        seen = {}
        for name in ('exec', 'eval', 'compile', 'getattr', 'setattr', 'vars', '__import__'):
            fn = getattr(__builtins__, name, None) if not isinstance(__builtins__, dict) \\
                else __builtins__.get(name)
            seen[name] = (fn.__name__, hasattr(fn, '__annotations__'))
        result = seen
    """)
    assert isinstance(outcome, dict), outcome
    # Every guard is there (a test that read nothing would prove nothing), and bare.
    assert outcome == {name: (name, False) for name in (
        'exec', 'eval', 'compile', 'getattr', 'setattr', 'vars', '__import__')}, outcome


def test_class_pattern_keyword_reads_globals(sb: subsandbox.Sandbox, secret: Path) -> None:
    """``case object(__globals__=G)``: MATCH_CLASS reads the attribute in C, with no audit
    event; the guarded getattr's globals hold the real builtins (found by a red-team run)."""
    outcome = attempt(sb, """
        match getattr:
            case object(__globals__=G):
                result = G['__builtins__']['open'](secret).read()
    """, secret=str(secret))
    assert_not_read(outcome, secret)
    assert "class pattern with the attribute '__globals__'" in str(outcome)


def test_class_pattern_positional_names_come_from_match_args(
        sb: subsandbox.Sandbox, secret: Path) -> None:
    """``case C(g)`` reads the attribute ``C.__match_args__`` names, and a metaclass makes
    any subject match: no refused name appears anywhere in the code."""
    outcome = attempt(sb, """
        class AnySubject(type):
            def __instancecheck__(cls, obj):
                return True
        class Globals(metaclass=AnySubject):
            __match_args__ = ('_' + '_globals_' + '_',)
        match getattr:
            case Globals(g):
                result = g['__builtins__']['open'](secret).read()
    """, secret=str(secret))
    assert_not_read(outcome, secret)
    assert "positional sub-patterns" in str(outcome)


def test_class_pattern_in_a_function_crossing_by_value(sb: subsandbox.Sandbox) -> None:
    """The same pattern in a function sent with ``call`` is checked when it is made."""
    def attack() -> object:
        match getattr:
            case object(__globals__=g):
                return sorted(g)
        return None

    with pytest.raises(subsandbox.PolicyError, match="class pattern with the attribute"):
        sb.call(attack)


def test_class_pattern_format_hands_out_no_str_format(sb: subsandbox.Sandbox) -> None:
    """``case str(format=f)`` would bind the subject's str.format: a template walk."""
    outcome = attempt(sb, """
        match '{0.__globals__}':
            case str(format=f):
                result = f(getattr)
    """)
    assert_refused(outcome)
    assert "class pattern with the attribute 'format'" in str(outcome)
