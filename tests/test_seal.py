"""The seal (_ext/seal.c): a sandbox's policy fails closed once the state that enforces it
is rewritten.

Red-team runs ended every escape they found by rewriting the enforcement's own state (a
module global of subsandbox._enforce, the grants, a helper it calls). Whatever way in the
next one finds, that write now stops the policy: every guarded function (the audit hook,
the builtins, module views, the patched library functions) refuses from then on. Here a
granted module of the tests' own (_seal_breacher) does the writing, as a granted library
with the real builtins could.
"""

from __future__ import annotations

import pickle
import sys

import pytest

import subsandbox
from subsandbox import _core

from conftest import run_script

BREACHER = subsandbox.Policy.compute().allow_import("_seal_breacher")


def breached_sandbox(write: str) -> subsandbox.Sandbox:
    sb = subsandbox.Sandbox(policy=BREACHER)
    # Before the write, everything the test tries afterwards works.
    assert sb.call(eval, "getattr(1, 'real') + len(__import__('math').__name__)") == 5
    assert sb.call(eval, f"__import__('_seal_breacher').{write}") == "written"
    return sb


@pytest.mark.parametrize("write", [
    "rebind('subsandbox._enforce', '_under')",          # the path check of open()
    "rebind('subsandbox._enforce', 'attribute_allowed')",
    "rebind('subsandbox._grants', 'grants')",
    "add_to('subsandbox._enforce', '_new_name')",
    "rebind('subsandbox._crossing', '_make_function')",
    "rebind('posixpath', 'realpath')",
    "rebind('dis', 'get_instructions')",
    "rebind('functools', 'singledispatch')",             # a patched library function
    "set_class_attribute('subsandbox._enforce', '_Enforcer', 'hook')",
])
def test_a_write_to_the_enforcement_stops_the_policy(write: str) -> None:
    with breached_sandbox(write) as sb:
        for source in ("import math", "getattr(1, 'real')", "exec('x = 1')",
                       "__import__('_seal_breacher')"):
            with pytest.raises(subsandbox.PolicyError, match="policy no longer runs") as caught:
                sb.exec(source)
            # It says what was written, and what to do.
            assert "close this sandbox" in str(caught.value)
        # Even a call that names nothing of the policy is refused: the sandbox's loader of
        # requests is guarded too. The sandbox still closes (the `with`).
        with pytest.raises(subsandbox.PolicyError, match="policy no longer runs"):
            sb.call(sum, [1, 2, 3])


def test_the_breach_names_what_was_written() -> None:
    with breached_sandbox("rebind('subsandbox._enforce', '_under')") as sb:
        with pytest.raises(subsandbox.PolicyError) as caught:
            sb.exec("import math")
    assert "'_under' in the namespace of subsandbox._enforce was rebound" in str(caught.value)


def test_a_patched_library_is_sealed_as_it_loads() -> None:
    """typing's forward references are patched when the sandbox first imports typing
    (3.14: annotationlib, which typing imports): setting the patched method back on the
    class would undo the patch."""
    patched = "annotationlib" if sys.version_info >= (3, 14) else "typing"
    policy = BREACHER.allow_import("typing")
    with subsandbox.Sandbox(policy=policy) as sb:
        sb.exec("import typing")
        # typing writes into its own namespace as it makes names on first use: not a breach.
        sb.exec("typing.Callable[[int], int]; typing.ByteString" if sys.version_info < (3, 14)
                else "typing.Callable[[int], int]")
        assert sb.call(eval, "__import__('math').floor(1.5)") == 1
        assert sb.call(eval, f"__import__('_seal_breacher').set_class_attribute("
                             f"{patched!r}, 'ForwardRef', 'evaluate')") == "written"
        with pytest.raises(subsandbox.PolicyError, match=f"'evaluate' in the class "
                                                         f"{patched}.ForwardRef was"):
            sb.exec("import math")


def test_what_cpython_fills_in_on_first_read_is_no_breach() -> None:
    """Reading a class's __annotations__ stores an empty dict in its namespace (3.12,
    3.13; 3.14 caches what __annotate__ answered): the walk of everything reachable read
    enum.EnumType's and broke the seal."""
    with subsandbox.Sandbox(policy=BREACHER.allow_import("enum", "typing")) as sb:
        sb.exec("import enum, typing\n"
                "seen = (enum.EnumType.__annotations__, enum.property.__annotations__,\n"
                "        enum.__annotations__, typing.__annotations__)")
        assert sb.call(eval, "__import__('math').floor(1.5)") == 1


def test_sandboxes_are_sealed_apart() -> None:
    """The breach is one interpreter's: another sandbox, and the caller, go on."""
    with breached_sandbox("rebind('subsandbox._enforce', '_under')") as broken, \
            subsandbox.Sandbox(policy=BREACHER) as intact:
        with pytest.raises(subsandbox.PolicyError):
            broken.exec("import math")
        assert intact.call(eval, "__import__('math').floor(2.5)") == 2
    assert _core.seal_breach() is None


def test_an_unrestricted_sandbox_is_not_sealed() -> None:
    with subsandbox.Sandbox() as sb:
        sb.exec("import sys; sys.modules['subsandbox._crossing']._x = 1")
        assert sb.call(eval, "__import__('subsandbox._core', fromlist=['x']).seal_breach()") is None
        assert sb.call(eval, "type(getattr).__name__") == "builtin_function_or_method"


def test_guarded_functions_and_the_seal_in_a_fresh_interpreter() -> None:
    """The C parts, in a process of their own (a seal cannot be undone)."""
    out = run_script("""
        import types
        from subsandbox import _core

        class Refused(Exception):
            pass

        def f(*args, **kwargs):
            '''the doc'''
            return args, kwargs

        g = _core.guarded(f, "g", f.__doc__)
        assert (g.__name__, g.__qualname__, g.__doc__) == ("g", "g", "the doc")
        assert g(1, k=2) == ((1,), {"k": 2})

        class C:
            m = _core.guarded(f, "m")
        c = C()
        assert c.m(5) == ((c, 5), {}) and C.m is C.__dict__["m"]    # binds as a function
        for name in ("__self__", "__wrapped__", "__func__", "__closure__", "__globals__"):
            assert not hasattr(g, name), name
        try:
            type(g)()
        except TypeError:
            pass
        else:
            raise AssertionError("guarded_function instantiable")
        try:
            import pickle
            pickle.dumps(g)
        except TypeError as exc:
            assert "cannot pickle g" in str(exc)
        else:
            raise AssertionError("a guarded function pickled")

        def here():
            return _core.frame_at(0).f_code.co_name, _core.frame_at(1).f_code.co_name
        assert here() == ("here", "<module>") and _core.frame_at(10**6) is None

        namespace = types.ModuleType("enforcement").__dict__
        namespace["x"] = 1
        _core.seal((namespace,), Refused)
        assert _core.seal_breach() is None and g(1) == ((1,), {})
        try:
            raise ValueError("pending")
        except ValueError:
            namespace["x"] = 2              # the exception being handled is left as it was
            import sys
            assert sys.exc_info()[0] is ValueError
        assert _core.seal_breach() == "'x' in the namespace of enforcement was rebound"
        for call in (lambda: g(1), lambda: c.m(1)):
            try:
                call()
            except Refused as exc:
                assert "policy no longer runs" in str(exc)
            else:
                raise AssertionError("a guarded function ran after the breach")
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_key_that_reads_as_a_name_cpython_fills_in_is_still_a_breach() -> None:
    """A dict hands its watcher the key it was given: a str subclass that hashes and
    compares as "x" but reads "__annotations__" rebound "x" past the watcher's exception
    for names CPython fills in itself (a red-team run, round 13)."""
    out = run_script("""
        import types
        from subsandbox import _core

        ran = []

        class K(str):
            def __hash__(self):
                return hash("x")
            def __eq__(self, other):
                return other == "x"
            def __repr__(self):             # never run by the watcher, for the message
                ran.append(1)
                return "K"

        namespace = types.ModuleType("enforcement").__dict__
        namespace["x"] = 1
        _core.seal((namespace,), RuntimeError)
        namespace["__annotations__"] = {}          # what CPython itself does: no breach
        assert _core.seal_breach() is None
        namespace[K("__annotations__")] = 2         # rebinds "x"
        assert namespace["x"] == 2 and _core.seal_breach() is not None and not ran
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_worker_answers_after_a_breach_in_the_middle_of_a_task() -> None:
    """A breach refuses every import, our pickler's own too: the task's exception must
    still reach the caller, and the sandbox stay up to refuse the next one (on 3.14 the
    worker stopped: the pickler imported _typing to track type variables)."""
    with subsandbox.Sandbox(policy=BREACHER.allow_import("typing")) as sb:
        with pytest.raises(Exception, match="after the write"):
            sb.exec("import _seal_breacher, typing\n"
                    "_seal_breacher.add_to('subsandbox._enforce', '_new_name')\n"
                    "raise ValueError('after the write')")
        for _ in range(2):
            with pytest.raises(Exception, match="policy no longer runs"):
                sb.exec("result = 2")


def test_caching_slot_names_in_a_sealed_class_is_no_breach() -> None:
    """copyreg caches a slotted class's __slotnames__ in the class the first time one of
    its instances is pickled: a typing.ForwardRef returned as a result (it does not
    cross) broke the seal of the class the policy patches."""
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import("typing")) as sb:
        sb.exec("import typing")
        with pytest.raises((TypeError, pickle.UnpicklingError), match="ForwardRef"):
            sb.call(eval, "typing.ForwardRef('x')")
        assert sb.call(eval, "len(typing.__name__)") == 6
