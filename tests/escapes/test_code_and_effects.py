"""Escapes by making code, by the interpreter's own tools, and by effects themselves."""

from __future__ import annotations

import os
import pickle
import socket
import sys
import types
from pathlib import Path

import pytest

import subsandbox
from subsandbox import _core

from conftest import run_script

from ._escape import (REFUSALS, assert_no_connection, assert_not_read, assert_refused, attempt,
                      text_of)


# -- code objects and functions ---------------------------------------------------------------

def test_code_replace_with_crafted_names(sb: subsandbox.Sandbox) -> None:
    """Compile harmless code, then rename its attribute to __globals__ with .replace()."""
    outcome = attempt(sb, """
        c = compile('f.xglobalsx', '<x>', 'eval')
        c2 = c.replace(co_names=('f', '__globals__'))
        def f(): pass
        result = eval(c2)
    """)
    assert_refused(outcome)


def test_code_type_constructor(sb: subsandbox.Sandbox) -> None:
    """type(code)(...) builds a code object from raw bytecode (types.CodeType)."""
    outcome = attempt(sb, """
        c = compile('1', '<x>', 'eval')
        CodeType = type(c)
        result = CodeType(0, 0, 0, 0, 0, 0, b'\\x97\\x00y\\x00', (), (), (), '', '', '', 1,
                          b'', b'', (), ())
    """)
    assert_refused(outcome)


def test_function_type_constructor(sb: subsandbox.Sandbox) -> None:
    """type(f)(code, globals): a function whose globals carry other builtins."""
    outcome = attempt(sb, """
        def f(): pass
        FunctionType = type(f)
        g = FunctionType(compile('1', '<x>', 'eval'), {'__builtins__': {}})
        result = g()
    """)
    assert_refused(outcome)


def test_types_module(sb: subsandbox.Sandbox) -> None:
    """types.CodeType / types.FunctionType, imported."""
    outcome = attempt(sb, "import types\nresult = types.FunctionType")
    assert_refused(outcome)


def test_function_by_value_with_dunder_code(sb: subsandbox.Sandbox, secret: Path) -> None:
    """A function that crosses by value carries its own bytecode: it is checked too."""
    namespace: dict = {"__name__": "__main__"}
    exec("def grab(path):\n"
         "    return min.__self__.open(path).read()\n", namespace)
    grab = namespace["grab"]
    try:
        outcome: object = sb.call(grab, str(secret))
    except Exception as exc:  # noqa: BLE001
        outcome = exc
    assert_not_read(outcome, secret)


def _unit(name: str, arg: int = 0) -> bytes:
    """One instruction of this CPython's bytecode, with its inline cache entries."""
    import dis

    op = dis.opmap[name]
    caches = (dis._get_cache_size(name) if hasattr(dis, "_get_cache_size")  # 3.13+
              else dis._inline_cache_entries[op])
    return bytes([op, arg]) + b"\x00\x00" * caches


def _crafted(template: object, code: bytes, **replace: object) -> object:
    fn: types.FunctionType = template  # type: ignore[assignment]
    return types.FunctionType(fn.__code__.replace(
        co_code=code, co_linetable=b"", co_exceptiontable=b"", co_stacksize=8,
        **replace), {})


_LIFT_POLICY = """
def lift(g, canary):
    # Given subsandbox._enforce's globals: make the audit hook take every caller for
    # library code and let os.system through, then run a process.
    def no_frame(depth):
        raise ValueError
    g["_getframe"] = no_frame
    g["_SANDBOXED_CODE_EVENTS"] = g["_SANDBOXED_CODE_EVENTS"] | {"os.system"}
    return g["_real_import"]("os").system(f"touch {canary}")
"""


def _lift_policy() -> object:
    """The second stage of both escapes below, as a function that crosses by value."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(_LIFT_POLICY, namespace)
    return namespace["lift"]


def test_a_jump_past_an_extended_arg_prefix(sb: subsandbox.Sandbox, canary: Path) -> None:
    """A jump onto an instruction itself, past its EXTENDED_ARG, runs it with the low
    byte of its argument: ``dis`` (and the name check) read ``LOAD_ATTR co_names[128]``
    ('real'), the interpreter ran ``co_names[0]``, ``__globals__`` (a red-team run,
    bytecode crafted in the caller and sent by value)."""
    import dis

    def template(x):  # type: ignore[no-untyped-def]
        return x.real

    code = (_unit("RESUME") + _unit("LOAD_FAST", 0) + _unit("JUMP_FORWARD", 1)
            + _unit("EXTENDED_ARG", 1) + _unit("LOAD_ATTR", 0) + _unit("RETURN_VALUE"))
    names = ("__globals__",) + tuple(f"n{i}" for i in range(1, 128)) + ("real",)
    read = _crafted(template, code, co_names=names)
    assert [i.argval for i in dis.get_instructions(read) if i.opname == "LOAD_ATTR"] \
        == ["real"]                                   # what a reading of the code sees
    def attack(read, lift, canary):  # type: ignore[no-untyped-def]
        return lift(read(getattr), canary)   # the guard getattr: subsandbox._enforce's

    with pytest.raises(subsandbox.PolicyError, match="where no instruction starts"):
        sb.call(attack, read, _lift_policy(), str(canary))
    assert not canary.exists()


def test_a_for_loop_exit_past_what_dis_calls_its_target(sb: subsandbox.Sandbox,
                                                        canary: Path) -> None:
    """FOR_ITER's exit skips the END_FOR at its target without looking at it: put a
    ``LOAD_CONST ('real',)`` there and a MATCH_CLASS after it, and the check saw a class
    pattern on 'real' while the interpreter ran it on names built at run time."""
    skip = 2 if sys.version_info[:2] == (3, 13) else 1

    def template(subject, cls, names, empty):  # type: ignore[no-untyped-def]
        match subject:
            case object(real=r):
                return r

    head = (_unit("RESUME") + _unit("LOAD_FAST", 0) + _unit("LOAD_FAST", 1)
            + _unit("LOAD_FAST", 2) + _unit("LOAD_FAST", 3) + _unit("GET_ITER"))
    body = _unit("POP_TOP") + _unit("JUMP_BACKWARD", (len(_unit("FOR_ITER"))
                                                       + len(_unit("POP_TOP"))
                                                       + len(_unit("JUMP_BACKWARD"))) // 2)
    tail = (_unit("NOP") * (skip - 1) + _unit("LOAD_CONST", 1) + _unit("MATCH_CLASS", 0)
            + _unit("RETURN_VALUE"))
    code = head + _unit("FOR_ITER", len(body) // 2) + body + tail
    read_attrs = _crafted(template, code, co_consts=(None, ("real",)))

    def attack(read_attrs, lift, canary):  # type: ignore[no-untyped-def]
        (g,) = read_attrs(getattr, object, ("__" + "globals__",), ())
        return lift(g, canary)

    with pytest.raises(subsandbox.PolicyError, match="cannot read .*FOR_ITER"):
        sb.call(attack, read_attrs, _lift_policy(), str(canary))
    assert not canary.exists()


def test_class_by_value_with_dunder_code(sb: subsandbox.Sandbox) -> None:
    """A class crossing by value whose method walks to __subclasses__."""
    namespace: dict = {"__name__": "__main__"}
    exec("class Walker:\n"
         "    def walk(self):\n"
         "        return [c.__name__ for c in object.__subclasses__()]\n", namespace)
    Walker = namespace["Walker"]
    with pytest.raises(subsandbox.PolicyError):
        sb.call(Walker().walk)


def test_marshal_crafted_code(sb: subsandbox.Sandbox) -> None:
    """marshal.loads(bytes) makes any code object, unchecked."""
    outcome = attempt(sb, "import marshal\nresult = marshal.loads(b'c')")
    assert_refused(outcome)


# -- the interpreter's own tools ------------------------------------------------------------

def test_gc_get_objects(sb: subsandbox.Sandbox) -> None:
    """gc.get_objects() returns every tracked object, modules' namespaces included."""
    outcome = attempt(sb, "import gc\nresult = [type(o).__name__ for o in gc.get_objects()]")
    assert_refused(outcome)


def test_gc_get_referrers(sb: subsandbox.Sandbox) -> None:
    """gc.get_referrers(len) finds the builtins module's namespace."""
    outcome = attempt(sb, "gc = __import__('gc')\nresult = len(gc.get_referrers(len))")
    assert_refused(outcome)


def test_pickle_gadget_inside(sb: subsandbox.Sandbox, canary: Path) -> None:
    """pickle.loads of a hand-made pickle that calls os.system."""
    payload = f"cos\nsystem\n(S'touch {canary}'\ntR.".encode()
    outcome = attempt(sb, "import pickle\nresult = pickle.loads(payload)", payload=payload)
    assert_refused(outcome)
    assert not canary.exists()


def test_pickle_gadget_in_the_result(sb: subsandbox.Sandbox, canary: Path) -> None:
    """The result crosses back as a pickle the sandbox wrote: make it call eval here."""
    outcome = attempt(sb, f"""
        class Evil:
            def __reduce__(self):
                return (eval, ("__import__('os').system('touch {canary}')",))
        result = Evil()
    """)
    # The sandbox's eval is its own guarded one, which pickle cannot even name.
    assert isinstance(outcome, (TypeError, *REFUSALS))
    assert not canary.exists()


def test_class_from_inside_in_the_result(sb: subsandbox.Sandbox, canary: Path) -> None:
    """A class defined in the sandbox crosses back by value, with a __setstate__ to run."""
    outcome = attempt(sb, f"""
        class Evil:
            def __setstate__(self, state):
                import os
                os.system('touch {canary}')
        e = Evil()
        e.x = 1
        result = e
    """)
    assert_refused(outcome)
    assert not canary.exists()


def test_function_in_the_result(sb: subsandbox.Sandbox, canary: Path) -> None:
    """A result whose __reduce__ names a sandbox function: the caller would run it."""
    outcome = attempt(sb, f"""
        def run_outside():
            import os
            os.system('touch {canary}')
        class Evil:
            def __reduce__(self):
                return (run_outside, ())
        result = Evil()
    """)
    assert_refused(outcome)
    assert not canary.exists()


def test_exception_gadget(sb: subsandbox.Sandbox, canary: Path) -> None:
    """An exception raised in the sandbox also crosses as a pickle the sandbox wrote."""
    outcome = attempt(sb, f"""
        def run_outside():
            import os
            os.system('touch {canary}')
        class Evil(Exception):
            def __reduce__(self):
                return (run_outside, ())
        raise Evil()
    """)
    assert_refused(outcome)
    assert not canary.exists()


@pytest.mark.parametrize("name", ["breakpoint", "help", "license", "input", "open",
                                  "exit", "copyright", "credits"])
def test_dangerous_builtins(sb: subsandbox.Sandbox, name: str, secret: Path) -> None:
    """breakpoint() starts pdb, help() a pager, license() reads files, input() reads stdin."""
    outcome = attempt(sb, f"result = {name}")
    assert isinstance(outcome, NameError)


def test_settrace(sb: subsandbox.Sandbox) -> None:
    """sys.settrace hands every frame of the sandbox to a callback."""
    outcome = attempt(sb, "import sys\nsys.settrace(lambda *a: None)\nresult = 1")
    assert_refused(outcome)


def test_threads(sb: subsandbox.Sandbox, canary: Path) -> None:
    """_thread.start_new_thread and threading.Thread."""
    outcome = attempt(sb, "import _thread\nresult = _thread.start_new_thread(len, ((),))")
    assert_refused(outcome)
    outcome = attempt(sb, "import threading\nresult = threading.Thread(target=len)")
    assert_refused(outcome)


def test_signal(sb: subsandbox.Sandbox) -> None:
    """signal.raise_signal(SIGKILL) would end the whole process (no audit event)."""
    outcome = attempt(sb, "import signal\nsignal.raise_signal(signal.SIGKILL)")
    assert_refused(outcome)
    assert sb.call(len, "alive") == 5  # still here


def test_faulthandler(sb: subsandbox.Sandbox) -> None:
    """faulthandler._sigsegv() crashes the process (no audit event)."""
    outcome = attempt(sb, "import faulthandler\nfaulthandler._sigsegv()")
    assert_refused(outcome)


def test_mmap(sb: subsandbox.Sandbox, secret: Path) -> None:
    """mmap maps a file (or /dev/mem) into memory."""
    outcome = attempt(sb, "import mmap\nresult = mmap.mmap(-1, 16)")
    assert_refused(outcome)


def test_ctypes(sb: subsandbox.Sandbox, canary: Path) -> None:
    """ctypes calls libc's system() (native code is out of every audit hook's sight)."""
    outcome = attempt(sb, f"import ctypes\nctypes.CDLL(None).system(b'touch {canary}')")
    assert_refused(outcome)
    assert not canary.exists()


def test_socket(sb: subsandbox.Sandbox, listener: socket.socket) -> None:
    """Connect to a listening socket on localhost."""
    port = listener.getsockname()[1]
    outcome = attempt(sb, f"import socket\nresult = socket.create_connection(('127.0.0.1', {port}))")
    assert_refused(outcome)
    assert_no_connection(listener)


def test_subprocess(sb: subsandbox.Sandbox, canary: Path) -> None:
    """subprocess.run(['touch', canary])."""
    outcome = attempt(sb, f"import subprocess\nsubprocess.run(['touch', {str(canary)!r}])")
    assert_refused(outcome)
    assert not canary.exists()


def test_io_open_code(sb: subsandbox.Sandbox, secret: Path) -> None:
    """io.open_code is how the import system reads files."""
    outcome = attempt(sb, "import io\nresult = io.open_code(secret).read()", secret=str(secret))
    assert_not_read(outcome, secret)


# -- subsandbox's own objects ---------------------------------------------------------------

def test_import_subsandbox_core(sb: subsandbox.Sandbox) -> None:
    """subsandbox._core is loaded in every sandbox: _parcel_take steals a new sandbox's channels."""
    outcome = attempt(sb, "from subsandbox import _core\nresult = _core._parcel_take(1)")
    assert_refused(outcome)
    outcome = attempt(sb, "import subsandbox\nresult = subsandbox.Channel")
    assert_refused(outcome)


@pytest.mark.parametrize("name", ["_parcel_take", "_interrupt", "_testing_import",
                                  "_interpreter_destroyed", "share", "Channel"])
def test_core_functions_by_reference(sb: subsandbox.Sandbox, name: str) -> None:
    """Sandbox.call(_core.<name>, ...): the request names them; the sandbox must refuse."""
    with pytest.raises((ImportError, subsandbox.PolicyError)):
        sb.call(getattr(_core, name), 1, 1) if name == "_interrupt" else sb.call(
            getattr(_core, name), 1)


def test_interrupt_another_sandbox(sb: subsandbox.Sandbox) -> None:
    """_core._interrupt(other_id, task) from inside would stop another sandbox's task."""
    with subsandbox.Sandbox() as other:
        outcome = attempt(sb, f"""
            import subsandbox._core as c
            result = c._interrupt({other.id}, 1)
        """)
        assert_refused(outcome)
        outcome = attempt(sb, f"""
            c = __import__('subsandbox._core', fromlist=['x'])
            result = getattr(c, '_interrupt')({other.id}, 1)
        """)
        assert_refused(outcome)
        assert other.call(len, "ok") == 2


def test_worker_channels_from_main_globals(sb: subsandbox.Sandbox) -> None:
    """The boot code ran in __main__: its names (sys, _inside) must not be there."""
    outcome = attempt(sb, "result = sorted(k for k in globals() if k in "
                          "('sys', '_inside', '_core', '__loader__', '__spec__', 'serve'))")
    assert outcome == []


def test_policy_cannot_be_widened_from_inside(sb: subsandbox.Sandbox) -> None:
    """Rewrite the sandbox's own builtins mapping: the gate lives elsewhere."""
    outcome = attempt(sb, """
        __builtins__['open'] = __builtins__['__import__']
        import os
        result = os.getpid()
    """)
    assert_refused(outcome)
    assert os.getpid() not in (outcome,)


def test_audit_hook_cannot_be_added_or_cleared(sb: subsandbox.Sandbox) -> None:
    """sys.addaudithook to see every event's objects; nothing clears hooks from Python."""
    outcome = attempt(sb, "import sys\nsys.addaudithook(lambda e, a: None)\nresult = 1")
    assert_refused(outcome)


def test_main_interpreter_untouched(sb: subsandbox.Sandbox, tmp_path: Path) -> None:
    """The policy is per interpreter: the caller still opens files and imports freely."""
    attempt(sb, "result = 1")
    path = tmp_path / "main.txt"
    path.write_text("main")
    assert path.read_text() == "main"
    assert "os" in sys.modules and pickle.loads(pickle.dumps(os.getpid())) == os.getpid()


def test_a_library_cannot_import_the_process_starter_without_processes() -> None:
    """_posixsubprocess.fork_exec starts a process and raises no audit event on 3.12 and
    3.13 (3.14's, '_posixsubprocess.fork_exec', was in none of the hook's tables): a
    red-team run (round 16) started one once it had the real import system. Its import is
    refused unless the policy grants processes."""
    policy = subsandbox.Policy.compute().allow_import("_seal_breacher")
    with subsandbox.Sandbox(policy=policy) as sb:
        with pytest.raises(subsandbox.PolicyError, match="importing _posixsubprocess"):
            sb.call(eval, "__import__('_seal_breacher').import_module('_posixsubprocess')")
    with subsandbox.Sandbox(policy=policy.allow_processes()) as sb:
        assert sb.call(eval, "__import__('_seal_breacher').import_module("
                             "'_posixsubprocess')") == "_posixsubprocess"


def test_a_traceback_reads_no_file_but_a_modules(tmp_path: Path) -> None:
    """Code compiled under the name of a .py file beside the caller's modules, one frame
    per line: formatting its traceback (library code, which may read module files under
    sys.path) sent that file's lines to the caller (a red-team run, round 16). Only files
    of modules in sys.modules are library code's to read; a granted module's lines still
    show."""
    (tmp_path / "settings.py").write_text('PASSWORD = "hunter2-secret"\nOTHER = 1\n')
    (tmp_path / "mylib.py").write_text("def fail():\n    return 1 / 0  # mylib's line\n")
    out = run_script(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import subsandbox
        policy = subsandbox.Policy.compute().allow_import("mylib")
        with subsandbox.Sandbox(policy=policy) as sb:
            try:
                sb.exec("lines = ['f1 = lambda: f2()', 'f2 = lambda: 1/0', 'f1()']\\n"
                        "exec(compile('\\\\n'.join(lines), "
                        "{str(tmp_path / 'settings.py')!r}, 'exec'), {{}})")
            except ZeroDivisionError as exc:
                print("hunter2" in str(exc.__cause__), "f1 = lambda" in str(exc.__cause__))
            try:
                sb.exec("import mylib\\nmylib.fail()")
            except ZeroDivisionError as exc:
                print("mylib's line" in str(exc.__cause__))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True"]


def test_a_policy_sandbox_acts_on_nothing_while_it_is_closed(tmp_path: Path) -> None:
    """CPython drops an interpreter's audit hooks before its last garbage collection: a
    cycle whose __del__ makes a new cycle each time ran there with no hook (a red-team run,
    round 17, made unchecked code and opened files). The C core refuses every event of a
    policy interpreter while it is being finalized. Here the interpreter is registered as
    a policy's without a policy's Python hook, so only that refusal stands: the __del__
    that runs at close tries an audited call (compile) and logs what happened through a
    file descriptor it opened before (os.write raises no event)."""
    outcomes = []
    for registered in (True, False):
        log = tmp_path / f"log-{registered}"
        with subsandbox.Sandbox() as sb:
            sb.exec(f"""
import os
if {registered}:
    from subsandbox import _core
    _core._register_policy_interpreter()
fd = os.open({str(log)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
def make(write=os.write, fd=fd, compile=compile):
    class Renewing:
        def __del__(self):
            again = Renewing()
            again.me = again          # a new cycle for the next collection
            try:
                compile("1", "<teardown>", "eval")
                write(fd, b"compiled\\n")
            except PermissionError:
                write(fd, b"refused\\n")
    first = Renewing()
    first.me = first
make()
""")
        outcomes.append(set(log.read_text().split()))
    assert outcomes == [{"refused"}, {"compiled"}]


def test_main_naming_a_file_does_not_make_it_a_modules(tmp_path: Path) -> None:
    """The sandbox's __main__ is in sys.modules and its namespace is sandboxed code's: a
    top-level `__file__ = '.../settings.py'` made that file one library code could read,
    and its lines came back in a traceback (a red-team run, round 17)."""
    (tmp_path / "settings.py").write_text('PASSWORD = "hunter2-secret"\nOTHER = 1\n')
    out = run_script(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import subsandbox
        with subsandbox.Sandbox(policy=subsandbox.Policy.compute()) as sb:
            try:
                sb.exec("__file__ = {str(tmp_path / 'settings.py')!r}\\n"
                        "lines = ['f1 = lambda: f2()', 'f2 = lambda: 1/0', 'f1()']\\n"
                        "exec(compile('\\\\n'.join(lines), __file__, 'exec'), {{}})")
            except ZeroDivisionError as exc:
                print("hunter2" in str(exc.__cause__), "f1 = lambda" in str(exc.__cause__))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_stderr_calls_nothing_of_a_str_subclass() -> None:
    """The sandbox's stderr called split() of the text it was given: an unraisable
    exception whose __str__ returned a str subclass ran sandboxed code in the
    enforcement's frame, and kept that frame and those below it (round 17)."""
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute()) as sb:
        sb.exec("""
called = []
class S(str):
    def split(self, *args):
        called.append(1)
        return str.split(self, *args)
class Boom(Exception):
    def __str__(self):
        return S("boom")
class Bad:
    def __del__(self):
        raise Boom()
Bad()
""")
        assert sb.call(eval, "called") == []


# Round 18 (2026-11-29): paths that describe one file to the checks and another to C.

_LYING_PATHS = {
    "str": "class P(str):\n"
           "    def __getitem__(self, i): return str.__getitem__(ALLOWED, i)\n"
           "    def startswith(self, *a): return str.startswith(ALLOWED, *a)\n"
           "    def partition(self, *a): return str.partition(ALLOWED, *a)\n"
           "    def split(self, *a): return str.split(ALLOWED, *a)\n"
           "    def rstrip(self, *a): return str.rstrip(ALLOWED, *a)\n"
           "    def endswith(self, *a): return str.endswith(ALLOWED, *a)\n"
           "    def __fspath__(self): return ALLOWED\n"
           "target = P(SECRET)\n",
    "bytes": "class P(bytes):\n"
             "    def decode(self, *a, **k): return ALLOWED\n"
             "target = P(SECRET.encode())\n",
}


@pytest.mark.parametrize("kind", sorted(_LYING_PATHS))
def test_a_path_subclass_describes_the_file_it_opens(kind: str, tmp_path: Path) -> None:
    """open(P(secret)) with P a str or bytes subclass whose methods describe a file in
    the granted directory: C opened the subclass's own data, the checks read its methods
    (a red-team run, round 18, read and wrote anywhere with one directory granted)."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "a.txt").write_text("fine")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    policy = subsandbox.Policy.compute().allow_read(allowed).allow_write(allowed)
    with subsandbox.Sandbox(policy=policy) as sb:
        outcome = attempt(sb, _LYING_PATHS[kind] + "result = open(target).read()",
                          SECRET=str(secret), ALLOWED=str(allowed / "a.txt"))
        assert_not_read(outcome, secret)
        outcome = attempt(sb, _LYING_PATHS[kind] + "open(target, 'w').write('x')",
                          SECRET=str(tmp_path / "canary"), ALLOWED=str(allowed / "b.txt"))
        assert_refused(outcome)
        assert not (tmp_path / "canary").exists()
        # The real file in the granted directory still opens.
        assert sb.call(eval, f"open({str(allowed / 'a.txt')!r}).read()") == "fine"


def test_code_named_by_a_str_subclass_reads_no_file(tmp_path: Path) -> None:
    """compile() kept a str subclass as the code's filename; when its traceback was
    formatted, linecache opened it, and the subclass answered the module-file check."""
    secret = tmp_path / "secret.py"
    secret.write_text('PASSWORD = "hunter2-secret"\n')
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute()) as sb:
        outcome = attempt(sb, """
class P(str):
    def __eq__(self, other): return True
    __hash__ = str.__hash__
code = compile("1/0", P(SECRET), "exec")
result = type(code.co_filename).__name__
""", SECRET=str(secret))
        assert outcome == "str"


def test_a_write_grant_plants_no_module(tmp_path: Path) -> None:
    """Writing statistics.py into a directory on sys.path shadowed the standard library
    for the sandbox and for the caller, whose next import ran it with no policy."""
    out = run_script(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import subsandbox
        policy = subsandbox.Policy.compute().allow_write({str(tmp_path)!r})
        with subsandbox.Sandbox(policy=policy) as sb:
            for name in ("statistics.py", "data.txt"):
                try:
                    sb.exec(f"open({{str({str(tmp_path)!r} + '/' + name)!r}}, 'w').write('x')")
                    print(name, "written")
                except subsandbox.PolicyError as exc:
                    print(name, "import system would load" in str(exc))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["statistics.py", "True", "data.txt", "written"]
    assert not (tmp_path / "statistics.py").exists()


# Round 19 (2026-11-29): what os, shutil and glob granted could do with a grant.

def test_os_is_used_with_paths_not_directory_descriptors(tmp_path: Path) -> None:
    """os.open's audit event carries no dir_fd: a path relative to a directory's
    descriptor was checked as if relative to the working directory (a red-team run,
    round 19, read and wrote outside its grants)."""
    (tmp_path / "a.txt").write_text("fine")
    policy = subsandbox.Policy.compute().allow_import("os").allow_read(tmp_path)
    with subsandbox.Sandbox(policy=policy) as sb:
        outcome = attempt(sb, "import os\n"
                              "fd = os.open(DIR, os.O_RDONLY)\n"
                              "result = os.open('a.txt', os.O_RDONLY, dir_fd=fd)",
                          DIR=str(tmp_path))
        assert_refused(outcome)
        assert "relative to a directory's file descriptor" in text_of(outcome)
        assert sb.call(eval, f"__import__('os').open({str(tmp_path / 'a.txt')!r}, 0) > 0")


def test_no_link_is_made_and_nothing_moves_onto_an_import_root(tmp_path: Path) -> None:
    """A symlink leads wherever its target leads later (round 19 swapped a component of
    a checked target, and led the caller's own writes out of the grant); renaming a
    directory of the sandbox's own onto a sys.path root planted a module the caller
    then imported."""
    grant = tmp_path / "w"
    (grant / "lib").mkdir(parents=True)
    (grant / "stage").mkdir()
    out = run_script(f"""
        import sys
        sys.path.insert(0, {str(grant / 'lib')!r})
        import subsandbox
        policy = subsandbox.Policy.compute().allow_import("os").allow_write({str(grant)!r})
        with subsandbox.Sandbox(policy=policy) as sb:
            for source in (
                    "__import__('os').symlink('/etc', {str(grant / 'link')!r})",
                    "open({str(grant / 'stage' / 'statistics.py')!r}, 'w').write('x')\\n"
                    "import os\\nos.rmdir({str(grant / 'lib')!r})",
                    "import os\\nos.rename({str(grant / 'stage')!r}, "
                    "{str(grant / 'lib' / 'pkg')!r})"):
                try:
                    sb.exec(source)
                    print("done")
                except subsandbox.PolicyError as exc:
                    print("refused")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused", "refused", "refused"]
    assert (grant / "lib").is_dir() and not (grant / "link").exists()


def test_library_code_lists_no_directory_of_sys_path_for_a_sandbox(tmp_path: Path) -> None:
    """Only the import system may list a sys.path directory without a read grant:
    glob.glob() called by sandboxed code listed the app's own directory."""
    (tmp_path / "private_name.txt").write_text("")
    out = run_script(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import subsandbox
        with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import("glob")) as sb:
            try:
                print(sb.call(eval, "__import__('glob').glob({str(tmp_path)!r} + '/*')"))
            except subsandbox.PolicyError:
                print("refused")
            sb.exec("import json")     # the import system itself still lists sys.path
            print("imported")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["refused", "imported"]
