"""subsandbox.Policy: the value, and what a sandbox under each kind of policy can still do.

The escape attempts are in tests/escapes/; these tests check that ordinary code works,
that granted effects work and stay inside their directories, and that each layer of the
enforcement stands on its own (an effect is refused even where a module is granted).
"""

from __future__ import annotations

import json
import os
import pickle
import socket
from pathlib import Path

import pytest

import subsandbox
from subsandbox import Policy, PolicyError
from subsandbox.policy import resolve

from conftest import run_script


# -- the value --------------------------------------------------------------------------------

def test_presets_and_widening_make_new_policies() -> None:
    compute = Policy.compute()
    wider = compute.allow_read("data").allow_import("mypkg")
    assert wider is not compute and "mypkg" not in compute.modules
    assert wider.allows_import("mypkg.sub") and wider.allows_import("json.decoder")
    assert not wider.allows_import("mypkgx") and not wider.allows_import("os")
    assert wider.read_dirs == (os.path.realpath("data"),)
    assert "open" in wider.builtins and "open" not in compute.builtins
    assert wider.name == "compute+read(data)+import(mypkg)"
    assert Policy.nothing().modules == () and "print" not in Policy.nothing().builtins


def test_command_line_programs_come_only_by_name() -> None:
    """A package's grant leaves out the programs inside it (they read argv and stdin)."""
    compute = Policy.compute()
    assert not compute.allows_import("json.tool") and not compute.allows_import("json.__main__")
    mypkg = Policy.nothing().allow_import("mypkg")
    assert not mypkg.allows_import("mypkg.__main__")
    assert not mypkg.allows_import("mypkg.sub.__main__")
    assert mypkg.allows_import("mypkg.__main__helpers")  # only __main__ itself is a program
    assert compute.allow_import("json.tool").allows_import("json.tool")
    assert compute.allow_import("json.__main__").allows_import("json.__main__")


def test_policy_is_immutable_and_a_value() -> None:
    p = Policy.compute()
    with pytest.raises(AttributeError):
        p._modules = ("os",)  # type: ignore[misc]
    assert p == Policy.compute() and hash(p) == hash(Policy.compute())
    assert pickle.loads(pickle.dumps(p.allow_write("/tmp"))) == p.allow_write("/tmp")
    assert Policy.from_spec(p.spec()) == p
    assert Policy.unrestricted().spec() is None
    with pytest.raises(TypeError, match="preset"):
        Policy()


def test_spec_is_plain_data() -> None:
    spec = Policy.compute().allow_read("/data").allow_network().spec()

    def plain(v: object) -> bool:
        return v is None or isinstance(v, (str, bool)) or (
            isinstance(v, tuple) and all(plain(x) for x in v))

    assert plain(spec)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="'os.'"):
        Policy.nothing().allow_import("os.")
    with pytest.raises(ValueError, match="not a builtin"):
        Policy.nothing().allow_builtins("no_such_builtin")
    with pytest.raises(ValueError, match="allow_import"):
        Policy.nothing().allow_builtins("__import__")
    with pytest.raises(TypeError, match="subsandbox.Policy"):
        subsandbox.Sandbox(policy="compute")  # type: ignore[arg-type]
    assert resolve(None) == Policy.unrestricted()
    assert issubclass(PolicyError, PermissionError)


# -- compute and nothing ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def compute() -> subsandbox.Sandbox:
    with subsandbox.Sandbox(policy=Policy.compute()) as sb:
        yield sb


def test_compute_imports_and_computes(compute: subsandbox.Sandbox) -> None:
    compute.exec("""
import math, cmath, itertools, functools, operator, collections, heapq, bisect, re, json
import decimal, fractions, statistics, string, datetime, random
from collections import Counter, OrderedDict
from json import decoder
words = re.findall(r"\\w+", "a b a c b a")
result = (
    math.sqrt(2) ** 2, json.loads(json.dumps({"k": [1, 2]})), Counter(words).most_common(1),
    str(decimal.Decimal("1.1") + decimal.Decimal("2.2")), fractions.Fraction(1, 3) * 3,
    statistics.mean([1, 2, 3]), sorted(heapq.nsmallest(2, [5, 1, 3])),
    list(itertools.accumulate([1, 2, 3], operator.add)), functools.reduce(max, [3, 9, 2]),
    datetime.date(2024, 1, 31).isoformat(), string.Template("$x!").substitute(x="hi"),
    abs(cmath.exp(1j * math.pi) + 1) < 1e-12, bisect.bisect([1, 3, 5], 4),
    decoder.JSONDecoder().decode("[1]"), random.Random(1).randint(1, 1),
)
""")
    assert compute.call(eval, "result") == (
        pytest.approx(2.0), {"k": [1, 2]}, [("a", 3)], "3.3", 1, 2, [1, 3], [1, 3, 6], 9,
        "2024-01-31", "hi!", True, 2, [1], 1)


def test_data_classes_of_granted_modules_come_back(compute: subsandbox.Sandbox) -> None:
    """The result loader takes each class by its own module and name, as pickle writes
    them: C types, pure-Python classes, enums and nested containers all load."""
    import collections
    import datetime
    import decimal
    import fractions
    import re
    import statistics

    compute.exec("""
import collections, datetime, decimal, fractions, re, statistics
result = (decimal.Decimal("1.10"), fractions.Fraction(2, 3),
          collections.OrderedDict(a=1), collections.Counter("aab"),
          collections.deque([1, 2], maxlen=3), collections.defaultdict(list, k=[1]),
          datetime.datetime(2026, 11, 28, tzinfo=datetime.timezone.utc),
          statistics.NormalDist(1.0, 2.0), re.IGNORECASE | re.MULTILINE,
          re.compile("a+", re.I))
""")
    assert compute.call(eval, "result") == (
        decimal.Decimal("1.10"), fractions.Fraction(2, 3), collections.OrderedDict(a=1),
        collections.Counter("aab"), collections.deque([1, 2], maxlen=3),
        collections.defaultdict(list, k=[1]),
        datetime.datetime(2026, 11, 28, tzinfo=datetime.timezone.utc),
        statistics.NormalDist(1.0, 2.0), re.IGNORECASE | re.MULTILINE, re.compile("a+", re.I))


def test_ordinary_python_works_under_compute(compute: subsandbox.Sandbox) -> None:
    """Classes, super(), generators, literal str.format, f-strings, vars(), exceptions."""
    compute.exec("""
class Base:
    def __init__(self, x):
        self._x = x
class Point(Base):
    def __init__(self, x, y):
        super().__init__(x)
        self.y = y
    def __repr__(self):
        return "Point({}, {})".format(self._x, self.y)
def squares(n):
    yield from (i * i for i in range(n))
p = Point(1, 2)
try:
    {}["missing"]
except KeyError as e:
    caught = e.args
result = (repr(p), f"{p.y:>3}", list(squares(4)), vars(p), caught, type(p).__name__,
          getattr(p, "y"), hasattr(p, "__globals__"), eval("1 + 2"))
""")
    assert compute.call(eval, "result") == (
        "Point(1, 2)", "  2", [0, 1, 4, 9], {"_x": 1, "y": 2}, ("missing",), "Point", 2,
        False, 3)


def test_match_statements_work_under_compute_with_keyword_class_patterns(
        compute: subsandbox.Sandbox) -> None:
    """Mapping, sequence, literal and keyword class patterns pass the check; a positional
    class pattern is refused with the rewrite that works."""
    compute.exec("""
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
def describe(value):
    match value:
        case {"kind": "circle", "r": r}:
            return ("circle", r)
        case [first, *rest]:
            return ("seq", first, len(rest))
        case Point(x=0, y=y):
            return ("on the y axis", y)
        case int() | float() as n if n < 0:
            return ("negative", n)
        case str() as s:
            return ("text", s)
        case _:
            return ("other",)
result = [describe(v) for v in ({"kind": "circle", "r": 2}, (1, 2, 3), Point(0, 5), -3.5,
                                "hi", None)]
""")
    assert compute.call(eval, "result") == [
        ("circle", 2), ("seq", 1, 2), ("on the y axis", 5), ("negative", -3.5),
        ("text", "hi"), ("other",)]
    with pytest.raises(PolicyError, match=r"'from \.\.\. import \*'.*from math import sqrt"):
        compute.exec("from math import *\n")
    compute.exec("from math import sqrt, pi\nroot = sqrt(pi * pi)\n")
    assert compute.call(eval, "root") == pytest.approx(3.141592653589793)
    with pytest.raises(PolicyError, match=r"class pattern with positional sub-patterns .*"
                       r"case Point\(x=x, y=y\)"):
        compute.exec("match 3:\n    case int(n):\n        pass\n")


def test_library_code_that_makes_code_still_works(compute: subsandbox.Sandbox) -> None:
    """namedtuple and typing evaluate generated code: it passes the check; wraps works."""
    compute.exec("""
import collections, functools
Pair = collections.namedtuple("Pair", "a b", defaults=[0])
@functools.singledispatch
def kind(x):
    return "object"
@kind.register
def _(x: int):
    return "int"
def deco(fn):
    @functools.wraps(fn)
    def inner(*args):
        return fn(*args)
    return inner
@deco
def named():
    "doc"
result = (tuple(Pair(1)), kind(3), kind("s"), named.__name__, named.__doc__)
""")
    assert compute.call(eval, "result") == ((1, 0), "int", "object", "named", "doc")


def test_library_code_that_rebases_a_class_still_works() -> None:
    """typing.NamedTuple sets __bases__ of the class it makes, with the sandboxed class
    body on the stack; that stays allowed where only __code__ and __class__ are
    refused stack-wide."""
    with subsandbox.Sandbox(policy=Policy.compute().allow_import("typing")) as sb:
        sb.exec("""
import typing
class Point(typing.NamedTuple):
    x: int
    y: int = 2
result = (tuple(Point(1)), isinstance(Point(1), tuple), Point._fields)
""")
        assert sb.call(eval, "result") == ((1, 2), True, ("x", "y"))


def test_module_views_show_names_the_module_makes_on_first_use() -> None:
    """A name in a module's __all__ that its PEP 562 __getattr__ makes on first use
    (typing's ForwardRef, Pattern and Match on 3.14) is an attribute of the view, by
    attribute and by `from ... import`; a name the module does not list stays out."""
    with subsandbox.Sandbox(policy=Policy.compute().allow_import("typing")) as sb:
        sb.exec("""
import typing
from typing import ForwardRef, Match
names = (ForwardRef.__name__, typing.Pattern.__name__, Match.__name__,
         "ForwardRef" in dir(typing))
try:
    typing._collect_parameters
    private = "reached"
except AttributeError:
    private = "refused"
""")
        assert sb.call(eval, "names") == ("ForwardRef", "Pattern", "Match", True)
        assert sb.call(eval, "private") == "refused"


def test_call_by_reference_and_exceptions(compute: subsandbox.Sandbox) -> None:
    assert compute.call(json.dumps, {"a": 1}) == '{"a": 1}'
    assert compute.call(sorted, [3, 1, 2]) == [1, 2, 3]
    with pytest.raises(ZeroDivisionError) as info:
        compute.exec("1 / 0")
    assert "<sandbox>" in str(info.value.__cause__)


def test_main_classes_come_back_as_themselves(compute: subsandbox.Sandbox) -> None:
    namespace: dict = {"__name__": "__main__"}
    exec("class Box:\n"
         "    def __init__(self, v):\n"
         "        self.v = v\n"
         "def grow(box):\n"
         "    return Box(box.v * 2)\n", namespace)
    Box, grow = namespace["Box"], namespace["grow"]
    out = compute.call(grow, Box(21))
    assert type(out) is Box and out.v == 42


def test_functions_do_not_come_out(compute: subsandbox.Sandbox) -> None:
    """A returned function would run the sandbox's code in the caller."""
    with pytest.raises(pickle.UnpicklingError, match="function cannot come out"):
        compute.call(eval, "lambda: 1")


def test_function_hidden_in_a_returned_instance(compute: subsandbox.Sandbox) -> None:
    namespace: dict = {"__name__": "__main__"}
    exec("class Box:\n"
         "    pass\n"
         "def smuggle(box):\n"
         "    box.payload = lambda: 1\n"
         "    return box\n", namespace)
    with pytest.raises(pickle.UnpicklingError, match="function cannot come out"):
        compute.call(namespace["smuggle"], namespace["Box"]())


def test_nothing_computes_and_imports_nothing() -> None:
    with subsandbox.Sandbox(policy=Policy.nothing()) as sb:
        sb.exec("result = sum(x * x for x in range(10)), sorted({3, 1, 2}), 'ab'.upper()")
        assert sb.call(eval, "result") == (285, [1, 2, 3], "AB")
        with pytest.raises(ImportError, match=r"policy 'nothing' .* importing 'math'"):
            sb.exec("import math")
        with pytest.raises(NameError):
            sb.exec("print('x')")


def test_library_code_cannot_print_where_print_is_not_granted(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Without print, granted modules that print (re's DEBUG dump, ABCMeta's registry dump)
    raise PolicyError instead of writing to the process's stdout; granting print lets them."""
    debug_regex = "import re\nre.purge()\nre.compile('(?:ab)+x', re.DEBUG)"
    registry = "import numbers\nnumbers.Number._dump_registry()"
    with subsandbox.Sandbox(policy=Policy.nothing().allow_import("re", "numbers")) as sb:
        with pytest.raises(PolicyError, match=r"policy 'nothing\+import\(re,numbers\)' does not "
                           r"allow writing to stdout .*allow_builtins\('print'\)"):
            sb.exec(debug_regex)
        with pytest.raises(PolicyError, match="writing to stdout"):
            sb.exec(registry)
        sb.exec("import re\nfound = re.fullmatch('(?:ab)+x', 'ababx') is not None")
        assert sb.call(eval, "found") is True  # the sandbox goes on working
    out, _ = capfd.readouterr()
    assert out == ""
    with subsandbox.Sandbox(
            policy=Policy.nothing().allow_import("re", "numbers").allow_builtins("print")) as sb:
        sb.exec(debug_regex)
        sb.exec(registry)
    out, _ = capfd.readouterr()
    assert "LITERAL 97" in out and "Class: numbers.Number" in out


def test_what_a_sandbox_writes_to_stderr_is_labelled_and_cannot_drive_the_terminal(
        capfd: pytest.CaptureFixture[str]) -> None:
    """An unraisable exception's report (text the sandboxed code chose) reaches the
    process's stderr line by line behind the sandbox's label, with terminal escapes, bell,
    carriage return and bidi overrides written as escapes; a line of its own cannot pass
    for the caller's."""
    source = (
        "class Noisy:\n"
        "    def __del__(self):\n"
        "        raise ValueError('\\x1b]0;title\\x07 \\x1b[2J\\rfake\\n"
        "[main] all good \\u202eevil\\x9b')\n"
        "Noisy()\n")
    with subsandbox.Sandbox(policy=Policy.compute()) as sb:
        sb.exec(source)
        label = f"[sandbox {sb.id}] "
        assert sb.call(eval, "1 + 1") == 2
    _, err = capfd.readouterr()
    lines = err.splitlines()
    assert lines and all(line.startswith(label) for line in lines), lines
    assert f"{label}ValueError: \\x1b]0;title\\x07 \\x1b[2J\\x0dfake" in lines
    assert f"{label}[main] all good \\u202eevil\\x9b" in lines
    assert not any(ch in err for ch in "\x1b\x07\r\u202e\x9b"), repr(err)


def test_labelled_stderr_joins_pieces_into_lines_and_flushes_a_partial_one() -> None:
    """The unraisable hook writes a report in pieces: one label per line, wherever the
    pieces break; a flushed partial line is written, and its rest follows unlabelled."""
    import io

    from subsandbox._enforce import _LabelledStderr

    out = io.StringIO()
    err = _LabelledStderr(out, "[sb] ")
    err.write("Exception ")
    err.write("ignored\nTrace")
    assert out.getvalue() == "[sb] Exception ignored\n"
    err.flush()
    err.write("back:\tx\n\n")
    err.write("end")
    err.flush()
    assert out.getvalue() == "[sb] Exception ignored\n[sb] Traceback:\tx\n[sb] \n[sb] end"
    with pytest.raises(TypeError, match="must be str, not bytes"):
        err.write(b"raw")  # type: ignore[arg-type]
    assert not err.isatty()  # so that 3.13+ tracebacks are not coloured for a terminal


def test_a_builtin_the_policy_does_not_grant_is_explained_on_the_name_error() -> None:
    with subsandbox.Sandbox(policy=Policy.compute()) as sb:
        with pytest.raises(NameError, match="'open' is not defined") as info:
            sb.exec("open('/etc/hostname')")
        assert info.value.__notes__ == [
            "'open' is a builtin that the sandbox's policy 'compute' does not grant: widen "
            "it with .allow_read(dir) or .allow_write(dir), which grant open"]
        with pytest.raises(NameError) as info:
            sb.exec("no_such_name")
        assert not hasattr(info.value, "__notes__")  # not a builtin: nothing to explain
    with subsandbox.SandboxPoolExecutor(1, policy=Policy.nothing()) as pool:
        with pytest.raises(NameError) as info:
            pool.submit(eval, "input").result()
        assert info.value.__notes__ == [
            "'input' is a builtin that the sandbox's policy 'nothing' does not grant: "
            "widen it with .allow_builtins('input')"]


def test_a_granted_module_of_ones_own_carries_its_dataclasses_and_enums_both_ways(
        tmp_path: Path) -> None:
    """What the guide tells users whose script's dataclasses cannot cross into a policy
    sandbox: put them in a module and grant it. They cross by name, in and out."""
    (tmp_path / "mymodels.py").write_text(
        "import dataclasses, enum\n"
        "@dataclasses.dataclass(frozen=True)\n"
        "class Point:\n"
        "    x: int\n"
        "    y: int\n"
        "class Color(enum.Enum):\n"
        "    RED = 1\n"
        "def moved(p, dx):\n"
        "    return dataclasses.replace(p, x=p.x + dx), Color.RED\n")
    result = run_script(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import subsandbox, mymodels

        def script_point():
            return mymodels.Point(0, 0)

        policy = subsandbox.Policy.compute().allow_import("mymodels")
        with subsandbox.Sandbox(policy=policy) as sb:
            point, color = sb.call(mymodels.moved, mymodels.Point(1, 2), 3)
            assert point == mymodels.Point(4, 2) and color is mymodels.Color.RED
            assert sb.call(script_point) == mymodels.Point(0, 0)
        with subsandbox.Sandbox(policy=subsandbox.Policy.compute()) as sb:
            try:
                sb.call(mymodels.moved, mymodels.Point(1, 2), 3)
            except ImportError as exc:
                assert "allow_import('mymodels')" in str(exc), exc
            else:
                raise AssertionError("an ungranted module's class crossed")
            # The script's own dataclass: refused for a module the script never named
            # in the call, which the note explains.
            import dataclasses

            @dataclasses.dataclass
            class Local:
                x: int

            try:
                sb.call(repr, Local(1))
            except ImportError as exc:
                assert "'dataclasses'" in str(exc), exc
                assert "before any of them ran" in exc.__notes__[0], exc.__notes__
                assert "a dataclass needs dataclasses" in exc.__notes__[0], exc.__notes__
            else:
                raise AssertionError("the script's dataclass crossed under compute()")
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "ok", result.stdout


def test_interrupt_works_under_a_policy() -> None:
    import threading
    import time

    def interrupt_until_it_lands(sb: subsandbox.Sandbox) -> None:
        # interrupt() returns False while the loop has not started yet (a loaded machine).
        while not sb.interrupt():
            time.sleep(0.05)

    with subsandbox.Sandbox(policy=Policy.nothing()) as sb:
        thread = threading.Thread(target=interrupt_until_it_lands, args=(sb,))
        thread.start()
        with pytest.raises(subsandbox.TaskInterrupted):
            sb.exec("while True:\n    pass")
        thread.join()
        assert sb.call(len, "still usable") == 12


# -- the executor -----------------------------------------------------------------------------

def _main_functions(source: str) -> dict:
    namespace: dict = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace


def test_policy_reaches_every_worker() -> None:
    ns = _main_functions(
        "import statistics\n"
        "def escape(_):\n"
        "    import os\n"
        "    return os.getpid()\n"
        "def mean(values):\n"
        "    return statistics.fmean(values)\n"
        "def loop_module(_):\n"
        "    import subsandbox\n"
        "    return subsandbox.__name__\n")
    with subsandbox.SandboxPoolExecutor(max_workers=3, policy=Policy.compute()) as pool:
        # Enough tasks at once that every worker sandbox takes some.
        refusals = [pool.submit(ns["escape"], i) for i in range(30)]
        for future in refusals:
            with pytest.raises(ImportError, match="policy"):
                future.result(timeout=60)
        assert pool.submit(ns["mean"], [1, 2, 3, 4]).result(timeout=60) == 2.5
        assert list(pool.map(ns["mean"], [[1], [2, 4]], chunksize=2)) == [1.0, 3.0]
        # The loop's own modules are not granted to the tasks it runs.
        with pytest.raises(ImportError, match="policy"):
            pool.submit(ns["loop_module"], 0).result(timeout=60)
        assert len(pool._pool.threads) == 3


def test_executor_results_are_loaded_as_untrusted() -> None:
    ns = _main_functions("def leak(_):\n    return lambda: 1\n")
    with subsandbox.SandboxPoolExecutor(max_workers=1, policy=Policy.compute()) as pool:
        with pytest.raises(pickle.UnpicklingError, match="function cannot come out"):
            pool.submit(ns["leak"], 0).result(timeout=60)
        assert pool.submit(abs, -3).result(timeout=60) == 3


def test_executor_checks_its_policy_argument() -> None:
    with pytest.raises(TypeError, match="subsandbox.Policy"):
        subsandbox.SandboxPoolExecutor(policy="compute")  # type: ignore[arg-type]


# -- effects ----------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    (tmp_path / "data" / "link.txt").symlink_to(tmp_path / "secret.txt")
    return tmp_path


def test_allow_read_reads_under_the_directory_only(tree: Path) -> None:
    with subsandbox.Sandbox(policy=Policy.compute().allow_read(tree / "data")) as sb:
        assert sb.call(eval, f"open({str(tree / 'data' / 'in.txt')!r}).read()") == "inside"
        for path in (tree / "secret.txt", tree / "data" / ".." / "secret.txt",
                     tree / "data" / "link.txt"):
            with pytest.raises(PolicyError, match="reading"):
                sb.call(eval, f"open({str(path)!r}).read()")
        with pytest.raises(PolicyError, match="write"):
            sb.call(eval, f"open({str(tree / 'data' / 'new.txt')!r}, 'w')")
    assert not (tree / "data" / "new.txt").exists()


def test_allow_write_writes_under_the_directory_only(tree: Path) -> None:
    policy = Policy.nothing().allow_write(tree / "data")
    with subsandbox.Sandbox(policy=policy) as sb:
        sb.exec(f"with open({str(tree / 'data' / 'out.txt')!r}, 'w') as f:\n"
                f"    f.write('written')")
        with pytest.raises(PolicyError, match="writing"):
            sb.exec(f"open({str(tree / 'out.txt')!r}, 'w')")
        with pytest.raises(PolicyError, match="reading"):
            sb.exec(f"open({str(tree / 'secret.txt')!r})")
    assert (tree / "data" / "out.txt").read_text() == "written"
    assert not (tree / "out.txt").exists()


def test_effects_are_refused_even_where_the_module_is_granted(tree: Path) -> None:
    """The audit hook stands alone: os and socket granted, their effects still refused."""
    canary = tree / "canary"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    policy = Policy.nothing().allow_import("os", "socket", "io")
    try:
        with subsandbox.Sandbox(policy=policy) as sb:
            with pytest.raises(PolicyError, match="processes"):
                sb.exec(f"import os\nos.system('touch {canary}')")
            with pytest.raises(PolicyError, match="processes"):
                sb.exec("import os\nos.kill(os.getpid(), 0)")
            with pytest.raises(PolicyError, match="read"):
                sb.exec(f"import os\nos.listdir({str(tree)!r})")
            with pytest.raises(PolicyError, match="read"):
                sb.exec(f"import io\nio.open({str(tree / 'secret.txt')!r}).read()")
            with pytest.raises(PolicyError, match="write"):
                sb.exec(f"import os\nos.remove({str(tree / 'secret.txt')!r})")
            with pytest.raises(PolicyError, match="network"):
                sb.exec(f"import socket\n"
                        f"socket.create_connection(('127.0.0.1', {server.getsockname()[1]}))")
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert not canary.exists() and (tree / "secret.txt").exists()


def test_granted_effects_work(tree: Path) -> None:
    policy = Policy.nothing().allow_import("os").allow_processes().allow_read(tree)
    with subsandbox.Sandbox(policy=policy) as sb:
        sb.exec(f"import os\nstatus = os.system('touch {tree / 'made'}')")
        assert sb.call(eval, "status") == 0
        assert sorted(sb.call(eval, f"os.listdir({str(tree)!r})")) == [
            "data", "made", "secret.txt"]
    assert (tree / "made").exists()


# -- unrestricted -----------------------------------------------------------------------------

def test_unrestricted_is_the_default_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("free")
    with subsandbox.Sandbox() as sb:
        assert sb.policy == Policy.unrestricted() and sb.policy.is_unrestricted
        assert sb.call(eval, f"open({str(tmp_path / 'f.txt')!r}).read()") == "free"
        sb.exec("import os, sys, gc\nn = len(gc.get_objects())\nf = (lambda: 1).__globals__")
        assert sb.call(os.getpid) == os.getpid()
    with subsandbox.Sandbox(policy=Policy.unrestricted().allow_read("x")) as sb:
        assert sb.policy.is_unrestricted
