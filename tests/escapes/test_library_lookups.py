"""Library code of the granted modules that looks a name up, or evaluates a string, for
the caller: reached through objects (an enum class, a dispatcher, a class attribute), not
through a module view. Each attempt, had it worked, reached the real ``os`` and used it to
lift the policy (the enforcer's module globals are ordinary ones) and read the secret, so
each runs in a sandbox of its own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import subsandbox
from ._escape import assert_not_read, assert_refused, attempt, text_of

# Given the real os module as `os`: what an attacker does with it.
READ_WITH_REAL_OS = """
        enforcement = os.sys.modules['subsandbox._enforce']
        enforcement._under = lambda path, dirs: True   # every path is under a granted dir
        result = os.read(os.open(secret, 0), 100)
"""


def run_own(sb: subsandbox.Sandbox, source: str, **values: object) -> object:
    with subsandbox.Sandbox(policy=sb.policy) as own:
        return attempt(own, source, **values)


def test_enum_convert_reads_any_module(sb: subsandbox.Sandbox, secret: Path) -> None:
    """EnumType._convert_(name, module, filter) reads sys.modules[module] by name: every
    enum class reaches it (re.RegexFlag.mro() holds Enum), and members carry the values."""
    outcome = run_own(sb, """
        import re, random
        Enum = [c for c in re.RegexFlag.mro() if c.__name__ == 'Enum'][0]
        os = Enum._convert_('X', 'random', lambda name: name == '_os')._os.value
    """ + READ_WITH_REAL_OS, secret=str(secret))
    assert_not_read(outcome, secret)


@pytest.mark.parametrize("bind", ["p.name = '__globals__'", "class Q:\n            __globals__ = p"])
def test_enum_property_looks_up_its_name(sb: subsandbox.Sandbox, secret: Path,
                                         bind: str) -> None:
    """enum.property.__get__ did getattr(instance._value_, self.name) with _attr_type
    'desc': name and _attr_type are plain attributes (or the name a class body binds)."""
    outcome = run_own(sb, f"""
        import re
        Enum = [c for c in re.RegexFlag.mro() if c.__name__ == 'Enum'][0]
        EnumProperty = type(vars(Enum)['name'])
        p = EnumProperty()
        {bind}
        p._attr_type = 'desc'
        class H:
            pass
        H.x = p
        h = H()
        h._value_ = re.compile
        os = h.x['__builtins__']['__import__']('os')
    """ + READ_WITH_REAL_OS, secret=str(secret))
    assert_not_read(outcome, secret)


@pytest.mark.parametrize("call", ["re.RegexFlag._add_member_('__repr__', re.I)",
                                  "re.I._add_alias_('__repr__')"])
def test_enum_add_member_sets_a_dunder(sb: subsandbox.Sandbox, call: str) -> None:
    """3.13+: EnumType._add_member_ (and _add_alias_, which calls it) setattr()s the member
    name on the class as library code, out of the audit hook's dunder rule."""
    outcome = run_own(sb, f"""
        import re
        try:
            {call}
        except AttributeError:  # 3.12 has neither
            pass
        result = re.RegexFlag.__repr__ is re.I
    """)
    assert outcome is not True, "a dunder of re.RegexFlag was set"
    if sys.version_info >= (3, 13):
        assert_refused(outcome)


@pytest.mark.parametrize("target", [
    # __wrapped__ (functools.wraps) leads get_type_hints to re.compile's globals
    """def target(x: "__import__('pathlib').Path"):
            pass
        target = functools.wraps(re.compile, assigned=())(target)""",
    # any object with __annotations__ and __wrapped__ in its class body
    """class T:
            __annotations__ = {'x': "__import__('pathlib').Path"}
            __wrapped__ = re.compile
            def __call__(self, x):
                pass
        target = T()""",
    # a library function whose (mutable) __annotations__ the sandbox rewrote
    """target = re.escape
        target.__annotations__['pattern'] = "__import__('pathlib').Path\"""",
])
def test_singledispatch_annotations_in_library_globals(sb: subsandbox.Sandbox, secret: Path,
                                                       target: str) -> None:
    """register(f) evaluates f's annotations (typing) in the globals f, or f.__wrapped__,
    has: a library's, with the real builtins. The class lands in .registry; pathlib's Path
    carries os.path (`parser`, `_flavour` on 3.12)."""
    outcome = run_own(sb, f"""
        import functools, re
        @functools.singledispatch
        def dispatch(x):
            pass
        {target}
        dispatch.register(target)
        Path = [k for k in dispatch.registry if k is not object][0]
        os = (getattr(Path, 'parser', None) or Path._flavour).os
    """ + READ_WITH_REAL_OS, secret=str(secret))
    assert_not_read(outcome, secret)


def test_json_tool_path(sb: subsandbox.Sandbox, secret: Path) -> None:
    """json.tool (a command-line program inside json) imports pathlib.Path, whose _flavour
    is the real os.path on 3.12."""
    outcome = run_own(sb, """
        import json.tool
        os = (getattr(json.tool.Path, 'parser', None) or json.tool.Path._flavour).os
    """ + READ_WITH_REAL_OS, secret=str(secret))
    assert_not_read(outcome, secret)


@pytest.mark.parametrize("source", [
    "import base64\nresult = callable(base64.main)",
    "import random\nresult = callable(random.main)",  # 3.13+; absent on 3.12 anyway
    "import json.tool\nresult = callable(json.tool.main)",
    "import json.__main__\nresult = True",  # 3.14: runs json.tool.main() when imported
])
def test_command_line_programs_are_not_granted(sb: subsandbox.Sandbox, source: str) -> None:
    """They parse the process's argv, read its stdin and the files argv names (as library
    code, which may read module files on sys.path), print and exit."""
    assert_refused(attempt(sb, source))


def test_what_the_guards_leave_working() -> None:
    """Enums, annotation dispatch on the sandbox's own functions, singledispatchmethod:
    under Policy.compute(), which grants functools and re."""
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute()) as sb:
        outcome = attempt(sb, """
        import functools, re
        @functools.singledispatch
        def f(x):
            return 'object'
        @f.register
        def _(x: int):
            return 'int'
        @f.register
        def _(x: "str"):
            return 'str'
        class C:
            @functools.singledispatchmethod
            def m(self, x):
                return 'object'
            @m.register
            def _(self, x: int):
                return 'int'
        Enum = [c for c in re.RegexFlag.mro() if c.__name__ == 'Enum'][0]
        class Color(str, Enum):
            RED = 'r'
            upper = 'u'   # shadows str.upper: an enum.property looks it up
        result = (f(1), f('a'), f(1.5), C().m(2), C().m(2.5), Color.RED.upper(),
                  Color.upper.value, repr(re.I | re.M))
    """)
    assert outcome == ('int', 'str', 'object', 'int', 'object', 'R', 'u',
                       're.IGNORECASE|re.MULTILINE')


LIBRARY_REGISTERING_ITS_OWN = """
import codecs
import functools


@functools.singledispatch
def kind(x):
    return "object"


@kind.register
def _(x: int):
    return "int"


def public(x: int):
    return "public"


try:
    codecs.lookup("ss-hook-probe")  # runs search functions, the sandbox's too, mid-import
except LookupError:
    pass
"""


def test_a_library_may_register_its_own_functions_by_annotation_as_it_is_imported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What register() refuses is annotations evaluated in a library's globals for the
    caller. A library's own top-level `@f.register` over `def _(x: int)` (importlib.resources
    does it) still works; its functions registered by sandboxed code do not, neither after
    its import nor from a hook the library calls during it (there the module is still
    being imported, but the caller is not its top-level code)."""
    (tmp_path / "ss_dispatch_lib.py").write_text(LIBRARY_REGISTERING_ITS_OWN)
    monkeypatch.syspath_prepend(str(tmp_path))
    policy = subsandbox.Policy.compute().allow_import("ss_dispatch_lib", "codecs")
    with subsandbox.Sandbox(policy=policy) as sb:
        outcome = attempt(sb, """
            import codecs, functools
            refusals = []
            def search(name):
                if name in ('ss-hook-probe', 'ss_hook_probe'):
                    import ss_dispatch_lib      # being imported: its module so far
                    try:
                        functools.singledispatch(len).register(ss_dispatch_lib.public)
                    except Exception as exc:
                        refusals.append(type(exc).__name__)
                return None
            codecs.register(search)
            import ss_dispatch_lib
            try:
                functools.singledispatch(len).register(ss_dispatch_lib.public)
            except Exception as exc:
                refusals.append(type(exc).__name__)
            result = (ss_dispatch_lib.kind(1), ss_dispatch_lib.kind('a'), refusals)
        """)
    assert outcome == ("int", "object", ["PolicyError", "PolicyError"])


def test_import_star_reads_what_all_lists(sb: subsandbox.Sandbox) -> None:
    """``from m import *`` reads every name of ``m.__all__`` in C. A red-team run set
    ``__all__ = ['__globals__']`` on the guarded getattr (through update_wrapper), made
    ``__import__`` return it, and got subsandbox._enforce's globals."""
    outcome = attempt(sb, """
        import functools
        class H:
            __all__ = ["__globals__"]
        functools.update_wrapper(getattr, H, assigned=("__all__",), updated=())
        __builtins__["__import__"] = lambda *a, **k: getattr
        from anything import *
        result = sorted(k for k in __globals__ if k.startswith("_real"))
    """)
    assert_refused(outcome)
    assert "_real_import" not in text_of(outcome)
    # Each layer on its own: the star import, and setting a dunder through update_wrapper.
    outcome = attempt(sb, "from json import *\nresult = dumps(1)")
    assert_refused(outcome)
    assert "from ... import *" in str(outcome)
    outcome = attempt(sb, """
        import functools
        class H:
            __all__ = ["x"]
        def f(): pass
        functools.update_wrapper(f, H, assigned=("__all__",), updated=())
        result = f.__all__
    """)
    assert_refused(outcome)


# Round 16 (2026-11-29): names looked up as variables (LOAD_NAME, which the code check
# does not read) in a class's namespace, where the attribute rule would refuse them.

def test_type_hints_do_not_look_names_up_in_a_library_class(secret: Path) -> None:
    """get_type_hints(cls) evaluates each annotation with locals = dict(vars(base)): an
    annotation "_convert_" written into EnumType's own __annotations__ (CPython makes the
    dict on first read) gave the blocked EnumType._convert_, and random._os through it."""
    policy = subsandbox.Policy.compute().allow_import("typing")
    with subsandbox.Sandbox(policy=policy) as sb:
        outcome = attempt(sb, """
        import typing, re, random
        EnumType = type(re.RegexFlag)
        Enum = re.RegexFlag.mro()[5]
        EnumType.__annotations__["x"] = "_convert_"
        convert = typing.get_type_hints(EnumType, globalns=globals())["x"]
        os = convert(Enum, "X", "random", lambda name: name == "_os")._os.value
        result = repr(os)
""", secret=str(secret))
    # (READ_WITH_REAL_OS would now breach the seal: the real os is what must not come out.)
    assert "module 'os'" not in text_of(outcome)
    assert_refused(outcome)


@pytest.mark.skipif(sys.version_info < (3, 14), reason="annotationlib.ForwardRef.evaluate "
                    "is 3.14's; 3.12 and 3.13 are covered by the test above")
@pytest.mark.parametrize("grant", ["typing", "dataclasses"])
def test_forward_ref_evaluate_does_not_read_an_owners_namespace(grant: str,
                                                                 secret: Path) -> None:
    """3.14: ForwardRef.evaluate(owner=cls) with no locals takes vars(cls) as its locals,
    and returns locals[name] for an identifier without eval: evaluate(owner=object) of
    "__getattribute__" was the real object.__getattribute__, and json.dumps' globals."""
    get_ref = {
        "typing": "import typing\nfr = lambda name: typing.get_args(typing.List[name])[0]\n",
        "dataclasses": "import dataclasses\n"
                       "def fr(name):\n"
                       "    ns = {'__name__': '__main__'}\n"
                       "    exec(f'class C:\\n    x: {name}\\n', ns)\n"
                       "    return dataclasses.fields(dataclasses.dataclass(ns['C']))[0].type\n",
    }[grant]
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import(grant)) as sb:
        outcome = attempt(sb, get_ref + """
import json
oga = fr("__getattribute__").evaluate(globals=globals(), owner=object)
g = oga(json.dumps, "__globals__")
b = g["__builtins__"]
os = (b["__import__"] if type(b) is dict else oga(b, "__import__"))("os")
result = repr(os)
""", secret=str(secret))
        assert "module 'os'" not in text_of(outcome)
        assert_refused(outcome)
        # A class's own names still resolve, and the refused one says why.
        sb.exec(get_ref + "class Owner:\n    size = int\n"
                "found = fr('size').evaluate(globals=globals(), owner=Owner)")
        assert sb.call(eval, "found is int")
    assert "no forward reference to the name '__getattribute__'" in text_of(outcome)


def test_enum_convert_runs_only_for_a_modules_own_globals() -> None:
    """However _convert_ is reached (here by a granted library's own code, which the name
    rule does not see), it converts only the globals of the module that calls it, as
    signal, socket and ssl do at import."""
    policy = subsandbox.Policy.compute().allow_import("_seal_breacher")
    with subsandbox.Sandbox(policy=policy) as sb:
        with pytest.raises(subsandbox.PolicyError, match="only its own globals"):
            sb.call(eval, "__import__('_seal_breacher').convert_globals_of('random')")
        # Nothing was breached: the sandbox still computes.
        assert sb.call(eval, "len('abc')") == 3
    with subsandbox.Sandbox() as unrestricted:   # the same call without a policy works
        assert unrestricted.call(
            eval, "__import__('_seal_breacher').convert_globals_of('random')") == "module"
