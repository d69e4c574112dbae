"""Escapes through what crosses back: a result or an exception is a pickle the sandbox wrote.

The caller loads it with subsandbox._untrusted's unpickler, outside the sandbox's audit
hook; the sandbox loads its own exceptions once (a trial load) before sending them. Each
technique here got through before its fix: the canary file was created, the caller's
class was changed, or the policy was lifted.
"""

from __future__ import annotations

import pickle
import shutil
import textwrap
from pathlib import Path

import pytest

import subsandbox
from subsandbox import Policy

from conftest import run_script

from ._escape import assert_refused, attempt

# A class whose pickle calls ``f(*args)``: what REDUCE does with any callable on the stack.
CALL = textwrap.dedent("""
    class Call:
        def __init__(self, f, args):
            self.f = f
            self.args = args
        def __call__(self):
            pass
        def __reduce__(self):
            return (self.f, self.args)
""")


def test_a_result_cannot_call_objects_it_made_in_the_caller(sb: subsandbox.Sandbox) -> None:
    """REDUCE calls whatever callable is on the stack: an operator.itemgetter instance the
    pickle made. With the real attrgetter class (which the sandbox's guards once handed
    out: tests/escapes/test_guard_bypasses.py), a chain of such getters walked from
    json.loads.__globals__ to eval, and the caller ran any code."""
    outcome = attempt(sb, CALL + textwrap.dedent("""
        import operator
        getter = Call(operator.itemgetter, ("key",))
        result = Call(getter, ({"key": "called in the caller"},))
    """))
    assert outcome != "called in the caller"
    assert_refused(outcome)


def test_a_result_cannot_call_a_granted_function_in_the_caller(tmp_path: Path) -> None:
    """shutil.rmtree is refused inside (an effect), and was run by the caller's load."""
    target = tmp_path / "keep"
    target.mkdir()
    with subsandbox.Sandbox(policy=Policy.nothing().allow_import("shutil")) as sb:
        outcome = attempt(sb, CALL + textwrap.dedent(f"""
            import shutil
            result = Call(shutil.rmtree, ({str(target)!r},))
        """))
    assert target.is_dir()
    assert_refused(outcome)
    assert shutil.rmtree  # the caller's own module is untouched


def test_a_result_cannot_set_attributes_of_the_callers_class() -> None:
    """BUILD with slot state on a class object that find_class handed out: the caller's
    own __main__ class (as the instance crossed in) got the sandbox's attributes."""
    result = run_script("""
        import pickle
        import subsandbox
        from subsandbox import Policy, Sandbox

        class Account:
            def is_admin(self):
                return False

        ATTACK = (
            "class Patch:\\n"
            "    def __init__(self, t):\\n"
            "        self.t = t\\n"
            "    def __reduce__(self):\\n"
            "        return (type, (self.t,), (None, {'is_admin': int, 'label': 'x'}))\\n"
            "def attack(account):\\n"
            "    return Patch(account)\\n")
        with Sandbox(policy=Policy.nothing()) as sb:
            sb.exec(ATTACK)
            try:
                sb.call(lambda account: attack(account), Account())
            except pickle.UnpicklingError as exc:
                assert "cannot set attributes of a class" in str(exc), exc
            else:
                raise AssertionError("the result was loaded")
        assert Account.__dict__.get("is_admin") is not int, "the class was patched"
        assert not hasattr(Account, "label") and Account().is_admin() is False
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "ok\n"


def test_an_exception_cannot_rebuild_a_function_with_a_modules_real_globals(
        canary: Path) -> None:
    """The sandbox's trial load of its own exception used the unrestricted loader: a
    function claiming to come from ``os`` got os's real globals, and its call lifted the
    policy from inside."""
    with subsandbox.Sandbox(policy=Policy.nothing()) as sb:
        payload = textwrap.dedent("""
            def payload():
                sys = __import__("sys")
                main_ns = getattr(sys.modules["__main__"], "__dict__")
                enforcer = getattr(main_ns["__builtins__"]["getattr"], "__self__")
                enforcer.effects = ("read", "write", "processes")
                enforcer.modules = ("os",)
        """)
        source = textwrap.dedent(f"""
            class Boom(Exception):
                def __reduce__(self):
                    ns = {{"__name__": "os"}}
                    exec({payload!r}, ns)
                    return (ns.pop("payload"), ())
            raise Boom()
        """)
        with pytest.raises(Exception):
            sb.exec(source)
        outcome = attempt(sb, f"""
            import os
            os.system("touch {canary}")
            result = "lifted"
        """)
    assert not canary.exists()
    assert_refused(outcome)


@pytest.mark.parametrize("raised", ["SystemExit('x')", "KeyboardInterrupt"])
def test_an_exception_whose_pickle_raises_a_base_exception_fails_only_its_call(
        raised: str) -> None:
    """Its __reduce__ raising SystemExit or KeyboardInterrupt escaped the handler that
    answers with the exception, and the sandbox's worker stopped for good."""
    with subsandbox.Sandbox(policy=Policy.nothing()) as sb:
        sb.exec(f"class E(Exception):\n    def __reduce__(self):\n        raise {raised}\n")
        with pytest.raises(subsandbox.RemoteError):
            sb.exec("raise E('x')")
        assert sb.call(abs, -3) == 3


def test_a_result_cannot_reach_a_class_through_another_module(tmp_path: Path) -> None:
    """``random._os._Environ`` is ``os._Environ``: the loader checked the module the pickle
    named (random, granted), then followed the path; pickle's SETITEM then called its
    ``__setitem__``, which ran ``os.putenv`` in the caller (found by a red-team run, with
    the bytes a sandbox writes once it controls its own pickler)."""
    import os
    import subprocess

    from subsandbox._untrusted import loader

    name = "SUBSANDBOX_ESCAPE_" + os.urandom(4).hex().upper()
    payload = (
        pickle.PROTO + bytes([4])
        + b"\x8c\x06random\x8c\x0c_os._Environ\x93"    # STACK_GLOBAL random / _os._Environ
        + b"(}cbuiltins\nstr\ncbuiltins\nstr\ncbuiltins\nstr\ncbuiltins\nstr\ntR"
        + pickle.BINUNICODE + len(name).to_bytes(4, "little") + name.encode()
        + pickle.BINUNICODE + (5).to_bytes(4, "little") + b"owned"
        + pickle.SETITEM + pickle.STOP)
    with pytest.raises(pickle.UnpicklingError,
                       match=r"random\._os\._Environ cannot come out .* each by its own "
                             r"module and name"):
        loader(Policy.compute())(payload, ())
    seen = subprocess.run(["sh", "-c", f'echo "${{{name}:-unset}}"'], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert seen == "unset"
    # The same class by its own name is refused too: os is a module of effects.
    with pytest.raises(pickle.UnpicklingError, match=r"os\._Environ cannot come out"):
        loader(Policy.compute().allow_import("os"))(payload.replace(
            b"\x8c\x06random\x8c\x0c_os._Environ", b"\x8c\x02os\x8c\x08_Environ"), ())


def test_a_result_cannot_make_a_class_through_type_of_a_class(sb: subsandbox.Sandbox) -> None:
    """``type`` in a result is ``type(x)``, never the three-argument form; but
    ``type(int)`` is ``type`` itself, and calling what came back made a class in the
    caller (a red-team run; class bodies may define ``__reduce__``)."""
    outcome = attempt(sb, """
        class TypeOfInt:
            def __call__(self, *a):
                pass
            def __reduce__(self):
                return (type, (int,))
        class Made:
            def __reduce__(self):
                return (TypeOfInt(), ("MadeInCaller", (dict,), {"note": "x"}))
        result = Made()
    """)
    assert_refused(outcome)
    assert "cannot make a class in this interpreter" in str(outcome)


def _str(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data


def test_a_result_cannot_set_attributes_of_a_callers_function() -> None:
    """BUILD on a function find_class handed out (copyreg.__newobj__, which the loader
    lets through for REDUCE): the result renamed the caller's own function to
    ``this.hijacked``, and every later pickle.dumps of a plain object in the caller
    imported ``this`` (a red-team run, round 4). Run in a process of its own: the change
    would have lasted for the process."""
    result = run_script("""
        import copyreg, pickle, sys
        from subsandbox import Policy
        from subsandbox._untrusted import loader

        def s(text):
            data = text.encode()
            return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data

        payload = (b"\\x80\\x02ccopyreg\\n__newobj__\\nN}" + s("__module__") + s("this")
                   + b"s" + s("__qualname__") + s("hijacked") + b"s\\x86b.")
        try:
            loader(Policy.compute())(payload, ())
        except pickle.UnpicklingError as exc:
            assert "set the state only of objects its result makes" in str(exc), exc
        else:
            raise AssertionError("the result was loaded")
        assert copyreg.__newobj__.__module__ == "copyreg", copyreg.__newobj__.__module__
        assert copyreg.__newobj__.__qualname__ == "__newobj__"
        class Point:
            pass
        pickle.dumps(Point(), protocol=2)
        assert "this" not in sys.modules
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "ok\n"


def test_a_result_cannot_set_attributes_of_an_enum_member() -> None:
    """``re.RegexFlag(2)`` answers with the caller's own ``re.IGNORECASE``: a BUILD after
    it would change that member for the whole interpreter."""
    from subsandbox._untrusted import loader

    import re

    payload = (pickle.PROTO + bytes([4]) + _str("re") + _str("RegexFlag") + pickle.STACK_GLOBAL
               + pickle.BININT1 + bytes([2]) + pickle.TUPLE1 + pickle.REDUCE
               + pickle.EMPTY_DICT + _str("note") + _str("set by a sandbox") + pickle.SETITEM
               + pickle.BUILD + pickle.STOP)
    with pytest.raises(pickle.UnpicklingError, match="objects its result makes"):
        loader(Policy.compute())(payload, ())
    assert "note" not in vars(re.IGNORECASE)
    # Without the BUILD, the member itself comes back, as it should.
    assert loader(Policy.compute())(payload.replace(
        pickle.EMPTY_DICT + _str("note") + _str("set by a sandbox") + pickle.SETITEM
        + pickle.BUILD, b""), ()) is re.IGNORECASE


def test_objects_with_state_still_come_back() -> None:
    """What BUILD is for: objects the result makes, with their state (REDUCE of a class,
    then __setstate__; NEWOBJ, then a dict state), shared within the result."""
    import random
    from collections import OrderedDict

    from subsandbox._untrusted import loader

    rng = random.Random(5)
    ordered = OrderedDict(a=1)
    ordered.note = "kept"  # type: ignore[attr-defined]  # an instance dict: a dict state
    value = loader(Policy.compute())(pickle.dumps([rng, rng, ordered], protocol=5), ())
    assert value[0] is value[1] and value[0].random() == random.Random(5).random()
    assert value[2] == {"a": 1} and value[2].note == "kept"


def test_a_result_does_not_make_the_caller_import_dataclasses() -> None:
    """A dataclasses sentinel in a result was looked up by importing dataclasses in the
    caller: a returned value made the caller import a module (a red-team run)."""
    result = run_script("""
        import pickle, sys
        from subsandbox import Policy
        from subsandbox._untrusted import loader

        payload = (pickle.PROTO + bytes([4])
                   + b"\\x8c\\x14subsandbox._crossing\\x8c\\x13_dataclass_sentinel\\x93"
                   + b"\\x8c\\x07MISSING\\x85R.")
        sys.modules.pop("dataclasses", None)  # a caller without it (3.14 imports it early)
        try:
            loader(Policy.compute())(payload, ())
        except pickle.UnpicklingError as exc:
            assert "has not imported dataclasses" in str(exc), exc
        else:
            raise AssertionError("the result was loaded")
        assert "dataclasses" not in sys.modules
        import dataclasses
        assert loader(Policy.compute())(payload, ()) is dataclasses.MISSING
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "ok\n"
