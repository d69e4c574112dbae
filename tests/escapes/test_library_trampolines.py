"""C callables that sandboxed code hands to library code, to run them "as the library".

The audit hook tells sandboxed code from library code by the frame that raised an event.
A C callable (FunctionType, code.replace, object.__setattr__, globals) passed to a library
function as a callback runs with the library's frame on top: before these tests, the
events it raised were judged the library's, and the frame-sensitive builtins answered for
the library's frame (a red-team run, round 4). Each attempt stores what it obtained in
``result``: the real process id means it reached the real builtins.
"""

from __future__ import annotations

import os
import sys

import pytest

import subsandbox

from ._escape import REFUSALS, assert_refused, attempt, text_of

# Code compiled inside the sandbox: it passes the code check (it only names a global).
STAGE2 = '''
code = [c for c in compile("def f(*a, **k):\\n    return __import__('os').getpid()\\n",
                           "<stage2>", "exec").co_consts if type(c).__name__ == "code"][0]
FunctionType = type(lambda: 0)
'''


def assert_escape_refused(outcome: object) -> None:
    assert_refused(outcome)
    assert str(os.getpid()) not in text_of(outcome), "the real builtins were reached"


def test_function_type_from_a_json_hook(sb: subsandbox.Sandbox) -> None:
    """FunctionType(code, {}) under json's frame took json's builtins: the real ones."""
    outcome = attempt(sb, STAGE2 + '''
import functools, json
f = json.loads("{}", object_hook=functools.partial(FunctionType, code))
result = f()
''')
    assert_escape_refused(outcome)


def test_function_type_through_singledispatch(sb: subsandbox.Sandbox) -> None:
    """singledispatch's wrapper is library code that calls what was registered."""
    outcome = attempt(sb, STAGE2 + '''
import functools
sd = functools.singledispatch(lambda *a: None)
sd.register(object, FunctionType)
result = sd(code, {})()
''')
    assert_escape_refused(outcome)


def test_setting_code_through_singledispatch(sb: subsandbox.Sandbox) -> None:
    """object.__setattr__(json.dumps, '__code__', code) run by functools."""
    outcome = attempt(sb, STAGE2 + '''
import functools, json
sd = functools.singledispatch(lambda *a: None)
sd.register(object, object.__setattr__)
sd(json.dumps, "__code__", code)
result = json.dumps()
''')
    assert_escape_refused(outcome)


def test_code_replace_through_singledispatch(sb: subsandbox.Sandbox) -> None:
    """code.replace with names the check refuses, made inside the sandbox."""
    outcome = attempt(sb, STAGE2 + '''
import functools
sd = functools.singledispatch(lambda *a: None)
sd.register(object, type(code).replace)
result = sd(code, co_names=("__globals__",)).co_names
''')
    assert_refused(outcome)
    assert "__globals__" not in text_of(outcome).replace("'__globals__' while", "")


def test_copy_sets_code_by_a_state_key(sb: subsandbox.Sandbox) -> None:
    """copy._reconstruct does setattr(y, key, value) for a state the sandbox chose; the
    key is a dict key, never seen by the code check (UserDict.copy calls copy.copy)."""
    outcome = attempt(sb, STAGE2 + '''
import collections, json
victim = json.dumps
def give_victim():
    return victim
class U(collections.UserDict):
    __copy__ = None
    def __reduce_ex__(self, protocol):
        return (give_victim, (), (None, {"__code__": code}))
try:
    U().copy()
except AttributeError:
    pass
result = json.dumps()
''')
    assert_escape_refused(outcome)


def test_class_change_through_singledispatch(sb: subsandbox.Sandbox) -> None:
    """__class__ assignment, which sandboxed code may not do itself, run by functools."""
    outcome = attempt(sb, '''
import functools
class A: pass
class B: pass
sd = functools.singledispatch(lambda *a: None)
sd.register(object, object.__setattr__)
a = A()
sd(a, "__class__", B)
result = type(a).__name__
''')
    assert_refused(outcome)


@pytest.mark.parametrize("builtin", ["globals", "locals"])
def test_frame_builtins_called_by_a_library_method(sb: subsandbox.Sandbox,
                                                   builtin: str) -> None:
    """Counter.__repr__ calls self.most_common(): a builtin as a class attribute is not
    bound, so globals() answered for collections' frame (its globals hold the real
    builtins), and locals() for Counter.__repr__'s."""
    outcome = attempt(sb, f'''
import collections
class C(collections.Counter):
    most_common = staticmethod({builtin})
result = repr(C(a=1))
''')
    assert_refused(outcome)
    assert "_collections_abc" not in text_of(outcome)


def test_frame_builtins_through_c_callables_in_sandboxed_code(sb: subsandbox.Sandbox) -> None:
    """Called through C (a partial, reduce) from sandboxed code, they answer for it."""
    outcome = attempt(sb, '''
def f():
    a = 1
    return sorted(next(iter(locals, None)))   # iter() calls locals() from C
result = f()
''')
    assert outcome == ["a"]


def test_globals_and_locals_still_answer_for_sandboxed_code(sb: subsandbox.Sandbox) -> None:
    """The guarded globals() and locals() behave as the builtins do for sandboxed code."""
    outcome = attempt(sb, '''
x = 1
def f(a, b=2):
    c = a + b
    return sorted(locals())
class K:
    y = 3
    names = sorted(k for k in locals() if not k.startswith("__"))
g = globals()
g["made_here"] = 5
result = (f(1), K.names, made_here, "x" in globals(), [n for n in locals() if n == "x"])
''')
    assert outcome == (["a", "b", "c"], ["y"], 5, True, ["x"]), outcome


def test_an_annotate_function_run_with_the_real_builtins(sb: subsandbox.Sandbox) -> None:
    """3.14: singledispatch's register(f) asks typing for f's annotations as forward
    references; annotationlib then runs f.__annotate__'s code as a new function whose
    globals, on a second try, lack __builtins__, so it took annotationlib's own: the
    real ones, and ``import os`` in that code got the real os. (__annotate__ is set
    through a trampoline: functions raise no audit event for it.) Earlier versions have
    no __annotate__ protocol: the attempt must not reach the real os there either."""
    outcome = attempt(sb, '''
import functools
def annotate(format):
    if format == 1:
        raise NameError("x")        # VALUE fails: typing asks for FORWARDREF
    if format == 3:
        raise NotImplementedError   # FORWARDREF: annotationlib's own evaluation
    import os                       # the policy's gate refuses it, unless the builtins
    return {"x": os.getpid()}       # are the real ones
def f(x):
    return "f"
setter = functools.singledispatch(lambda *a: None)
setter.register(object, object.__setattr__)
setter(f, "__annotate__", annotate)
dispatch = functools.singledispatch(lambda x: "object")
dispatch.register(f)
result = dispatch(1)
''')
    assert str(os.getpid()) not in text_of(outcome)
    if sys.version_info >= (3, 14):
        assert_refused(outcome)


def test_library_function_defaults_through_singledispatch(sb: subsandbox.Sandbox) -> None:
    """object.__setattr__(json.dumps, "__kwdefaults__", ...) run by functools: a library
    function's defaults are every caller's in the sandbox (a red-team run, round 5)."""
    outcome = attempt(sb, '''
import functools, json
sd = functools.singledispatch(lambda *a: None)
sd.register(object, object.__setattr__)
sd(json.dumps, "__kwdefaults__", {"indent": 7})
result = json.dumps([1])
''')
    assert_refused(outcome)


def test_library_class_bases_through_singledispatch(sb: subsandbox.Sandbox) -> None:
    """type.__setattr__(json.JSONDecoder, "__bases__", ...) run by functools: the bases of
    a library class are every caller's. (Only the attributes a type sets through its own
    descriptors raise an audit event: __bases__, __name__, __module__, __doc__,
    __abstractmethods__, __annotations__; a plain class attribute such as __getattr__
    raises none, which security.md lists as open.)"""
    outcome = attempt(sb, '''
import functools, json
class Hooked:
    def __getattr__(self, name):
        return ("hooked", name)
sd = functools.singledispatch(lambda *a: None)
sd.register(object, type.__setattr__)
sd(json.JSONDecoder, "__bases__", (Hooked,))
result = json.JSONDecoder().anything
''')
    assert_refused(outcome)
    assert "hooked" not in text_of(outcome)


def test_library_code_still_sets_dunders_on_sandboxed_classes(sb: subsandbox.Sandbox) -> None:
    """What library code does to the sandbox's own classes stays allowed (total_ordering
    sets comparison dunders, namedtuple its __new__'s defaults)."""
    outcome = attempt(sb, '''
import collections, functools
@functools.total_ordering
class Version:
    def __init__(self, n):
        self.n = n
    def __eq__(self, other):
        return self.n == other.n
    def __lt__(self, other):
        return self.n < other.n
Pair = collections.namedtuple("Pair", "a b", defaults=[2])
result = (Version(2) >= Version(1), tuple(Pair(1)))
''')
    assert outcome == (True, (1, 2)) or isinstance(outcome, ImportError), outcome


POOL_TRIAL_LOAD = '''
def payload():
    return __import__("os").getpid()

def get_function_type():
    return type(get_function_type)

def get_code():
    module = compile(PAYLOAD, "payload", "exec")
    return [c for c in module.co_consts if type(c).__name__ == "code"][0]

class Lazy:
    def __init__(self, f):
        self.f = f
    def __call__(self):
        pass
    def __reduce__(self):
        return (self.f, ())

class MakeFunction:
    def __call__(self):
        pass
    def __reduce__(self):
        return (Lazy(get_function_type), (Lazy(get_code), {}))

class Boom(Exception):
    def __reduce__(self):
        return (MakeFunction(), ())

raise Boom("trial load me")
'''


@pytest.mark.parametrize("policy", ["nothing", "compute"])
def test_a_pool_tasks_exception_trial_load_makes_no_function(policy: str) -> None:
    """A pool runs tasks on a gate thread, where no frame of sandboxed code lies under
    the task's handlers; the trial load of the exception a task raised then called what
    its reductions chose, FunctionType(code, {}), which gave the function the real
    builtins, and the function ran as the trial load's result (a red-team run, round 7).
    The payload returns the real pid into the exception's message if it ran."""
    source = f"PAYLOAD = {POOL_TRIAL_LOAD.split('def get_function_type')[0]!r}\n"
    with subsandbox.SandboxPoolExecutor(1, policy=getattr(subsandbox.Policy, policy)()) as pool:
        future = pool.submit(exec, source + POOL_TRIAL_LOAD)
        error = future.exception(timeout=60)
    assert error is not None
    assert str(os.getpid()) not in text_of(error)
    assert "function.__new__" in str(error), error


def test_register_never_evaluates_annotations(sb: subsandbox.Sandbox) -> None:
    """register(f) had typing evaluate f's annotations: an annotation could capture
    typing's ForwardRef (3.12/3.13: a GenericAlias with a string argument, whose origin's
    __class_getitem__ typing calls with it; 3.14: an undefined name, which annotationlib
    turns into a stand-in and then a ForwardRef), and a ForwardRef evaluates any string
    in any loaded module's globals (module=...) or with the real builtins in empty ones
    (a red-team run, round 7)."""
    outcome = attempt(sb, '''
import functools
caught = []
class Ours:
    def __class_getitem__(cls, item):
        caught.append(item[0])
        return list[int]
def capture(x):
    caught.append(x)
    return int
def f(x: type(list[int])(Ours, ("X",))):
    pass
try:
    def g(x: capture(Undefined)):   # 3.14 evaluates it later; earlier versions now
        pass
    targets = (f, g)
except NameError:
    targets = (f,)
for h in targets:
    try:
        functools.singledispatch(lambda x: x).register(h)
    except Exception:
        pass
result = [type(c).__name__ for c in caught]
''')
    assert outcome == [] or isinstance(outcome, ImportError), outcome


FORWARD_REF = """
import typing
try:
    FR = typing.ForwardRef
except AttributeError:  # 3.14: typing hands it out lazily; dataclasses makes one
    from dataclasses import dataclass, fields
    @dataclass
    class Holder:
        x: Undefined
    FR = type(fields(Holder)[0].type)
def ev(ref, g):
    if hasattr(ref, "evaluate"):
        return ref.evaluate(globals=g)
    try:
        return ref._evaluate(g, None, (), recursive_guard=frozenset())
    except TypeError:
        return ref._evaluate(g, None, recursive_guard=frozenset())
"""


def test_a_forward_ref_evaluates_only_in_sandboxed_globals() -> None:
    """Where typing (and on 3.14 dataclasses) is granted, ForwardRef is at hand: it
    evaluated a string in any loaded module's globals (module=...), or with the real
    builtins in empty ones, and 3.14's annotationlib looked bare names up in the real
    builtins module (a red-team run, round 7). In the sandbox's own globals it works."""
    policy = subsandbox.Policy.compute().allow_import("typing", "dataclasses")
    with subsandbox.Sandbox(policy=policy) as sb:
        sb.exec(FORWARD_REF)
        for source in ("result = repr(ev(FR('sys', module='subsandbox._enforce'), None))",
                       "result = repr(ev(FR('__import__'), {}))",
                       "result = repr(ev(FR('__import__(\\'sys\\')'), {}))"):
            outcome = attempt(sb, source)
            assert_refused(outcome)
            assert "module 'sys'" not in text_of(outcome)
            assert "built-in function" not in text_of(outcome)
        outcome = attempt(sb, "result = (ev(FR('int'), globals()) is int,"
                              " ev(FR('len'), globals())([1, 2]))")
        assert outcome == (True, 2), outcome


DATACLASS_FIELD = '''
from dataclasses import dataclass
got = []
class C:
    "a docstring, so dataclasses does not call inspect.signature for one"
    __module__ = MODULE
    __annotations__ = {FIELD: int}
    def x(self, b):
        got.append(b)
        return True
C = dataclass(init=False, repr=False, eq=True, match_args=False)(C)
C() == C()
result = repr(got[0]["__import__"])
'''


@pytest.mark.parametrize("module", ["subsandbox._enforce", "not.loaded.anywhere"])
def test_dataclass_code_in_a_field_name_runs_in_no_library_namespace(module: str) -> None:
    """dataclasses writes its methods' source from the field names, which a class body's
    __annotations__ chooses, and ran it in sys.modules[cls.__module__]'s namespace (or in
    empty globals, which take the real builtins): a field named 'x(__builtins__)#' handed
    the real builtins to the class's method (a red-team run, round 8, where dataclasses
    is granted)."""
    field = "x(__builtins__),)#" if sys.version_info < (3, 13) else "x(__builtins__)#"
    policy = subsandbox.Policy.compute().allow_import("dataclasses")
    with subsandbox.Sandbox(policy=policy) as sb:
        outcome = attempt(sb, DATACLASS_FIELD.replace("MODULE", repr(module))
                          .replace("FIELD", repr(field)))
        assert_refused(outcome)
        assert "built-in function" not in text_of(outcome)
        outcome = attempt(sb, """
from dataclasses import dataclass
@dataclass(frozen=True)
class Point:
    x: int
    y: int = 2
result = (repr(Point(1)), Point(1) == Point(1, 2))
""")
        assert outcome == ("Point(x=1, y=2)", True), outcome


def test_global_enum_writes_into_no_library_namespace() -> None:
    """enum.global_enum wrote a class's members into sys.modules[cls.__module__]: an enum
    claiming subsandbox._enforce replaced the audit hook's own globals (a red-team run,
    round 8, where enum is granted)."""
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import("enum")) as sb:
        outcome = attempt(sb, """
import enum
class Yes(enum.Enum):
    __module__ = "subsandbox._enforce"
    _under = 1
enum.global_enum(Yes)
result = "written"
""")
        assert_refused(outcome)
        outcome = attempt(sb, """
import enum
@enum.global_enum
class Mine(enum.IntEnum):
    ONE = 1
result = (ONE.value, repr(ONE))
""")
        assert outcome == (1, "__main__.ONE"), outcome


@pytest.mark.parametrize("name", ["inspect", "timeit", "code", "annotationlib", "sys",
                                  "importlib.util", "builtins", "subsandbox._core", "dis",
                                  "opcode", "logging", "logging.config"])
def test_modules_that_hand_out_the_interpreter_cannot_be_granted(name: str) -> None:
    """inspect.getmembers read __globals__ by names no check saw, and its eval_str (and
    3.14's annotationlib's) evaluated annotations in any module's namespace; timeit and
    code ran code in a dict they filled with the real builtins (a red-team run, round 9:
    each a full escape once granted). dis and opcode hold the tables (lists) the code
    check decodes bytecode with: a sandbox that cleared dis.hasjrel moved the jump
    targets the check sees (session 28). logging's Formatter formats a template chosen at
    run time, attribute walks included, and logging.config hands out the real __import__
    (round 18). No restricting policy can grant them."""
    with pytest.raises(ValueError, match=f"{name!r} cannot be granted"):
        subsandbox.Policy.compute().allow_import(name)
    assert subsandbox.Policy.compute().allow_import("json", "fractions") is not None


@pytest.mark.parametrize("module", ["dataclasses", "enum"])
def test_a_metaclass_property_cannot_rename_the_module(module: str) -> None:
    """The guard read __module__ from the class's namespace ("__main__"); the library
    read cls.__module__, which a metaclass's property answered with another module (a
    red-team run, round 10)."""
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import(module)) as sb:
        if module == "dataclasses":
            source = """
from dataclasses import dataclass
class Meta(type):
    __module__ = property(lambda cls: "subsandbox._enforce")
class C(metaclass=Meta):
    "doc"
    __annotations__ = {"x": int}
dataclass(C)
result = "processed"
"""
        else:
            source = """
import enum
class Meta(enum.EnumType):
    __module__ = property(lambda cls: "subsandbox._enforce")
class E(enum.Enum, metaclass=Meta):
    _under = 1
enum.global_enum(E)
result = "written"
"""
        outcome = attempt(sb, source)
        assert_refused(outcome)


@pytest.mark.parametrize("module, name", [("subsandbox._enforce", "__builtins__"),
                                          ("builtins", "__import__")])
def test_get_type_hints_of_a_class_claiming_a_module(module: str, name: str) -> None:
    """get_type_hints(cls) swaps its namespaces for a class: the locals, where names are
    looked up first, were sys.modules[cls.__module__]'s (a red-team run, round 10), or a
    C module's, which has no __builtins__ key (round 11): the real builtins came out."""
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import("typing")) as sb:
        outcome = attempt(sb, f"""
import typing
class C:
    __builtins__ = globals()["__builtins__"]
    __module__ = {module!r}
    x: {name!r}
result = repr(typing.get_type_hints(C)["x"])[:60]
""")
        assert_refused(outcome)
        assert "built-in function" not in text_of(outcome)


def test_global_enum_writes_where_it_checked() -> None:
    """global_enum read cls.__module__ again after setting __repr__, and a metaclass's
    __setattr__ renamed the class in between (update_wrapper sets __module__ as library
    code): the members went over the audit hook's globals (a red-team run, round 11)."""
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import("enum")) as sb:
        outcome = attempt(sb, """
import enum, functools
class Fake:
    __module__ = "subsandbox._enforce"
class M(enum.EnumType):
    def __setattr__(cls, name, value):
        if name == "__repr__":
            try:
                functools.update_wrapper(cls, Fake)
            except Exception:
                pass
            return
        return enum.EnumType.__setattr__(cls, name, value)
class Yes(enum.Enum, metaclass=M):
    _under = 1
enum.global_enum(Yes)
result = (_under.value, Yes.__module__)
""")
        # Written where it was checked, the sandbox's own namespace, whatever the class
        # says its module is by then.
        assert outcome == (1, "subsandbox._enforce"), outcome
        outcome = attempt(sb, "import enum\nresult = 'still refused'\nimport os")
        assert_refused(outcome)


# Round 12: objects sandboxed code chose, handled by our own loaders, whose frames the
# audit hook trusted with making functions. A lazy chain of C callables makes and calls
# FunctionType(code, G) when it is advanced; G has no __builtins__, so a function made
# "as" one of our frames took its builtins, the real ones.
CHAIN = '''
code = [c for c in compile("def f():\\n    global out\\n    out = __import__('os').getpid()\\n",
                           "<stage2>", "exec").co_consts if type(c).__name__ == "code"][0]
FunctionType = type(lambda: 0)
G = {}
chain = map(next, map(iter, map(FunctionType, [code], [G]), [None]))
'''


def assert_chain_did_not_run(sb: subsandbox.Sandbox, outcome: object) -> None:
    assert str(os.getpid()) not in text_of(outcome), "the real builtins were reached"
    assert sb.call(eval, "G.get('out')") is None, "the chain ran with the real builtins"


def test_a_fake_function_in_a_result(sb: subsandbox.Sandbox) -> None:
    """isinstance(obj, FunctionType) took a fake __class__, and _reduce_function, one of
    the frames allowed to make functions, iterated what the fake's __dict__ answered."""
    outcome = attempt(sb, CHAIN + '''
class Items:
    items = staticmethod(lambda: chain)
class Fake:
    __class__ = property(lambda self: FunctionType)
    __code__ = code
    __globals__ = {}
    __closure__ = None
    __defaults__ = None
    __kwdefaults__ = None
    __dict__ = Items()
result = Fake()
''')
    assert_chain_did_not_run(sb, outcome)


def test_a_function_whose_globals_answer_in(sb: subsandbox.Sandbox) -> None:
    """A real function with a dict subclass for globals: _reduce_function's `name in
    fn_globals` took the truth of what __contains__ returned, a __bool__ that advanced
    the chain, in _reduce_function's frame."""
    outcome = attempt(sb, CHAIN + '''
class Truth:
    __bool__ = staticmethod(chain.__next__)
class Glob(dict):
    def __contains__(self, name):
        return Truth()
ns = Glob()
exec("def g():\\n    return helper\\n", ns)
result = ns["g"]
''')
    assert_chain_did_not_run(sb, outcome)


def test_a_fake_function_in_a_pool_task_exception() -> None:
    """The same fake, raised by a pool task: the exception is pickled in the sandbox. The
    function the chain would make writes into the worker's __main__, which a second task
    reads."""
    def task() -> None:
        source = ("def f():\n    setattr(__import__('sys').modules['__main__'], 'ESCAPED',"
                  " __import__('os').getpid())\n")
        code = [c for c in compile(source, "<stage2>", "exec").co_consts
                if type(c).__name__ == "code"][0]
        function_type = type(lambda: 0)
        chain = map(next, map(iter, map(function_type, [code], [{}]), [None]))

        class Items:
            items = staticmethod(lambda: chain)

        class Fake:
            __class__ = property(lambda self: function_type)
            __code__ = code
            __globals__: dict[str, object] = {}
            __closure__ = None
            __defaults__ = None
            __kwdefaults__ = None
            __dict__ = Items()

        raise ValueError(Fake())

    def peek() -> object:
        return globals().get("ESCAPED")

    with subsandbox.SandboxPoolExecutor(max_workers=1,
                                        policy=subsandbox.Policy.compute()) as pool:
        with pytest.raises(Exception) as caught:
            pool.submit(task).result()
        assert pool.submit(peek).result() is None, "the chain ran with the real builtins"
    assert str(os.getpid()) not in str(caught.value)


# Round 13 (the sandbox's side): each needs one more grant, and each got the real builtins
# (or the real sys) on 3.12 to 3.14 before its fix.

def test_pickle_loads_a_global_only_as_the_sandbox_sees_it() -> None:
    """C's Unpickler.find_class imports through the policy's gate, then walks the name on
    the real module: json's codecs.sys, pickle's sys, decoder.__builtins__."""
    def global_ref(module: str, dotted: str) -> bytes:
        m, n = module.encode(), dotted.encode()
        return (b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n
                + b"\x93.")

    with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import("pickle")) as sb:
        for module, name in (("pickle", "sys"), ("json", "codecs.sys"),
                             ("json", "decoder.__builtins__"), ("builtins", "eval"),
                             ("operator", "attrgetter")):
            outcome = attempt(sb, "import pickle\nresult = repr(pickle.loads(DATA))",
                              DATA=global_ref(module, name))
            assert_escape_refused(outcome)
        # What the sandbox sees under a name still loads: a class of a granted module.
        outcome = attempt(sb, "import pickle, fractions\n"
                              "result = pickle.loads(pickle.dumps(fractions.Fraction(1, 3)))"
                              " == fractions.Fraction(1, 3)")
        assert outcome is True, outcome


@pytest.mark.parametrize("module, source", [
    ("dataclasses", """
import dataclasses
class FakeField:
    _field_type = None
    init = True
    name = "__getattribute__"
got = []
class Meta(type):
    __dataclass_fields__ = {"x": FakeField()}
    def __new__(mcls, *args, **changes):
        if changes:
            got.append(changes)
            return None
        return super().__new__(mcls, *args)
class C(metaclass=Meta):
    pass
dataclasses.replace(C)
import json
og = got[0]["__getattribute__"]
result = og(json.loads, "__globals__")["__builtins__"]["__import__"]("posix").getpid()
"""),
    ("ast", """
import ast
class C:
    _fields = ("__getattribute__",)
(name, og), = ast.iter_fields(C)
import json
result = og(json.loads, "__globals__")["__builtins__"]["__import__"]("posix").getpid()
"""),
])
def test_a_library_reads_no_attribute_by_a_name_sandboxed_code_lists(module: str,
                                                                      source: str) -> None:
    """dataclasses.replace (asdict, astuple) and ast.iter_fields read getattr(obj,
    name) for the names a class lists: "__getattribute__" gave the unbound
    object.__getattribute__, which reads any function's __globals__: the real builtins."""
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import(module)) as sb:
        outcome = attempt(sb, source)
        assert_escape_refused(outcome)
        # The library still works for what it is for.
        ordinary = ("import dataclasses\n@dataclasses.dataclass\nclass P:\n    x: int\n"
                    "result = (dataclasses.asdict(dataclasses.replace(P(1), x=2)),)"
                    if module == "dataclasses" else
                    "import ast\nresult = (ast.dump(ast.parse('x + 1', mode='eval')),)")
        outcome = attempt(sb, ordinary)
        assert isinstance(outcome, tuple), outcome


@pytest.mark.parametrize("policy", [subsandbox.Policy.nothing(), subsandbox.Policy.compute()],
                         ids=["nothing", "compute"])
def test_a_finalizer_run_with_no_frame_makes_no_function(policy: subsandbox.Policy) -> None:
    """A pool's gate thread drops a task's result with no Python frame under it: a
    __del__ that is a C callable ran there, and the hook took "no frame" for our own
    interrupt and let FunctionType(code, {}) through, which took the interpreter's real
    builtins (a red-team run, round 14)."""
    stage1 = r'''
sink = []
code = compile("__import__('os').getpid()", "<x>", "eval")
FunctionType = type(lambda: 0)
class Bomb:
    def __reduce__(self):
        return (int, ())
    __del__ = map(sink.append, map(FunctionType, [code], [{}])).__next__
'''
    with subsandbox.SandboxPoolExecutor(max_workers=1, policy=policy) as pool:
        pool.submit(exec, stage1).result()
        assert pool.submit(eval, "Bomb()").result() == 0
        made = pool.submit(eval, "len(sink)").result()
        assert made == 0, "the finalizer made a function"
        with pytest.raises(Exception) as caught:
            pool.submit(eval, "sink[0]()").result()
        assert str(os.getpid()) not in str(caught.value)


def test_copy_of_a_method_reads_no_attribute_by_a_chosen_name() -> None:
    """A bound method's C __reduce__ answers (getattr, (self, __func__.__name__)) with the
    getattr of the frame calling it, copy.copy's, the real one: a method of a class named
    "__globals__" bound to json.dumps read json's globals (a red-team run, round 15)."""
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute().allow_import("copy")) as sb:
        outcome = attempt(sb, """
import copy, json
class C:
    def f(self):
        pass
MethodType = type(C().f)
Named = type("__globals__", (), {})
g = copy.copy(MethodType(Named, json.dumps))
result = g["__builtins__"]["__import__"]("posix").getpid()
""")
        assert_escape_refused(outcome)
        outcome = attempt(sb, "import copy\nclass P:\n    def m(self):\n        return 5\n"
                              "result = copy.copy(P().m)()")
        assert outcome == 5, outcome


def test_a_pickle_loads_no_private_helper_but_the_reconstructors() -> None:
    """The sandbox's loader took any private name of a granted module from the module
    itself (for re._compile): with pickle granted, or in the trial load of an exception,
    a helper such as dataclasses._create_fn runs code in globals the pickle chooses."""
    def global_ref(module: str, name: str) -> bytes:
        m, n = module.encode(), name.encode()
        return (b"\x80\x04\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n
                + b"\x93.")

    policy = subsandbox.Policy.compute().allow_import("pickle", "dataclasses")
    with subsandbox.Sandbox(policy=policy) as sb:
        outcome = attempt(sb, "import pickle\nresult = repr(pickle.loads(DATA))",
                          DATA=global_ref("dataclasses", "_create_fn"))
        assert_refused(outcome)
        assert "a private name" in text_of(outcome)
        outcome = attempt(sb, "import pickle, re\n"
                              "result = pickle.loads(pickle.dumps(re.compile('a+'))).pattern")
        assert outcome == "a+", outcome
