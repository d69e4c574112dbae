"""Installs a Policy inside a sandbox, before the sandbox runs any request.

Runs in the sandbox only (``_inside.serve`` calls ``install(spec)`` before it announces
"ready"). Three layers, each closing what the one before cannot:

1. **Code check.** Every code object the sandbox is asked to run (functions that cross by
   value, ``Sandbox.exec`` source, and what sandboxed code compiles for itself) is read
   instruction by instruction before it can run. Attribute names that lead from any object
   to the interpreter's internals are refused: dunders other than a short list of
   protocol names (``__globals__``, ``__subclasses__``, ``__builtins__``, ``__self__``,
   ``__closure__``, ``__code__``, ``__dict__``, ``__traceback__``...), the frame, traceback,
   generator and coroutine internals (``f_back``, ``f_globals``, ``tb_frame``,
   ``gi_frame``...), and ``str.format``/``format_map`` except on a literal template with
   plain fields (the format mini-language walks attributes in C). CPython audits only a few
   of these reads (``__code__``, ``tb_frame``, ``gi_frame``...), not ``__globals__``,
   ``__builtins__``, ``__self__``, ``__closure__``, ``f_back`` or ``f_globals``, so an audit
   hook alone cannot stop an object walk: this check does.
2. **What sandboxed code starts with.** Its builtins are a separate dict holding only the
   granted names, with guarded ``getattr``/``hasattr``/``setattr``/``delattr``/``vars``
   (same name rule) and ``exec``/``eval``/``compile`` (same code check, and never the
   caller's globals). ``import`` goes through a gate that applies the policy and hands out
   a *view* of the module: its public attributes only, submodules as views, and nothing
   that walks attributes by name (``operator.attrgetter``/``methodcaller`` are guarded,
   ``string.Formatter`` is absent). The sandbox's ``__main__`` is emptied of the boot
   code's names. Requests are unpickled with the same gate (``call(os.system, ...)`` fails
   there).
3. **An audit hook** (PEP 578, per interpreter, cannot be removed) that refuses effects the
   policy does not grant, wherever they come from: opening files (by mode and directory),
   directory listings, processes and ``os`` process control, sockets, ctypes and non-stdlib
   native code, threads, interpreter-wide hooks, ``gc``'s object walks, other threads'
   frames, running unchecked code; new code or function objects, ``marshal``, and
   setting ``__code__``, ``__class__`` or a library function's or class's dunders, by
   anyone but our loaders and the import system (a C callable sandboxed code hands to
   library code runs under the library's frame); and, when the code that raised the
   event is sandboxed code, frame access and other dunder assignment.

"Sandboxed code" is code whose globals are not the namespace of a loaded module other than
``__main__``: the user's functions, ``exec``'d source, and anything they build. Library
code (the stdlib, this package) runs normally; it only ever receives objects from
sandboxed code, and returns what its public API returns.
"""

# Annotations stay strings, never evaluated: the guards below are sandboxed code's builtins,
# and it may read their __annotations__ (a safe dunder), which evaluated would hand it
# classes such as types.CodeType.
from __future__ import annotations

import builtins as _builtins_module
import dis
import io
import marshal
import os
import pickle
import posixpath
import sys
import types
import _string  # type: ignore[import-not-found]
from _operator import itemgetter as _itemgetter

from . import _core, _crossing, _grants
from .errors import _TERMINAL_ESCAPES, PolicyError

# Not `import typing` at run time (see _inside.py): names for annotations only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ast
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any, TextIO

    from _typeshed import ReadableBuffer

    # Policy.spec(): (format tag, name, modules, builtins, effects, read_dirs, write_dirs).
    PolicySpec = tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...],
                       tuple[str, ...], tuple[str, ...]]

# Loaded now, while loading is free: formatting a sandbox's exception needs them later.
import linecache  # noqa: F401
import traceback  # noqa: F401

__all__ = ["install", "seal", "attribute_allowed", "check_code"]

# -- the name rule ---------------------------------------------------------------------------

# Dunders that are protocol methods or plain data: none leads to globals, frames, code, the
# class graph or the builtins.
SAFE_DUNDERS = frozenset("""
    __init__ __new__ __class__ __name__ __qualname__ __doc__ __module__ __all__ __version__
    __len__ __iter__ __next__ __aiter__ __anext__ __reversed__ __contains__ __length_hint__
    __getitem__ __setitem__ __delitem__ __missing__ __call__ __enter__ __exit__
    __aenter__ __aexit__ __await__ __setattr__ __delattr__ __set_name__ __post_init__
    __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __hash__ __bool__ __repr__ __str__
    __format__ __bytes__ __sizeof__ __index__ __int__ __float__ __complex__ __round__
    __trunc__ __floor__ __ceil__ __neg__ __pos__ __abs__ __invert__
    __add__ __sub__ __mul__ __matmul__ __truediv__ __floordiv__ __mod__ __divmod__
    __pow__ __lshift__ __rshift__ __and__ __xor__ __or__
    __radd__ __rsub__ __rmul__ __rmatmul__ __rtruediv__ __rfloordiv__ __rmod__
    __rdivmod__ __rpow__ __rlshift__ __rrshift__ __rand__ __rxor__ __ror__
    __iadd__ __isub__ __imul__ __imatmul__ __itruediv__ __ifloordiv__ __imod__
    __ipow__ __ilshift__ __irshift__ __iand__ __ixor__ __ior__
    __slots__ __match_args__ __annotations__
""".split())

# Plain names that hold frames, code or the objects a frame or coroutine runs on.
BLOCKED_NAMES = frozenset("""
    gi_frame gi_code gi_yieldfrom cr_frame cr_code cr_await cr_origin ag_frame ag_code
    ag_await tb_frame tb_next f_back f_globals f_locals f_builtins f_code f_trace
    f_trace_lines f_trace_opcodes _convert_
""".split())
# _convert_: EnumType._convert_(name, module, filter) reads sys.modules[module] by the name
# the caller gives, turns the module's globals it picks into members (X.name.value is the
# real value) and writes into that module. Every enum class reaches it
# (re.RegexFlag.mro() holds Enum), and `Enum._convert_('X', 'random', f)` got random._os.

# Attribute names whose use needs a constant template: str.format and str.format_map walk
# attributes and items named in the template, in C.
_FORMAT_NAMES = frozenset({"format", "format_map"})

# Attribute names only constant templates may use.
_ATTRIBUTE_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR", "STORE_ATTR",
                            "DELETE_ATTR", "IMPORT_FROM"})
_SETTING_OPS = frozenset({"STORE_ATTR", "DELETE_ATTR"})


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def attribute_allowed(name: str, setting: bool = False) -> bool:
    """Whether sandboxed code may read (or, with ``setting``, set/delete) this attribute."""
    if name in BLOCKED_NAMES:
        return False
    if _is_dunder(name):
        return not setting and name in SAFE_DUNDERS
    return True


def name_allowed(name: object) -> bool:
    """Whether sandboxed code may read attribute ``name`` by a name chosen at run time
    (getattr, vars(), attrgetter...): the attribute rule, and never str.format/format_map
    (the code check lets those through only on a literal template)."""
    return (type(name) is str and attribute_allowed(name)  # a subclass could lie to `in`
            and name not in _FORMAT_NAMES)


def plain_template(template: str) -> bool:
    """True when ``template.format(...)`` only substitutes arguments (no ``.x``, ``[k]``)."""
    try:
        parts = list(_string.formatter_parser(template))
    except ValueError:
        return False
    for _literal, field, spec, _conversion in parts:
        if field is None:
            continue
        if field and not (field.isdigit() or field.isidentifier()):
            return False
        if spec and not plain_template(spec):
            return False
    return True


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """One number of an exception table (6-bit groups, 0x40 = more): (value, next index)."""
    byte = data[at]
    value = byte & 63
    while byte & 64:
        at += 1
        byte = data[at]
        value = (value << 6) | (byte & 63)
    return value, at + 1


def _handler_offsets(co: types.CodeType) -> set[int]:
    """The offsets where ``co``'s exception handlers start (``dis`` does not mark them as
    jump targets). Format: CPython's InternalDocs/exception_handling.md, 3.11 to 3.14."""
    data = co.co_exceptiontable
    out: set[int] = set()
    at = 0
    while at < len(data):
        _start, at = _varint(data, at)
        _length, at = _varint(data, at)
        target, at = _varint(data, at)
        _depth_lasti, at = _varint(data, at)
        out.add(target * 2)
    return out


# What FOR_ITER steps over at the target dis names (its END_FOR) when its iterator is
# done, landing on the instruction after (Python/bytecodes.c, FOR_ITER: JUMPBY(oparg + 1)
# on 3.12 and 3.14, JUMPBY(oparg + 2) on 3.13, which also skips a POP_TOP).
_FOR_ITER_SKIPS = ("END_FOR", "POP_TOP") if sys.version_info[:2] == (3, 13) else ("END_FOR",)
# Jumps, whose targets dis computes as the interpreter does (FOR_ITER's exit aside).
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)


def _landings(co: types.CodeType, instructions: list[dis.Instruction],
              policy_name: str) -> set[int]:
    """Every offset where control arrives other than from the instruction before it:
    jump targets as the interpreter computes them, and exception handlers.

    The name check reads each instruction as ``dis`` decodes it, so each landing must be
    where an instruction starts. A jump into an EXTENDED_ARG group runs the instruction
    with a short argument (``dis`` read ``LOAD_ATTR`` of ``co_names[128]``, the jump ran
    it on ``co_names[0]``, ``__globals__``), and FOR_ITER's exit lands past the END_FOR
    that ``dis`` names as its target (right on a MATCH_CLASS whose names were built at
    run time): both found by a red-team run with bytecode crafted by hand. Such code is
    refused; CPython's compiler never makes it."""
    starts: set[int] = set()
    landings = _handler_offsets(co)
    after_prefix = False
    at: dict[int, dis.Instruction] | None = None     # by offset, made for the first loop
    for instr in instructions:
        if not after_prefix:
            starts.add(instr.offset)
        after_prefix = instr.opname == "EXTENDED_ARG"
        if instr.opcode in _JUMPS:
            landings.add(instr.argval)      # the target dis computes, as findlabels does
        if instr.opname == "FOR_ITER":
            if at is None:
                at = {i.offset: i for i in instructions}
            for n, name in enumerate(_FOR_ITER_SKIPS):
                skipped = at.get(instr.argval + 2 * n)
                if skipped is None or skipped.opname != name:
                    raise PolicyError(f"the sandbox's policy {policy_name!r} refuses code "
                                      f"it cannot read (FOR_ITER at {instr.offset} in "
                                      f"{co.co_name} does not end on {name})")
            landings.add(instr.argval + 2 * len(_FOR_ITER_SKIPS))
    strays = sorted(landings - starts)
    if strays:
        raise PolicyError(f"the sandbox's policy {policy_name!r} refuses code it cannot "
                          f"read (control lands at offset {strays[0]} of {co.co_name}, "
                          f"where no instruction starts)")
    return landings


def _where(co: types.CodeType, instr: dis.Instruction) -> str:
    """Where an instruction is, as a traceback says it."""
    line = instr.positions.lineno if instr.positions else None
    return f"{co.co_filename}, line {line}, in {co.co_name}"


def check_code(code: types.CodeType, policy_name: str) -> None:
    """Raise PolicyError if ``code`` (or code nested in it) breaks the name rule."""
    stack = [code]
    while stack:
        co = stack.pop()
        instructions = list(dis.get_instructions(co))
        landings = _landings(co, instructions, policy_name)
        previous = None
        # Whether control can arrive at the current instruction other than straight from
        # `previous` (a jump or an exception handler lands on it, or on an EXTENDED_ARG
        # in between): then what `previous` pushed is not necessarily on the stack.
        entered = False
        for instr in instructions:
            op = instr.opname
            entered = entered or instr.offset in landings
            if op in _ATTRIBUTE_OPS:
                name = instr.argval
                if not isinstance(name, str):
                    raise PolicyError(f"the sandbox's policy {policy_name!r} refuses code it "
                                   f"cannot read ({op} {name!r} in {co.co_name})")
                setting = op in _SETTING_OPS
                if op == "IMPORT_FROM" and name.startswith("_"):
                    ok = False
                elif name in _FORMAT_NAMES and not setting:
                    # Only LOAD_ATTR reads from what the instruction before pushed last:
                    # LOAD_SUPER_ATTR reads from what the global `super`, called with the
                    # two values below, returns (`super(0, "{}").format`, with any
                    # `super` bound in the function's globals, was str.format; a red-team
                    # run).
                    ok = (op == "LOAD_ATTR" and previous is not None and not entered
                          and previous.opname == "LOAD_CONST"
                          and isinstance(previous.argval, str)
                          and plain_template(previous.argval))
                else:
                    ok = attribute_allowed(name, setting)
                if not ok:
                    where = _where(co, instr)
                    what = ("str.format on a template that is not a literal with plain "
                            "fields (use an f-string)" if name in _FORMAT_NAMES
                            else f"the attribute {name!r}")
                    raise PolicyError(f"the sandbox's policy {policy_name!r} refuses code "
                                   f"that uses {what} ({where})")
            elif op == "MATCH_CLASS":
                _check_class_pattern(co, instr, None if entered else previous, policy_name)
            elif op == "CALL_INTRINSIC_1" and instr.argrepr == "INTRINSIC_IMPORT_STAR":
                # `from m import *` reads, in C, every name the object's __all__ lists (a
                # red-team run listed __globals__ in __all__ of a library function and
                # made __import__ return it). Names are spelled out instead.
                raise PolicyError(
                    f"the sandbox's policy {policy_name!r} refuses code that uses "
                    f"'from ... import *' ({_where(co, instr)}): name what you import, "
                    f"from math import sqrt, pi")
            if op != "CACHE" and op != "EXTENDED_ARG":
                previous = instr
                entered = False
        stack.extend(c for c in co.co_consts if isinstance(c, types.CodeType))


def _check_class_pattern(co: types.CodeType, instr: dis.Instruction,
                         previous: dis.Instruction | None, policy_name: str) -> None:
    """A class pattern (``case C(a, k=b)``) reads attributes of the subject in C, with no
    audit event: by the names of its keyword sub-patterns, a constant tuple pushed right
    before MATCH_CLASS, and by the names in ``C.__match_args__`` for its positional ones.
    Those the class chooses at run time (a class body may set ``__match_args__``, and a
    metaclass can make any subject match), so no reading of the code can check them:
    positional sub-patterns are refused, keyword ones must pass the ``getattr`` rule (not
    ``format``: ``case str(format=f)`` would hand out the subject's ``str.format``)."""
    where = _where(co, instr)
    if instr.arg:
        raise PolicyError(
            f"the sandbox's policy {policy_name!r} refuses code that uses a class pattern "
            f"with positional sub-patterns ({where}): they read the attributes the class's "
            f"__match_args__ names, which the policy cannot check; name them as keywords, "
            f"case Point(x=x, y=y), or for a builtin type write case int() as n")
    names = (previous.argval if previous is not None and previous.opname == "LOAD_CONST"
             else None)
    if type(names) is not tuple or not all(name_allowed(name) for name in names):
        shown = (", ".join(repr(n) for n in names if not name_allowed(n))
                 if type(names) is tuple else "names it cannot read")
        raise PolicyError(f"the sandbox's policy {policy_name!r} refuses code that uses a "
                          f"class pattern with the attribute {shown} ({where})")


# -- effects, as the audit hook sees them ------------------------------------------------------

_PROCESS_EVENTS = frozenset("""
    os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty os.kill os.killpg
    _posixsubprocess.fork_exec
    os.startfile subprocess.Popen pty.spawn signal.pthread_kill os.putenv os.unsetenv
    os.chdir os.fchdir resource.setrlimit resource.prlimit os.setuid os.setgid
""".split())
# C modules whose functions act on the world and raise no audit event on some version we
# support: _posixsubprocess.fork_exec starts a process with none on 3.12 and 3.13. The
# import is the last point the hook sees (a red-team run, round 16, started a process so
# once it had the real import system). subprocess imports it: no granted module does.
_EFFECT_ONLY_MODULES = {"_posixsubprocess": "processes"}
_WRITE_EVENTS = frozenset("""
    os.remove os.rename os.rmdir os.mkdir os.chmod os.chown os.chflags os.lchflags
    os.link os.symlink os.truncate os.utime os.setxattr os.removexattr os.mkfifo os.mknod
    shutil.copyfile shutil.copymode shutil.copystat shutil.copytree shutil.rmtree
    shutil.move shutil.make_archive shutil.unpack_archive shutil.chown
    tempfile.mkstemp tempfile.mkdtemp
""".split())
_LISTING_EVENTS = frozenset("""
    os.listdir os.scandir os.walk os.fwalk os.listxattr os.getxattr glob.glob glob.glob/2
""".split())
_NETWORK_PREFIXES = ("socket.", "ssl.", "urllib.", "http.", "ftplib.", "smtplib.",
                     "poplib.", "imaplib.", "nntplib.", "telnetlib.", "webbrowser.")
_NATIVE_PREFIXES = ("ctypes.", "_ctypes.", "os.add_dll_directory", "winreg.", "msvcrt.",
                    "_winapi.")
_HOOK_EVENTS = frozenset("""
    sys.settrace sys.setprofile sys.addaudithook sys.monitoring.register_callback
    sys.set_asyncgen_hooks_firstiter sys.set_asyncgen_hooks_finalizer
    sys.set_asyncgen_hook_firstiter sys.set_asyncgen_hook_finalizer setopencodehook
""".split())
_THREAD_EVENTS = frozenset({"_thread.start_new_thread", "_thread.start_joinable_thread"})
# Never, under any restricted policy: they hand out every object, or other threads' frames.
_INTROSPECTION_EVENTS = frozenset("""
    gc.get_objects gc.get_referrers gc.get_referents sys._current_frames
    sys._current_exceptions builtins.breakpoint builtins.input
""".split())
# Refused when sandboxed code raises them (library code needs them: tracebacks, warnings,
# namedtuple's module name).
_SANDBOXED_CODE_EVENTS = frozenset("""
    object.__getattr__ sys._getframe sys._getframemodulename
""".split())
# Refused whoever raises them, not only sandboxed code: a C callable that sandboxed code
# hands to a library function as a callback (json's object_hook, a key, what
# functools.singledispatch dispatches to) runs under the library's frame, so
# FunctionType, code.replace or object.__setattr__ called that way looked like the
# library's own doing (a red-team run made functions with the real builtins, and set a
# library function's __code__, that way). No library code makes or rewrites code for
# sandboxed code; the exceptions are our own loaders (_MAKERS below), the import system
# and 3.14's annotationlib (_Enforcer._code_event_refused).
_CODE_EVENTS = frozenset("""
    code.__new__ function.__new__ marshal.loads marshal.load marshal.dumps
    cpython.PyThreadState_SetAsyncExc
""".split())
# Attributes whose change runs other code, or changes what an object or a class is,
# refused the same way, whoever sets them (object.__setattr__ is raised for these on
# functions and any object, and for a type's own descriptors). So are all dunders of library
# functions and library classes (_library_function, _library_class). Not __defaults__
# (collections.namedtuple sets it) nor __bases__ (typing.NamedTuple sets it) of what library
# code makes for sandboxed code: a default is a value sandboxed code could pass anyway,
# and new bases give a class only what a class statement could.
_CODE_SETTINGS = frozenset({"__code__", "__class__"})
# What only names or describes a class: library code that makes a class for sandboxed code
# (namedtuple, with type() in its own frame) names it after the fact, and until then the
# class's __module__ is the library's.
_NAMING_DUNDERS = frozenset({"__module__", "__qualname__", "__name__", "__doc__"})

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_IMPORT_SUFFIXES = (".py", ".pyc", ".so", ".pth", ".zip", ".egg")


def _under(path: str, dirs: tuple[str, ...] | list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


# What the enforcement uses and sandboxed code must never hold (the real __import__,
# sys.modules, the import system's globals with the real builtins, the stack), and its
# mutable state: module globals, not attributes of the _Enforcer, so that the enforcer, if
# it ever leaked, hands out none of them by a plain attribute name.
_real_import = _builtins_module.__import__
_modules = sys.modules
_import_system_globals = tuple(
    vars(sys.modules[m]) for m in ("_frozen_importlib", "_frozen_importlib_external",
                                    "zipimport") if m in sys.modules)
_views: dict[str, types.ModuleType] = {}
_machinery: dict[tuple[str, str], object] = {}
# _own_frame(depth): ``sys._getframe(depth)`` as the function that calls it would see it
# (0: that function), or None past the stack's bottom; read through the C API, which raises
# no audit event for the hook to judge (seal.c).
_own_frame: Callable[[int], types.FrameType | None] = _core.frame_at


def _sealed(fn: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
    """``fn`` as the interpreter, sandboxed code or a library may call it: behind the seal
    (seal.c), which refuses to run it once anything rewrote the enforcement's state (the
    namespaces ``install`` seals). It exposes only its name and doc: no ``__self__``,
    ``__wrapped__``, ``__globals__`` or closure, and it binds as a method as a function
    does, so it may stand for one in a library class."""
    return _core.guarded(fn, name if name is not None else fn.__name__, fn.__doc__)


def _module_namespace(namespace: object) -> bool:
    """Whether ``namespace`` is the namespace of a loaded module other than ``__main__``:
    the library's, where code runs with the real builtins."""
    name = dict.get(namespace, "__name__") if type(namespace) is dict else None
    if type(name) is not str or name == "__main__":
        return False
    return getattr(_modules.get(name), "__dict__", None) is namespace


def _import_system_frame(frame: types.FrameType) -> bool:
    return any(frame.f_globals is g for g in _import_system_globals)


class _Enforcer(tuple):  # type: ignore[type-arg]  # its fields: the properties below
    """The installed policy: its builtins, its import gate, its audit hook.

    Read-only once made: its fields are the items of a tuple, which no Python code can
    change, read through properties over ``operator.itemgetter`` (which hands out nothing
    else), and the audit hook refuses changing the class. What decides what is allowed
    cannot be rewritten by code that got hold of the enforcer (through a getter that
    skipped the name rule, say). Slots made read-only did not hold: a property's getter
    kept the slot's member descriptor reachable, and its ``__set__`` rewrote ``effects``
    (a red-team run found it).
    """

    __slots__ = ()

    if TYPE_CHECKING:
        name: str
        modules: tuple[str, ...]
        effects: tuple[str, ...]
        read_dirs: tuple[str, ...]
        write_dirs: tuple[str, ...]
        stdlib: str
        import_roots: tuple[str, ...]
        main_dict: dict[str, Any]
        builtins: dict[str, object]
        replacements: Mapping[tuple[str, str], Callable[..., object]]
    else:
        name = property(_itemgetter(0), doc="The policy's name.")
        modules = property(_itemgetter(1), doc="The modules it grants.")
        effects = property(_itemgetter(2), doc="The effects it grants.")
        read_dirs = property(_itemgetter(3), doc="Where open() may read.")
        write_dirs = property(_itemgetter(4), doc="Where open() may write.")
        stdlib = property(_itemgetter(5), doc="The standard library's directory.")
        import_roots = property(_itemgetter(6), doc="Where imports may read files.")
        main_dict = property(_itemgetter(7), doc="The sandbox's __main__ namespace.")
        builtins = property(_itemgetter(8), doc="The builtins sandboxed code gets.")
        replacements = property(_itemgetter(9), doc="Guarded stand-ins, by (module, name).")

    def __new__(cls, spec: PolicySpec) -> _Enforcer:
        (_, name, modules, granted, effects, read_dirs, write_dirs) = spec
        stdlib = posixpath.dirname(posixpath.realpath(os.__file__))
        # Filled below: their contents are bound methods of the enforcer itself.
        builtins: dict[str, object] = {}
        replacements: dict[tuple[str, str], Callable[..., object]] = {}
        self = super().__new__(cls, (
            "".join([name]),
            tuple("".join([m]) for m in modules),
            tuple("".join([e]) for e in effects),
            tuple(read_dirs),
            tuple(write_dirs),
            stdlib,
            tuple(sorted({posixpath.realpath(p or os.getcwd()) for p in sys.path} | {stdlib})),
            sys.modules["__main__"].__dict__,
            builtins,
            types.MappingProxyType(replacements),
        ))
        builtins.update(self._make_builtins(granted))
        replacements.update(self._make_replacements())
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"the sandbox's policy is read-only (setting {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"the sandbox's policy is read-only (deleting {name!r})")

    # -- policy questions --------------------------------------------------------------------

    def allows_import(self, module: str) -> bool:
        # Only a plain str: a subclass answers ==, startswith and hash as it likes.
        return type(module) is str and _grants.grants(self.modules, module)

    def _import_refused(self, module: str) -> ImportError:
        top = module.partition(".")[0]
        if not _grants.grants((top,), module):
            top = module  # a program inside a package: granted only by its own name
        return ImportError(f"the sandbox's policy {self.name!r} does not allow importing "
                           f"{module!r} (widen it with .allow_import({top!r}))", name=module)

    def refuse(self, what: str, effect: str) -> PolicyError:
        return PolicyError(f"the sandbox's policy {self.name!r} does not allow {what} "
                           f"(effect {effect!r})")

    # -- builtins ----------------------------------------------------------------------------

    # The guards have the signatures of the builtins they stand for, and still check their
    # arguments at run time: sandboxed code calls them with whatever it likes.

    def _make_builtins(self, granted: tuple[str, ...]) -> dict[str, object]:
        real = vars(_builtins_module)
        guarded = {
            name: _sealed(method, name) for name, method in (
                ("getattr", self._getattr), ("hasattr", self._hasattr),
                ("setattr", self._setattr), ("delattr", self._delattr), ("vars", self._vars),
                ("exec", self._exec), ("eval", self._eval), ("compile", self._compile),
                ("globals", self._globals), ("locals", self._locals))
        }
        out: dict[str, object] = {"__name__": "builtins", "__doc__": None, "__debug__": __debug__}
        for name, value in real.items():
            if isinstance(value, type) and issubclass(value, BaseException):
                out[name] = value
        for name in granted:
            if name in guarded:
                out[name] = guarded[name]
            elif name in real and name not in ("__import__", "__loader__", "__spec__"):
                out[name] = real[name]
        out["__import__"] = _sealed(self._import, "__import__")
        return out

    def _checked_name(self, name: object, setting: bool = False) -> str:
        if not isinstance(name, str):
            raise TypeError(f"attribute name must be string, not '{type(name).__name__}'")
        name = "".join([name])  # a plain str: no subclass can answer differently later
        if not attribute_allowed(name, setting) or (name in _FORMAT_NAMES and not setting):
            raise PolicyError(f"the sandbox's policy {self.name!r} does not allow the "
                              f"attribute {name!r}")
        return name

    def _getattr(self, obj: object, name: str, *default: object) -> Any:
        return getattr(obj, self._checked_name(name), *default)

    def _hasattr(self, obj: object, name: str) -> bool:
        try:
            name = self._checked_name(name)
        except PolicyError:
            return False
        return hasattr(obj, name)

    def _setattr(self, obj: object, name: str, value: object) -> None:
        return setattr(obj, self._checked_name(name, setting=True), value)

    def _delattr(self, obj: object, name: str) -> None:
        return delattr(obj, self._checked_name(name, setting=True))

    def _vars(self, *obj: object) -> dict[str, Any]:
        if not obj:
            raise PolicyError("vars() without an argument is not available in a sandbox "
                            "under a policy: use locals()")
        # The same rule as getattr: a name getattr refuses is not in the copy either
        # (vars(str)["format"] would be str.format on any template).
        return {k: v for k, v in vars(*obj).items() if name_allowed(k)}

    def _calling_frame(self, builtin: str) -> types.FrameType:
        """The frame of the code that called the guarded ``builtin``, which must be
        sandboxed code. The real globals() and locals() answer for the frame that called
        them: handed to a library function as a callback (a class attribute its method
        calls as ``self.x()``, a functools.partial), they answered with the library
        module's globals, which hold the real builtins."""
        frame = _own_frame(2)  # 0: here, 1: _globals/_locals, 2: the caller (the guard is C)
        if frame is not None and self._sandboxed_frame(frame):
            return frame
        caller = ("no Python code" if frame is None else
                  f"{frame.f_code.co_name!r} of {dict.get(frame.f_globals, '__name__')!r}")
        raise PolicyError(f"the sandbox's policy {self.name!r} lets {builtin}() answer only "
                          f"for sandboxed code, not for library code that calls it (here "
                          f"{caller}): call {builtin}() yourself and pass on what it returns")

    def _globals(self) -> dict[str, Any]:
        return self._calling_frame("globals").f_globals

    def _locals(self) -> Mapping[str, object]:
        # f_locals of a function's frame is a live proxy on 3.13+ (PEP 667), where
        # locals() returns a snapshot: the same here.
        namespace = self._calling_frame("locals").f_locals
        return namespace if type(namespace) is dict else dict(namespace)

    def _compile(self,
                 source: str | ReadableBuffer | ast.Module | ast.Expression | ast.Interactive,
                 filename: str | bytes | os.PathLike[Any], mode: str, flags: int = 0,
                 dont_inherit: bool = False, optimize: int = -1, **kwargs: Any) -> Any:
        # A plain str filename: a str subclass stayed the code's co_filename, and lied
        # to the path checks of everyone who later read "its" file (round 18).
        name = _plain_path(filename)
        code = compile(source, os.fsdecode(name) if name is not None else filename, mode,
                       flags, True, optimize, **kwargs)
        if isinstance(code, types.CodeType):
            check_code(code, self.name)
        return code

    def _code_for(self, source: str | ReadableBuffer | types.CodeType,
                  mode: str) -> types.CodeType:
        if isinstance(source, types.CodeType):
            check_code(source, self.name)
            return source
        if isinstance(source, (str, bytes, bytearray)) and mode == "eval":
            if isinstance(source, str):
                source = source.lstrip(" \t")
            else:
                source = source.lstrip(b" \t")
        # Without flags (no ast.PyCF_ONLY_AST), compile() makes a code object.
        code: types.CodeType = self._compile(source, "<string>", mode)
        return code

    def _namespace(self, globals_: dict[str, Any] | None, locals_: Mapping[str, object] | None,
                   ) -> tuple[dict[str, Any], Mapping[str, object]]:
        if globals_ is None:
            globals_ = self.main_dict
        if not isinstance(globals_, dict):
            raise TypeError("globals must be a dict")
        dict.setdefault(globals_, "__builtins__", self.builtins)
        return globals_, globals_ if locals_ is None else locals_

    def _exec(self, source: str | ReadableBuffer | types.CodeType,
              globals: dict[str, Any] | None = None, locals: Mapping[str, object] | None = None,
              /, **kwargs: Any) -> None:
        code = self._code_for(source, "exec")
        g, loc = self._namespace(globals, locals)
        return exec(code, g, loc, **kwargs)

    def _eval(self, source: str | ReadableBuffer | types.CodeType,
              globals: dict[str, Any] | None = None, locals: Mapping[str, object] | None = None,
              /) -> Any:
        code = self._code_for(source, "eval")
        g, loc = self._namespace(globals, locals)
        return eval(code, g, loc)

    # -- the import gate and module views ----------------------------------------------------

    def _import(self, name: str, globals: Mapping[str, object] | None = None,
                locals: Mapping[str, object] | None = None,
                fromlist: Sequence[str] | None = (), level: int = 0) -> types.ModuleType:
        if level:
            raise ImportError("relative imports are not available in a sandbox under a "
                              "policy", name=name)
        if not isinstance(name, str):
            raise TypeError(f"module name must be str, not {type(name).__name__}")
        name = "".join([name])
        if not self.allows_import(name):
            raise self._import_refused(name)
        _real_import(name, None, None, (), 0)
        if fromlist:
            for item in fromlist:
                # An exact str: a subclass's own startswith and __format__ would choose
                # which submodule names are tried (a red-team run, round 12).
                item = "".join([item]) if isinstance(item, str) else None
                if item is not None and not item.startswith("_") and item != "*":
                    sub = f"{name}.{item}"
                    if self.allows_import(sub):
                        try:
                            _real_import(sub, None, None, (), 0)
                        except ModuleNotFoundError:
                            pass  # an attribute, not a submodule
            return self.view(name)
        return self.view(name.partition(".")[0])

    def view(self, name: str) -> types.ModuleType:
        """The module as sandboxed code sees it: public attributes, submodules as views."""
        if type(name) is not str:
            raise TypeError(f"module name must be str, not {type(name).__name__}")
        v = _views.get(name)
        if v is not None:
            return v
        real = _modules[name]
        full = self.allows_import(name)
        v = types.ModuleType(name, getattr(real, "__doc__", None) if full else None)
        public: list[str] = []
        if full:
            listed = getattr(real, "__all__", None)
            names = listed if isinstance(listed, (list, tuple)) else list(vars(real))
            public = sorted({n for n in names if isinstance(n, str) and not n.startswith("_")
                             and n not in _DROPPED.get(name, ())})
        enforcer = self

        listed_names = frozenset(public)

        def __getattr__(attr: str, _real: types.ModuleType = real,  # noqa: N807
                        _full: bool = full, _name: str = name,
                        _listed: frozenset[str] = listed_names) -> object:
            return enforcer._view_attribute(_name, _real, _full, attr, _listed)

        # Module attributes, not methods: a module's __getattr__ and __dir__ are looked up
        # in its namespace (PEP 562), which is what these assignments fill.
        v.__getattr__ = _sealed(__getattr__)  # type: ignore[method-assign]
        v.__all__ = public  # type: ignore[attr-defined]
        v.__dir__ = lambda: list(public)  # type: ignore[method-assign]
        _views[name] = v
        return v

    def _view_attribute(self, name: str, real: types.ModuleType, full: bool, attr: str,
                        listed: frozenset[str] = frozenset()) -> object:
        sub = f"{name}.{attr}"
        value = vars(real).get(attr, _MISSING)
        if value is _MISSING and type(attr) is str and attr in listed:
            # A public name the module makes on first use, through its own __getattr__
            # (PEP 562): typing's ForwardRef, Pattern, Match on 3.14. Only names the view
            # lists (its __all__), which are never private.
            value = getattr(real, attr, _MISSING)
        module_name = (value.__name__ if isinstance(value, types.ModuleType)
                       else sub if value is _MISSING and sub in _modules else None)
        if isinstance(value, types.ModuleType) and (
                type(module_name) is not str or _modules.get(module_name) is not value):
            # A module that is not the one its name says: its __name__ may be an object of
            # sandboxed code's (a str subclass that importlib took as a name once and that
            # later hashed and compared like "sys": a red-team run got a view of sys so).
            raise self._import_refused(sub)
        if module_name is not None:
            if self.allows_import(module_name):
                if module_name not in _modules:
                    _real_import(module_name, None, None, (), 0)
                return self.view(module_name)
            # An ImportError, not an AttributeError: `from pkg import sub` falls back to
            # sys.modules["pkg.sub"] when the attribute lookup raises AttributeError.
            raise self._import_refused(module_name)
        if attr.startswith("_") or not full or value is _MISSING:
            raise AttributeError(f"module {name!r} has no attribute {attr!r} in this sandbox")
        if attr in _DROPPED.get(name, ()):
            raise AttributeError(f"{name}.{attr} is not available in a sandbox under a "
                                 f"policy: {_DROP_REASONS[attr]}")
        replacement = self.replacements.get((name, attr))
        return value if replacement is None else replacement

    def _make_replacements(self) -> dict[tuple[str, str], Callable[..., object]]:
        """Library functions that look attributes up by a name the caller gives.

        Each checks the names once, as plain ``str`` (a subclass could answer ``split`` or
        ``==`` one way to the check and another way later), and returns a plain function
        that does the lookups with those checked names. Never the real ``attrgetter``/
        ``methodcaller`` object or a ``functools.partial`` of the real ``update_wrapper``:
        their type, or their ``.func``, is the unguarded function.
        """
        import functools

        checked = self._checked_name
        real_getattr = getattr

        def attrgetter(attr: str, *attrs: str) -> Callable[[object], object]:
            paths = []
            for dotted in (attr, *attrs):
                if not isinstance(dotted, str):
                    raise TypeError("attribute name must be a string")
                paths.append(tuple(checked(part) for part in str.split(dotted, ".")))
            walks = tuple(paths)

            def attrgetter(obj: object, /) -> object:
                values = []
                for path in walks:
                    value = obj
                    for part in path:
                        value = real_getattr(value, part)
                    values.append(value)
                return values[0] if len(values) == 1 else tuple(values)

            attrgetter.__qualname__ = 'attrgetter'
            return attrgetter

        def methodcaller(name: str, /, *args: Any, **kwargs: Any) -> Callable[[object], object]:
            method = checked(name)

            def methodcaller(obj: object, /) -> object:
                return real_getattr(obj, method)(*args, **kwargs)

            methodcaller.__qualname__ = 'methodcaller'
            return methodcaller

        defaults = (frozenset(functools.WRAPPER_ASSIGNMENTS),
                    frozenset(functools.WRAPPER_UPDATES))

        def plain_names(names: Iterable[str], default: frozenset[str],
                        setting: bool = False) -> tuple[str, ...]:
            out = []
            for name in names:
                if not isinstance(name, str):
                    raise TypeError(f"attribute name must be string, not "
                                    f"'{type(name).__name__}'")
                name = "".join([name])  # a plain str, compared and used as itself
                if name not in default:
                    checked(name)
                    # `assigned` names are set on the wrapper too, which may be a library
                    # function: setting __all__ on the guarded getattr let `import *` read
                    # __globals__ from it (a red-team run).
                    if setting:
                        checked(name, setting=True)
                out.append(name)
            return tuple(out)

        def update_wrapper(wrapper: Callable[..., object], wrapped: Callable[..., object],
                           assigned: Iterable[str] = functools.WRAPPER_ASSIGNMENTS,
                           updated: Iterable[str] = functools.WRAPPER_UPDATES,
                           ) -> Callable[..., object]:
            assigned = plain_names(assigned, defaults[0], setting=True)
            updated = plain_names(updated, defaults[1])
            # __dict__ (a default) copies every entry of wrapped's namespace: of a class,
            # that is str.format, type.__subclasses__...; into a dict the caller may own
            # (a class-body `__dict__ = d`). Copied here through the vars() filter.
            functools.update_wrapper(wrapper, wrapped, assigned,
                                     tuple(n for n in updated if n != "__dict__"))
            if "__dict__" in updated:
                namespace = real_getattr(wrapped, "__dict__", {})
                real_getattr(wrapper, "__dict__").update(
                    {k: v for k, v in namespace.items() if name_allowed(k)})
            return wrapper

        def wraps(wrapped: Callable[..., object],
                  assigned: Iterable[str] = functools.WRAPPER_ASSIGNMENTS,
                  updated: Iterable[str] = functools.WRAPPER_UPDATES,
                  ) -> Callable[[Callable[..., object]], Callable[..., object]]:
            assigned = plain_names(assigned, defaults[0], setting=True)
            updated = plain_names(updated, defaults[1])

            def wraps(wrapper: Callable[..., object]) -> Callable[..., object]:
                return update_wrapper(wrapper, wrapped, assigned, updated)

            wraps.__qualname__ = 'wraps'
            return wraps

        for fn in (attrgetter, methodcaller, update_wrapper, wraps):
            fn.__qualname__ = fn.__name__
        replacements = {("operator", "attrgetter"): _sealed(attrgetter),
                        ("operator", "methodcaller"): _sealed(methodcaller),
                        ("functools", "update_wrapper"): _sealed(update_wrapper),
                        ("functools", "wraps"): _sealed(wraps)}
        replacements.update(self._without_dir_fd())
        return replacements

    def _without_dir_fd(self) -> dict[tuple[str, str], Callable[..., object]]:
        """os's functions that take a directory's file descriptor, refusing one. The audit
        event of os.open carries no dir_fd: a path relative to a descriptor was checked as
        if relative to the working directory, and read and wrote outside the grants (a
        red-team run, round 19). A sandbox with os granted uses paths."""
        policy_name = self.name
        names = {fn.__name__ for fn in os.supports_dir_fd} | {"rename", "replace", "link"}

        def refusing(real: Callable[..., object]) -> Callable[..., object]:
            def without_dir_fd(*args: object, **kwargs: object) -> object:
                for key, value in kwargs.items():
                    if type(key) is not str:
                        raise TypeError("keyword names must be str")
                    if key.endswith("dir_fd") and value is not None:
                        raise PolicyError(f"the sandbox's policy {policy_name!r} does not "
                                          f"allow {real.__name__}() relative to a directory's "
                                          f"file descriptor ({key}=); give a path")
                return real(*args, **kwargs)
            without_dir_fd.__name__ = without_dir_fd.__qualname__ = real.__name__
            return _sealed(without_dir_fd)

        return {("os", name): refusing(getattr(os, name)) for name in sorted(names)
                if callable(getattr(os, name, None))}

    # -- requests ----------------------------------------------------------------------------

    def exec_source(self, source: str) -> None:
        """Sandbox.exec(): checked, then run in ``__main__`` with the policy's builtins."""
        code = compile(source, "<sandbox>", "exec", dont_inherit=True)
        check_code(code, self.name)
        exec(code, self.main_dict)

    def make_function(self, code_bytes: bytes, name: str, qualname: str,
                      module_name: str | None, ncells: int,
                      key: tuple[int, int] | None = None,
                      globals_id: int = 0) -> types.FunctionType:
        """A function that crossed by value: checked, with ``__main__``'s globals.
        (Never one of this sandbox's own coming back: what it sends out is inert.)"""
        code = marshal.loads(code_bytes)
        if not isinstance(code, types.CodeType):
            raise TypeError("a function crossed without code")
        check_code(code, self.name)
        closure = tuple(types.CellType() for _ in range(ncells)) or None
        fn = types.FunctionType(code, self.main_dict, name, None, closure)
        fn.__qualname__ = qualname
        fn.__module__ = module_name  # type: ignore[assignment]
        vars(fn)[_crossing._KEY_ATTR] = key   # a copy: _crossing._fill_function fills it
        return fn

    def loads(self, data: bytes, refs: tuple[object, ...]) -> object:
        try:
            return _PolicyUnpickler(self, data, refs).load()
        except ImportError as exc:
            # Raised before any code of the call ran, often for a module the user's code
            # never names: a dataclass of the script is made again with dataclasses.
            exc.add_note("raised while the sandbox loaded the call's function and "
                         "arguments, before any of them ran; a module your code never "
                         "imports may be one that a class of your script is made again "
                         "with, as it crosses by value (a dataclass needs dataclasses, an "
                         "enum enum): grant it, or define the class in a module of your own "
                         "and grant that module")
            raise

    def find_class(self, module: str, name: str) -> object:
        special = _machinery.get((module, name))
        if special is not None:
            return special
        if module == "builtins":
            value = self.builtins.get(name)
            if value is None or name.startswith("_"):
                raise PolicyError(f"the sandbox's policy {self.name!r} does not grant the "
                                  f"builtin {name!r}")
            return value
        if not self.allows_import(module):
            raise self._import_refused(module)
        obj: object = self._import(module, fromlist=("*",))
        for i, part in enumerate(name.split(".")):
            if _is_dunder(part) or not attribute_allowed(part):
                raise PolicyError(f"the sandbox's policy {self.name!r} refuses "
                                  f"{module}.{name}")
            if i == 0 and part.startswith("_"):
                # A private helper that pickle names (re._compile for a Pattern): taken
                # from the module itself, and only these. Any other private helper of a
                # granted module would be handed to what the pickle calls: with pickle
                # granted (round 15), or in the trial load of an exception, a helper such
                # as dataclasses._create_fn runs code in globals the pickle chooses.
                if (module, part) not in _PRIVATE_RECONSTRUCTORS:
                    raise PolicyError(f"the sandbox's policy {self.name!r} refuses "
                                      f"{module}.{name}: a private name")
                obj = getattr(_modules[module], part)
                if isinstance(obj, types.ModuleType):
                    raise self._import_refused(obj.__name__)
            else:
                obj = getattr(obj, part)
        return obj

    # -- the audit hook ----------------------------------------------------------------------

    def _sandboxed_frame(self, frame: types.FrameType) -> bool:
        """Whether ``frame`` runs sandboxed code (see the top of this module)."""
        return frame.f_builtins is self.builtins or not _module_namespace(frame.f_globals)

    def _raiser(self, depth: int) -> types.FrameType | None:
        """The frame of the code that raised the event being audited, ``depth`` calls of
        ours below the hook; None when it was raised from C with no Python frame (an
        interrupt)."""
        return _own_frame(3 + depth)  # 0: here, 1: our caller, 2: the hook, 3: who raised it

    def _sandboxed_caller(self, depth: int = 0) -> bool:
        """Whether the code that raised the event being audited is sandboxed code, or may
        be: with no Python frame at all, it is C run for no one in particular, such as a
        finalizer a pool's gate thread runs as it drops a task's objects (round 14)."""
        frame = self._raiser(depth)
        return frame is None or self._sandboxed_frame(frame)

    def _code_event_refused(self, event: str, args: tuple[object, ...]) -> bool:
        """Whether ``event`` (making code or a function, marshal, setting __code__ or
        __class__, a library function's or class's dunder) is refused: always under a
        policy, unless raised by one of our own loaders for what it made itself (_MAKERS:
        they check the code they make), by the import system unmarshalling a module, or by what
        3.14's annotationlib may do (_annotationlib_may); or from C with no Python frame
        (Sandbox.interrupt()'s async exception).

        Not "when sandboxed code is on the stack": a worker thread always has it at the
        bottom (the boot code runs in __main__), but a pool's gate thread runs a task's
        handlers with none, and the trial load of an exception the task raised, after the
        task's frames are gone, called what the exception's reductions chose:
        FunctionType(code, {}) then made a function with the real builtins (a red-team
        run, round 7)."""
        frame = self._raiser(0)
        if frame is None:
            # Only Sandbox.interrupt()'s async exception is raised from C with no Python
            # frame for us. A finalizer that a pool's gate thread runs, frameless, as it
            # drops a task's result (a __del__ that is a C callable: map(FunctionType,
            # [code], [{}]).__next__) made a function there, which took the interpreter's
            # own builtins, the real ones (a red-team run, round 14).
            return event != "cpython.PyThreadState_SetAsyncExc"
        if _import_system_frame(frame):
            return event not in _IMPORT_SYSTEM_CODE_EVENTS
        permits = _MAKERS.get(frame.f_code)
        if permits is not None:
            local = permits.get(event)
            return local is None or not _made_by(frame, local, args)
        return not self._annotationlib_may(frame, event, args)

    def _raised_by_our_pickler(self) -> bool:
        """Whether the event comes from _crossing's frames (its pickler saving a global)."""
        frame = self._raiser(0)
        return frame is not None and frame.f_globals is vars(_crossing)

    def _library_function(self, obj: object) -> bool:
        """Whether ``obj`` is a function of a loaded module (not one sandboxed code, or a
        library on its behalf, made in a namespace of its own): its __defaults__ and
        __kwdefaults__ are the library's, for every caller in this sandbox."""
        return isinstance(obj, types.FunctionType) and _module_namespace(obj.__globals__)

    def _library_class(self, obj: object) -> bool:
        """Whether ``obj`` is a class of a loaded module other than ``__main__``, by the
        ``__module__`` its namespace holds: the library's classes, and any class whose
        body claims a loaded module (sandboxed code's own classes are ``__main__``'s, as
        are the ones namedtuple, dataclasses, enum and typing make for it). Its dunders
        shape what library code does with its instances, for every caller."""
        if not isinstance(obj, type):
            return False
        name = vars(obj).get("__module__")
        return type(name) is str and name != "__main__" and name in _modules

    def _annotationlib_may(self, frame: types.FrameType, event: str,
                           args: tuple[object, ...]) -> bool:
        """3.14's annotationlib, which typing and dataclasses call for annotations as
        forward references, makes a function of an annotate function's code with globals
        of its own (``call_annotate_function``), and turns its stand-ins for missing
        names into ForwardRef objects by setting their ``__class__``. The first is let
        through only where those globals carry this policy's builtins: a function made
        with globals that have no ``__builtins__`` runs with the builtins of the frame
        that made it, annotationlib's, the real ones, and the annotate function whose
        code it runs may be any function sandboxed code wrote (its STRING format, and a
        second FORWARDREF try, use such globals: refused under a policy)."""
        annotationlib = _modules.get("annotationlib")
        if annotationlib is None or frame.f_globals is not getattr(annotationlib,
                                                                   "__dict__", None):
            return False
        if event == "object.__setattr__":
            # Only what transmogrify does: a stand-in of its own becomes a ForwardRef (a C
            # callable run from its frame must not set any other __class__: round 12).
            return (frame.f_code.co_name == "transmogrify" and len(args) > 2
                    and type(args[0]) is getattr(annotationlib, "_Stringifier", None)
                    and args[1] == "__class__"
                    and args[2] is getattr(annotationlib, "ForwardRef", None))
        if event != "function.__new__" or frame.f_code.co_name != "call_annotate_function":
            return False
        made_with = frame.f_locals.get("globals")
        return isinstance(made_with, dict) and dict.get(made_with,
                                                        "__builtins__") is self.builtins

    def _import_system_caller(self) -> bool:
        """Whether the event comes from the import system running a module's code."""
        frame = _own_frame(2)  # 0: here, 1: the hook, 2: who raised the event
        return frame is not None and _import_system_frame(frame)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "sys._getframe" or event == "sys._getframemodulename":
            if self._sandboxed_caller():
                raise PolicyError(f"the sandbox's policy {self.name!r} does not allow "
                                  f"frame access ({event})")
            return
        if event == "open":
            self._check_open(*args[:3])
        elif event in _LISTING_EVENTS:
            self._check_listing(event, args)
        elif event in _INTROSPECTION_EVENTS:
            raise self.refuse(event, "introspection")
        elif event in _SANDBOXED_CODE_EVENTS:
            if self._sandboxed_caller():
                raise self.refuse(f"{event} from sandboxed code", "introspection")
        elif event in _CODE_EVENTS:
            if self._code_event_refused(event, args):
                raise self.refuse(f"{event}, by anyone but the sandbox's loaders",
                                  "introspection")
        elif event == "object.__setattr__" or event == "object.__delattr__":
            # Raised by the setters of a type's own descriptors (__name__, __qualname__,
            # __module__, __doc__, __bases__, __abstractmethods__, __annotations__...), of
            # a function's __code__/__defaults__/__kwdefaults__, and of __class__; not by
            # a plain class attribute, which no audit event reports. The enforcement's own
            # classes are never changed once installed (their methods decide what is
            # allowed).
            if args and any(args[0] is cls for cls in _SEALED_CLASSES):
                raise self.refuse(f"changing {args[0].__name__}", "introspection")
            name = args[1] if len(args) > 1 else None
            if isinstance(name, str) and _is_dunder(name):
                if (name in _CODE_SETTINGS or self._library_function(args[0])
                        or (name not in _NAMING_DUNDERS and self._library_class(args[0]))):
                    if self._code_event_refused(event, args):
                        raise self.refuse(f"setting {name!r} of {type(args[0]).__name__} "
                                          f"{getattr(args[0], '__qualname__', '?')!r}",
                                          "introspection")
                elif self._sandboxed_caller():
                    raise self.refuse(f"setting {name!r} from sandboxed code",
                                      "introspection")
        elif event == "exec":
            # Any code run by anyone but the import system is checked: library code that
            # evaluates a string the user chose (typing.get_type_hints evaluating string
            # annotations, reached through functools.singledispatch) runs it as library
            # code, out of the other layers' sight.
            code = args[0] if args else None
            if isinstance(code, types.CodeType) and not self._import_system_caller():
                check_code(code, self.name)
        elif event == "import":
            name = args[0] if args else None
            if type(name) is not str:
                # importlib hashes, compares and splits the name with its own methods:
                # a str subclass steers which module it loads and where it binds it.
                raise ImportError(f"the sandbox's policy {self.name!r} imports modules only "
                                  f"by a plain str name, not by a {type(name).__name__}")
            effect = _EFFECT_ONLY_MODULES.get(name)
            if effect is not None and effect not in self.effects:
                raise self.refuse(f"importing {name}", effect)
            if name in _GUARDED_ON_IMPORT and name not in _guarded_modules:
                # Import it here, fully, and patch it before anyone gets it: the import
                # system then finds it in sys.modules. Then seal it (seal.c): rebinding
                # a patched function there would undo the patch.
                _guarded_modules.add(name)
                module = _real_import(name)
                _guard_on_import(self, module)
                _core.seal(_patched_namespaces(module), PolicyError)
            if (name not in _modules and not self.allows_import(name)
                    and self._raised_by_our_pickler()):
                # pickle imports the module a global names (an object's __module__, which
                # a class body sets) with the real __import__, from our frame.
                raise self._import_refused(name)
            self._check_import(args)
        elif event == "pickle.find_class":
            self._check_pickle_global(*args[:2])
        elif event in _WRITE_EVENTS:
            self._check_path_effect(event, args, "write", self.write_dirs)
        elif event in _PROCESS_EVENTS or event.startswith(("os.exec", "os.spawn",
                                                           "os.posix_spawn")):
            if "processes" not in self.effects:
                raise self.refuse(f"{event}{_short(args)}", "processes")
        elif event in _HOOK_EVENTS:
            if "hooks" not in self.effects:
                raise self.refuse(event, "hooks")
        elif event in _THREAD_EVENTS:
            if "threads" not in self.effects:
                raise self.refuse("starting threads", "threads")
        elif event.startswith(_NETWORK_PREFIXES):
            if "network" not in self.effects:
                raise self.refuse(f"{event}{_short(args)}", "network")
        elif event.startswith(_NATIVE_PREFIXES):
            if "native" not in self.effects:
                raise self.refuse(event, "native")
        elif event == "mmap.__new__":
            if args and args[0] != -1 and not {"read", "write"} & set(self.effects):
                raise self.refuse("mapping a file into memory", "read")
        elif event.startswith("os."):
            # An os event this table does not know: refused unless processes are granted.
            if "processes" not in self.effects:
                raise self.refuse(f"{event}{_short(args)}", "processes")

    def _check_pickle_global(self, module: object, name: object) -> None:
        """C's Unpickler.find_class (pickle granted) imports ``module`` through the frame's
        __import__, the policy's gate, but then takes ``sys.modules[module]``, the real
        module, and walks the dotted ``name`` on it, dunders included: a red-team run
        (round 13) got the real sys (``pickle``'s ``sys``) and builtins
        (``json.decoder.__builtins__``) so. Whoever unpickles (library code may, for
        sandboxed code), the global must be what the sandbox's own loader would give for
        that name (its views, its name rule, its builtins): the very same object."""
        if type(module) is not str or type(name) is not str:
            raise self.refuse("unpickling a global named by anything but a str",
                              "introspection")
        ours = self.find_class(module, name)
        real: object = _modules.get(module)
        for part in name.split("."):
            real = getattr(real, part, _MISSING)
        if real is not ours:
            raise self.refuse(f"unpickling {module}.{name}, which is not what the sandbox "
                              f"sees under that name", "introspection")

    def _check_open(self, path: object, mode: object, flags: object) -> None:
        writing = ((isinstance(mode, str) and any(c in mode for c in "wax+"))
                   or (isinstance(flags, int) and bool(flags & _WRITE_FLAGS)))
        effect = "write" if writing else "read"
        dirs = self.write_dirs if writing else self.read_dirs
        if effect in self.effects:
            return
        if isinstance(path, int) or path is None:
            raise self.refuse(f"opening file descriptor {path!r}", effect)
        plain = _plain_path(path)
        if plain is None:
            raise self.refuse(f"opening a path given as a {type(path).__name__}", effect)
        name = os.fsdecode(plain)
        real = posixpath.realpath(name)
        if writing and _plants_code(real, self.import_roots):
            raise self.refuse(f"writing {name!r}, which the import system would load", effect)
        if _under(real, dirs):
            return
        if (not writing and real.endswith(_IMPORT_SUFFIXES) and _under(real, self.import_roots)
                and not self._sandboxed_caller(1) and _file_of_a_module(name, real)):
            return  # the import system (or a traceback) reading a module's file
        raise self.refuse(f"{'writing' if writing else 'reading'} {name!r}", effect)

    def _check_listing(self, event: str, args: tuple[object, ...]) -> None:
        if "read" in self.effects:
            return
        path = _plain_path(args[0]) if args else None
        if path is not None:
            real = posixpath.realpath(os.fsdecode(path))
            if _under(real, self.read_dirs):
                return
            raiser = self._raiser(1)
            if (_under(real, self.import_roots) and raiser is not None
                    and _import_system_frame(raiser)):
                return  # the import system listing a directory of sys.path (not glob
                # called by sandboxed code for it: round 19 listed the app's directory)
        raise self.refuse(f"listing {path!r} ({event})", "read")

    def _check_path_effect(self, event: str, args: tuple[object, ...], effect: str,
                           dirs: tuple[str, ...]) -> None:
        if effect in self.effects:
            return
        given = [a for a in args if isinstance(a, (str, bytes, os.PathLike))]
        paths = [_plain_path(a) for a in given]
        reals = [posixpath.realpath(os.fsdecode(p)) for p in paths if p is not None]
        if event in _LINKING_EVENTS:
            # A link leads wherever its target leads later, not where it led when made
            # (round 19 swapped a component of a checked target), and the caller follows
            # it too.
            raise self.refuse(f"making a link ({event})", effect)
        if effect == "write":
            roots = self.import_roots
            if any(_plants_code(real, roots) or _holds_a_root(real, roots) for real in reals):
                raise self.refuse(f"{event}{_short(args)}: a file or directory the import "
                                  f"system reads", effect)
            if event in _MOVING_EVENTS and len(reals) > 1 and _under(reals[1], roots):
                raise self.refuse(f"{event}{_short(args)}: moving into a directory the "
                                  f"import system reads", effect)
        if reals and len(reals) == len(given) and dirs and all(_under(real, dirs)
                                                               for real in reals):
            return
        raise self.refuse(f"{event}{_short(args)}", effect)

    def _check_import(self, args: tuple[Any, ...]) -> None:
        name = args[0] if args else None
        filename = args[1] if len(args) > 1 else None
        if filename is None or "native" in self.effects:
            return
        real = posixpath.realpath(os.fsdecode(filename))
        from_stdlib = _under(real, (self.stdlib,)) and "-packages/" not in real
        if not from_stdlib and not (isinstance(name, str) and self.allows_import(name)):
            raise self.refuse(f"loading native code {os.fsdecode(filename)!r}", "native")


_MISSING = object()
_installed = False
# Public attributes left out of module views: they look attributes up by name
# (string.Formatter), or are command-line programs that read the process's sys.argv, stdin
# and the files argv names, then print and exit (json.tool is left out whole, see _grants).
_DROPPED = {"string": ("Formatter",), "base64": ("main",), "random": ("main",)}
_DROP_REASONS = {"Formatter": "it looks attributes up by name",
                 "main": "it is a command-line program (sys.argv, stdin, files, exit)"}


def _plain_path(path: object) -> str | bytes | None:
    """The path an audit event's argument names, as C read it: a str or bytes subclass's
    own data (C reads it without calling a method; the checks called the subclass's
    startswith, split and decode, which described another path: a red-team run, round 18,
    read and wrote outside its grants so), or what a standard-library path object answers
    (pathlib's, os.DirEntry). None for anything else, which the checks refuse."""
    kind = type(path)
    if kind is str or kind is bytes:
        return path  # type: ignore[return-value]
    if issubclass(kind, str):
        return "".join([path])  # type: ignore[list-item]
    if issubclass(kind, bytes):
        return b"".join([path])  # type: ignore[list-item]
    # By identity only: nothing of a class of sandboxed code's (its metaclass's __hash__,
    # __module__ or __eq__) is asked.
    if any(kind is known for known in _library_path_types()):
        answer = os.fspath(path)  # type: ignore[call-overload]
        return _plain_path(answer) if type(answer) is not kind else None
    return None


def _library_path_types() -> tuple[type, ...]:
    """The standard library's path object classes that are loaded: pathlib's, and
    os.DirEntry (whose __fspath__ answers what their own state says)."""
    found: list[type] = []
    pathlib = _modules.get("pathlib")
    for name in ("PurePath", "PurePosixPath", "Path", "PosixPath"):
        value = getattr(pathlib, name, None) if pathlib is not None else None
        if isinstance(value, type):
            found.append(value)
    direntry = getattr(_modules.get("posix"), "DirEntry", None)
    if isinstance(direntry, type):
        found.append(direntry)
    return tuple(found)


def _plants_code(real: str, roots: tuple[str, ...]) -> bool:
    """Whether writing ``real`` puts a file the import system loads under a sys.path root:
    a module there shadows the standard library's for this sandbox and for the caller,
    whose next import runs it with no policy (round 18 planted statistics.py). Where
    sys.path holds '' or a relative entry, the root moves with the caller's working
    directory: anywhere may become one (round 19)."""
    return real.endswith(_IMPORT_SUFFIXES) and (_relative_import_root or _under(real, roots))


def _holds_a_root(real: str, roots: tuple[str, ...]) -> bool:
    """Whether ``real`` is a sys.path root or a directory above one: renaming, removing or
    replacing it swaps what the import system reads (round 19 renamed a directory of its
    own onto one)."""
    return any(_under(root, (real,)) for root in roots)


# Whether sys.path held '' or a relative entry when the policy was installed.
_relative_import_root = False
# Events that move or link a path to another: what arrives at the destination was not
# written there, so nothing checked its name (a package directory, a symlink).
_MOVING_EVENTS = frozenset({"os.rename", "shutil.move", "shutil.copytree"})
_LINKING_EVENTS = frozenset({"os.symlink", "os.link"})


def _file_of_a_module(name: str, real: str) -> bool:
    """Whether ``name`` (``real`` resolved) is the source or cached code of a module in
    sys.modules: the import system reads it after the module is in sys.modules, linecache
    for a library frame of a traceback. Any other file under sys.path is not library code's
    to read: a traceback of code sandboxed code compiled under a file's name, or
    warnings.formatwarning(..., filename, lineno), handed out lines of any .py file there
    (the app's settings.py: a red-team run, round 16)."""
    main = _modules.get("__main__")
    for module in list(_modules.values()):
        # Not the sandbox's __main__, whose namespace is sandboxed code's own: a top-level
        # `__file__ = ".../settings.py"` there made that file a module's (round 17). (Its
        # dict is not even read: a key of sandboxed code's could answer == as it likes.)
        if module is main or not issubclass(type(module), types.ModuleType):
            continue
        namespace = module.__dict__
        if type(namespace) is not dict or dict.get(namespace, "__builtins__") is (
                _installed_policy.builtins if _installed_policy is not None else None):
            continue
        spec = namespace.get("__spec__")
        for path in (namespace.get("__file__"), getattr(spec, "origin", None),
                     getattr(spec, "cached", None)):
            if type(path) is str and (path == name or path == real):
                return True
    return False


def _short(args: tuple[object, ...]) -> str:
    text = repr(args)
    return text if len(text) < 200 else text[:197] + "...)"


class _PolicyUnpickler(_crossing._Unpickler):
    """Unpickles requests: names resolve through the policy, never to the real builtins."""

    def __init__(self, enforcer: _Enforcer, data: bytes, refs: tuple[object, ...]) -> None:
        super().__init__(io.BytesIO(data), refs)
        self._enforcer = enforcer

    def find_class(self, module: str, name: str) -> object:
        return self._enforcer.find_class(module, name)


_SEALED_CLASSES = (_Enforcer, _PolicyUnpickler)


# Private helpers that pickle names for objects of granted modules, the only private names
# a pickle may load in the sandbox (the caller's loader has the same list: _untrusted).
_PRIVATE_RECONSTRUCTORS = frozenset({("re", "_compile"), ("array", "_array_reconstructor")})


def _guard_copy(enforcer: _Enforcer, module: types.ModuleType) -> None:
    """A bound method's C ``__reduce__`` answers ``(getattr, (self, __func__.__name__))``
    with the ``getattr`` of the frame that calls it: in ``copy.copy``'s frame, the real
    one, which ``copy._reconstruct`` then calls. A method of any callable named
    ``"__globals__"`` bound to a library function read its globals: the real builtins
    (a red-team run, round 15, with copy granted). The sandbox's ``_reconstruct`` calls
    the policy's ``getattr`` instead, which applies the name rule."""
    real_reconstruct = module._reconstruct
    real_getattr = _builtins_module.getattr
    policy_getattr = _sealed(enforcer._getattr, "getattr")

    def _reconstruct(x: Any, memo: Any, func: Any, args: Any, *rest: Any,
                     **kwargs: Any) -> Any:
        if func is real_getattr:
            func = policy_getattr
        return real_reconstruct(x, memo, func, args, *rest, **kwargs)

    setattr(module, "_reconstruct", _sealed(_reconstruct, "_reconstruct"))


# -- library code that looks names up, or evaluates strings, for the caller -------------------
# Reached through objects, not module attributes, so a view cannot hold a replacement: the
# library is changed in place (in this interpreter only), before sandboxed code runs. What
# the replacements close over (the originals) sits in closures, which the code check refuses.

def _guard_enum_property(policy_name: str) -> None:
    """``enum.property.__get__`` looks its own ``name`` up with ``getattr`` on ``_cls_type``
    (``_attr_type == 'attr'``) or on the instance's ``_value_`` (``'desc'``). All three are
    plain attributes anyone may set, and a class body binds ``name`` (``__globals__ = p``):
    ``type(vars(Enum)['name'])`` (reached from ``re.RegexFlag.mro()``) with name
    ``__globals__`` read any function's globals. Same lookups, each attribute read once,
    and the name must pass the rule ``getattr`` applies."""
    import enum

    def __get__(self: Any, instance: Any, ownerclass: Any = None) -> object:
        if instance is None:
            member = self.member
            if member is not None:
                return member
            raise AttributeError(f"{ownerclass!r} has no attribute {self.name!r}")
        fget = self.fget
        if fget is not None:
            return fget(instance)
        attr_type, name = self._attr_type, self.name
        if type(attr_type) is str and attr_type in ("attr", "desc"):
            if not name_allowed(name):
                raise PolicyError(f"the sandbox's policy {policy_name!r} does not allow the "
                                  f"attribute {name!r}")
            return getattr(self._cls_type if attr_type == "attr" else instance._value_, name)
        try:
            return ownerclass._member_map_[name]
        except KeyError:
            raise AttributeError(f"{ownerclass!r} has no attribute {name!r}") from None

    enum.property.__get__ = _sealed(__get__)  # type: ignore[method-assign]

    # 3.13+: EnumType._add_member_(name, member) does setattr(cls, name, ...) as library
    # code, so the audit hook's refusal of dunder assignment from sandboxed code did not
    # see it: re.RegexFlag._add_member_('__repr__', x), or re.I._add_alias_('__repr__'),
    # set a dunder of a library class. Enum never makes a dunder (or a blocked name) a member.
    add_member = vars(enum.EnumType).get("_add_member_")
    if add_member is not None:
        def _add_member_(cls: Any, name: str, member: object) -> None:
            if type(name) is not str or _is_dunder(name) or name in BLOCKED_NAMES:
                raise PolicyError(f"the sandbox's policy {policy_name!r} refuses the enum "
                                  f"member name {name!r}")
            add_member(cls, name, member)

        enum.EnumType._add_member_ = _sealed(_add_member_)  # type: ignore[attr-defined]

    # EnumType._convert_(name, module, filter) reads sys.modules[module] by the name it is
    # given and turns the globals it picks into members (random._os became a member whose
    # value was the real os). The attribute rule refuses the name, but names are looked up
    # other ways (a forward reference's LOAD_NAME in a class namespace: red-team round 16).
    # signal, socket and ssl call it from their own top level, for their own globals: only
    # that is let through.
    convert = vars(enum.EnumType).get("_convert_")
    if convert is not None:
        def _convert_(cls: Any, name: str, module: str, filter: Any, source: Any = None,
                      **kwargs: Any) -> Any:
            target = _modules.get(module) if type(module) is str else None
            caller = _core.frame_at(1)
            if (target is None or caller is None
                    or caller.f_globals is not getattr(target, "__dict__", None)):
                raise PolicyError(f"the sandbox's policy {policy_name!r} lets a module "
                                  f"convert only its own globals to enum members")
            return convert(cls, name, module, filter, source, **kwargs)

        enum.EnumType._convert_ = _sealed(_convert_)  # type: ignore[attr-defined]


def _guard_traceback_suggestions() -> None:
    """Formatting an ImportError with ``name_from`` (``from m import x`` failed) makes
    traceback suggest a name: it imports ``exc.name`` with the real ``__import__`` to
    read its ``dir()``. Sandboxed code raises ImportError with any name it likes, and
    the sandbox formats what it raises: a red-team run imported ungranted modules so, and,
    with a str subclass as the name, steered importlib. Here only a module that is
    already loaded, named by a plain str, is looked at."""
    original = traceback._compute_suggestion_error  # type: ignore[attr-defined]

    def _compute_suggestion_error(exc_value: BaseException, tb: object,
                                  wrong_name: object) -> object:
        if isinstance(exc_value, ImportError):
            name = exc_value.name
            if type(name) is not str or name not in _modules:
                return None
        return original(exc_value, tb, wrong_name)

    traceback._compute_suggestion_error = (  # type: ignore[attr-defined]
        _sealed(_compute_suggestion_error))


def _guard_forward_refs(enforcer: _Enforcer, module: types.ModuleType) -> None:
    """A ForwardRef evaluates its string in globals it is told of (``module=``, an
    owner's, explicit ones), or with the builtins of the frame that evaluates it in
    empty ones: typing's or annotationlib's, the real ones; and 3.14's annotationlib
    looks a bare name up in the real builtins module itself. A red-team run (round 7)
    got the real ``sys`` from ``ForwardRef('sys', module='subsandbox._enforce')``. Here,
    in the sandbox's copy of typing (3.12, 3.13) or annotationlib (3.14), a forward
    reference is evaluated only in globals that carry the policy's builtins, and
    annotationlib's bare names fall back on the policy's builtins."""
    builtins_of_policy = enforcer.builtins

    def refuse(ref: object) -> PolicyError:
        return PolicyError(f"the sandbox's policy {enforcer.name!r} evaluates a forward "
                           f"reference ({ref!r}) only in the globals of sandboxed code")

    def sandboxed_globals(g: object) -> bool:
        return type(g) is dict and dict.get(g, "__builtins__") is builtins_of_policy

    def harmless_locals(namespace: object) -> bool:
        # Names are looked up in the locals first: get_type_hints of a class swaps the
        # two, so the locals were sys.modules[cls.__module__]'s namespace, which a class
        # body names (a red-team run, round 10; round 11 named 'builtins', whose
        # namespace has no __builtins__ key). No module's namespace but the sandbox's.
        if namespace is None:
            return True
        if type(namespace) is not dict:
            return False
        if dict.get(namespace, "__builtins__") is builtins_of_policy:
            return True
        return "__builtins__" not in namespace and not any(
            getattr(m, "__dict__", None) is namespace for m in list(_modules.values()))

    def visible(namespace: dict[str, Any]) -> dict[str, Any]:
        # A bare name is a LOAD_NAME, which the code check does not read: looked up in a
        # class's namespace it gave what the attribute rule refuses by name (get_type_hints
        # of EnumType handed out _convert_, 3.14's evaluate(owner=object) the real
        # object.__getattribute__: red-team round 16). Only names the rule lets through.
        return {key: value for key, value in dict.items(namespace) if name_allowed(key)}

    if module.__name__ == "typing" and sys.version_info < (3, 14):
        forward_ref = module.ForwardRef
        real_evaluate = forward_ref._evaluate

        def _evaluate(self: Any, globalns: Any, localns: Any, *args: Any,
                      **kwargs: Any) -> Any:
            g = globalns if globalns is not None else localns
            named = self.__forward_module__
            if named is not None:
                g = (getattr(_modules.get(named), "__dict__", g) if type(named) is str
                     else None)
            if not sandboxed_globals(g) or not harmless_locals(localns):
                raise refuse(self)
            # The globals checked, passed on as such: nothing is looked up twice.
            return real_evaluate(self, g, visible(localns) if localns is not None else g,
                                 *args, **kwargs)

        forward_ref._evaluate = _sealed(_evaluate)
    elif module.__name__ == "annotationlib":
        forward_ref = module.ForwardRef
        real_evaluate = forward_ref.evaluate
        string_format = module.Format.STRING

        def evaluate(self: Any, *, globals: Any = None, locals: Any = None,
                     type_params: Any = None, owner: Any = None,
                     format: Any = module.Format.VALUE) -> Any:
            if format != string_format:
                arg = self.__forward_arg__
                # An identifier is looked up without eval, last as an attribute of the
                # builtins *module*, where a dunder is the module's own method
                # (__getattribute__, __setattr__): names the attribute rule lets through,
                # of a plain str (a subclass answers isidentifier() and == as it likes).
                if type(arg) is not str or (arg.isidentifier() and not name_allowed(arg)):
                    raise PolicyError(f"the sandbox's policy {enforcer.name!r} evaluates no "
                                      f"forward reference to the name {arg!r}: the "
                                      f"attribute rule refuses it")
                g, own = globals, owner if owner is not None else self.__owner__
                named = self.__forward_module__
                if g is None and named is not None:
                    g = (getattr(_modules.get(named), "__dict__", None)
                         if type(named) is str else None)
                if g is None and own is not None:
                    if isinstance(own, type):
                        name = getattr(own, "__module__", None)
                        g = (getattr(_modules.get(name), "__dict__", None)
                             if type(name) is str else None)
                    elif isinstance(own, types.ModuleType):
                        g = getattr(own, "__dict__", None)
                    elif callable(own):
                        g = getattr(own, "__globals__", None)
                if not sandboxed_globals(g) or not harmless_locals(locals):
                    raise refuse(self)
                globals = g  # passed on as checked: no owner's __globals__ read twice
                if locals is None and isinstance(own, type):
                    locals = dict(vars(own))  # what annotationlib would take, made visible()
                if locals is not None:
                    locals = visible(locals)
            return real_evaluate(self, globals=globals, locals=locals,
                                 type_params=type_params, owner=owner, format=format)

        forward_ref.evaluate = _sealed(evaluate, "evaluate")
        policy_builtins = types.ModuleType("builtins")
        vars(policy_builtins).update(builtins_of_policy)
        setattr(module, "builtins", policy_builtins)


def _guard_module_namespaces(enforcer: _Enforcer, module: types.ModuleType) -> None:
    """dataclasses runs the methods it writes (field names in their source) in the
    namespace of ``sys.modules[cls.__module__]``, or in empty globals, which take the real
    builtins; enum.global_enum writes a class's members into that namespace. A class body
    sets ``__module__`` to anything: an eighth red-team run put code in a field name of
    a class claiming ``subsandbox._enforce`` (where dataclasses is granted), and rewrote
    that module's globals with global_enum (where enum is). Here each acts on a class
    only where that namespace is the sandbox's own (it carries the policy's builtins),
    or for a module's own top-level code, as a library defines its classes."""
    def plain_module_name(cls: type) -> bool:
        """Whether ``cls.__module__``, as the library will read it, is the plain str in
        the class's own namespace: not a property of its metaclass (a data descriptor
        there wins over the class's namespace, and may answer differently each time: a
        red-team run, round 10), nor a metaclass's own __getattribute__."""
        meta = type(cls)
        if meta.__getattribute__ is not type.__getattribute__:
            return False
        mro: tuple[type, ...] = getattr(meta, "__mro__")
        for base in mro:
            if base is not type and base is not object and type(
                    vars(base).get("__module__", "")) is not str:
                return False
        return type(vars(cls).get("__module__")) is str

    def namespace_of(cls: object, own_module: types.ModuleType) -> dict[str, Any]:
        name = vars(cls).get("__module__") if isinstance(cls, type) else None
        if isinstance(cls, type) and not plain_module_name(cls):
            name = None  # what the library reads as cls.__module__ may be another name
        target = _modules.get(name) if type(name) is str else None
        namespace = getattr(target, "__dict__", None)
        if (type(namespace) is dict
                and dict.get(namespace, "__builtins__") is enforcer.builtins):
            return namespace
        frame: types.FrameType | None = _own_frame(2)
        while frame is not None and frame.f_globals is vars(own_module):
            frame = frame.f_back
        if (frame is not None and type(namespace) is dict and frame.f_globals is namespace
                and frame.f_code.co_name == "<module>"):
            return namespace
        raise PolicyError(f"the sandbox's policy {enforcer.name!r} refuses "
                          f"{own_module.__name__} for a class whose __module__ is {name!r}: it "
                          f"would run or write in that module's namespace; define the class "
                          f"in sandboxed code and leave __module__ alone")

    if module.__name__ == "dataclasses":
        real_process_class = module._process_class

        def _process_class(cls: Any, *args: Any, **kwargs: Any) -> Any:
            namespace_of(cls, module)
            return real_process_class(cls, *args, **kwargs)

        setattr(module, "_process_class", _sealed(_process_class))
    elif module.__name__ == "enum":
        real_global_enum = module.global_enum

        def global_enum(cls: Any, update_str: bool = False) -> Any:
            # enum's own steps (the same in 3.12 to 3.14), with the namespace checked
            # once and written into as checked: the real one reads cls.__module__ again
            # after setting __repr__, which a metaclass's __setattr__ had renamed in
            # between (a red-team run, round 11).
            namespace = namespace_of(cls, module)
            if issubclass(cls, module.Flag):
                cls.__repr__ = module.global_flag_repr
            else:
                cls.__repr__ = module.global_enum_repr
            if not issubclass(cls, module.ReprEnum) or update_str:
                cls.__str__ = module.global_str
            namespace.update(cls.__members__)
            return cls

        global_enum.__doc__ = real_global_enum.__doc__
        setattr(module, "global_enum", _sealed(global_enum))


def _patched_namespaces(module: types.ModuleType) -> tuple[dict[str, Any] | type, ...]:
    """Where ``_guard_on_import`` patched ``module``: what the seal watches once it has
    (rebinding a patched function there would undo the patch). Not typing's namespace,
    which typing's own module __getattr__ writes into as it makes names on first use
    (3.14: ``_lazy_annotationlib``): its ForwardRef class, which the patch is on."""
    if module.__name__ == "typing":
        return (module.ForwardRef,) if sys.version_info < (3, 14) else ()
    if module.__name__ == "annotationlib":
        return (vars(module), module.ForwardRef)
    if module.__name__ == "enum":
        return (vars(module), module.property, module.EnumType)
    return (vars(module),)


# The dunders each library reads by getattr() itself (see _guard_library_getattr).
_LIBRARY_OWN_DUNDERS = {
    "dataclasses": frozenset({"__dataclass_fields__", "__dataclass_params__",
                              "__dictoffset__", "__dictrefoffset__", "__weakrefoffset__",
                              "__annotate__", "__generated_by_dataclasses__"}),
    "ast": frozenset({"__origin__"}),
}


def _guard_library_getattr(enforcer: _Enforcer, module: types.ModuleType) -> None:
    """dataclasses and ast read attributes by names that objects sandboxed code made
    list: ``dataclasses.replace`` (and ``asdict``, ``astuple``, and ``_process_class`` for
    a field's default) reads ``getattr(obj, f.name)`` for each entry of
    ``__dataclass_fields__``, and ``ast.iter_fields`` (and what is built on it) each name of
    ``node._fields``. A class listing ``"__getattribute__"`` got the unbound
    ``object.__getattribute__``, which reads ``__globals__`` of any function (a red-team
    run, round 13: the real builtins, under compute with either granted). Their
    ``getattr`` (a global of theirs shadows the builtin) now applies the sandbox's name
    rule, but for the dunders each reads itself."""
    own = _LIBRARY_OWN_DUNDERS[module.__name__]
    real_getattr = getattr
    library = module.__name__

    def getattr_(obj: object, name: str, *default: object) -> Any:
        if type(name) is not str or not (name in own or attribute_allowed(name)):
            raise PolicyError(f"the sandbox's policy {enforcer.name!r} does not let "
                              f"{library} read the attribute {name!r} for sandboxed code")
        return real_getattr(obj, name, *default)

    setattr(module, "getattr", _sealed(getattr_, "getattr"))


def _guard_on_import(enforcer: _Enforcer, module: types.ModuleType) -> None:
    if module.__name__ in ("typing", "annotationlib"):
        _guard_forward_refs(enforcer, module)
    elif module.__name__ == "ast":
        _guard_library_getattr(enforcer, module)
    elif module.__name__ == "copy":
        _guard_copy(enforcer, module)
    else:
        if module.__name__ == "dataclasses":
            _guard_library_getattr(enforcer, module)
        _guard_module_namespaces(enforcer, module)


# Modules patched in place as they are first imported in the sandbox (see the "import"
# event in _Enforcer.hook), or at install if already there.
_GUARDED_ON_IMPORT = ("typing", "annotationlib", "dataclasses", "enum", "ast", "copy")
_guarded_modules: set[str] = set()


def _guard_singledispatch(enforcer: _Enforcer) -> None:
    """``register(f)`` of a ``functools.singledispatch`` function, with no class, evaluates
    ``f``'s annotations (``typing.get_type_hints``) in the globals of ``f``, or of what
    ``f.__wrapped__`` leads to, with those globals' builtins. A sandboxed function annotated
    ``"__import__('pathlib').Path"`` and given ``__wrapped__ = re.compile`` (``functools.wraps``)
    ran that in ``re``'s globals with the real ``__import__``; the class it made landed in
    ``.registry``. The code check sees the annotation's code, never the globals it runs in.
    Now ``register(f)`` takes annotations only from plain functions whose globals, all along
    ``__wrapped__``, have the policy's builtins: sandboxed code's; and reads the first one as
    a value, a class or a union, never evaluated by typing (class_annotated says why).
    ``singledispatchmethod`` calls the module's ``singledispatch``, so it gets this one
    too."""
    import functools

    real_singledispatch = functools.singledispatch
    function_type = types.FunctionType

    def a_library_registering_its_own(fn: object, caller: types.FrameType | None) -> bool:
        """A library that registers its own functions by their annotations as it is
        imported (``@f.register`` over ``def _(x: int)``, as ``importlib.resources``
        does): a plain function, no ``__wrapped__``, registered by the top-level code of
        the module whose globals it has, while that module is being imported. Not
        sandboxed code calling register() from inside that import (through a hook the
        library calls, say), nor through a library function that calls what it is given:
        the caller must be the module's own top-level code."""
        if (type(fn) is not function_type or "__wrapped__" in vars(fn) or caller is None
                or caller.f_globals is not fn.__globals__
                or caller.f_code.co_name != "<module>"):
            return False
        module = _modules.get(fn.__module__)
        spec = getattr(module, "__spec__", None)
        return (module is not None and vars(module) is fn.__globals__
                and getattr(spec, "_initializing", False) is True)

    def annotations_of_sandboxed_code(fn: object) -> bool:
        for _ in range(100):
            if type(fn) is not function_type:
                return False
            g = fn.__globals__
            if dict.get(g, "__builtins__") is not enforcer.builtins:
                return False
            fn = dict.get(vars(fn), "__wrapped__", _MISSING)
            if fn is _MISSING:
                return True
        return False

    def class_annotated(fn: Any) -> Any:
        """The class ``fn``'s first annotation names, read as a value, never evaluated
        by typing: typing.get_type_hints (and 3.14's annotationlib) hand objects of
        their own (ForwardRef) to code the annotations run, and a ForwardRef evaluates
        any string in any loaded module's globals, or with the real builtins in empty
        ones (a red-team run, round 7, reached the real sys so)."""
        refusal = (f"the sandbox's policy {enforcer.name!r} takes register()'s class from "
                   f"an annotation only when it is a class, a union of classes or a "
                   f"dotted name of one, in a plain function of sandboxed code (an "
                   f"annotation is never evaluated under a policy): name the class, "
                   f"@f.register(int)")
        if not annotations_of_sandboxed_code(fn):
            raise PolicyError(refusal)
        annotations = fn.__annotations__
        first = next(iter(dict.values(annotations)), None) if type(annotations) is dict \
            else None
        if type(first) is str:
            # A dotted name ("str", "decimal.Decimal") is looked up, not evaluated: in the
            # function's globals or the policy's builtins, then attribute by attribute
            # under the getattr rule.
            parts = str.split(first, ".")
            if not all(str.isidentifier(p) and name_allowed(p) for p in parts):
                raise PolicyError(refusal)
            value = dict.get(fn.__globals__, parts[0], _MISSING)
            if value is _MISSING:
                value = enforcer.builtins.get(parts[0], _MISSING)
            for part in parts[1:]:
                value = getattr(value, part, _MISSING)
            first = value
        if not (isinstance(first, type) or type(first) is types.UnionType):
            raise PolicyError(refusal)
        return first

    def singledispatch(func: Callable[..., Any]) -> Callable[..., Any]:
        dispatcher = real_singledispatch(func)
        real_register = dispatcher.register

        def register(cls: Any, func: Callable[..., Any] | None = None) -> Any:
            if (func is None and not issubclass(type(cls), type)
                    and type(cls) is not types.UnionType
                    and not a_library_registering_its_own(cls, _own_frame(1))):
                return real_register(class_annotated(cls), cls)
            return real_register(cls, func)

        register.__doc__ = real_register.__doc__
        dispatcher.register = _sealed(register)  # type: ignore[method-assign]
        return dispatcher

    singledispatch.__doc__ = real_singledispatch.__doc__
    functools.singledispatch = _sealed(singledispatch)


class _StdoutNotGranted(io.TextIOBase):
    """``sys.stdout`` of a sandbox whose policy does not grant ``print``.

    Without ``print`` sandboxed code has no way to write to the process's stdout of its
    own, but granted library code prints wherever it likes (``re.compile(p, re.DEBUG)``,
    ``ABCMeta._dump_registry()``): each write raises instead, naming the grant. Flushing
    does nothing, so the interpreter's own flush at exit stays quiet. stderr is kept: it
    carries warnings and unraisable exceptions, which must not become errors.
    """

    def __init__(self, policy_name: str) -> None:
        super().__init__()
        self._policy_name = policy_name

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # repr() of a plain str only (see _LabelledStderr.write).
        shown = repr("".join([text]) if issubclass(type(text), str) else type(text).__name__)
        if len(shown) > 80:
            shown = shown[:76] + "...'"
        raise PolicyError(f"the sandbox's policy {self._policy_name!r} does not allow "
                          f"writing to stdout (library code wrote {shown}); grant it with "
                          f".allow_builtins('print'), as Policy.compute() does")

    def flush(self) -> None:
        pass


# What a line of a sandbox's stderr may not carry as is: C0 and C1 controls (ESC and CSI
# start terminal escape sequences: colours, cursor moves, a window title, a clipboard
# write), DEL, and the bidirectional overrides and isolates that make text display in
# another order than it reads ("Trojan Source", CVE-2021-42574). A tab passes.
_STDERR_ESCAPES = _TERMINAL_ESCAPES


class _LabelledStderr(io.TextIOBase):
    """``sys.stderr`` of a sandbox under a policy.

    stderr stays open: it carries warnings and unraisable exceptions, which must not
    become errors, and their text is partly the sandboxed code's to choose (a warning's
    message, an exception's). So each line goes to the process's stderr behind a label
    that names the sandbox, and with its control characters written as escapes: sandboxed
    code cannot pass a line off as the caller's, nor drive the terminal it lands on.
    A partial line waits for its end, or for ``flush()``, which the interpreter calls at
    the end of each warning, each unraisable report and at exit.
    """

    def __init__(self, stream: TextIO | io.TextIOBase, label: str) -> None:
        super().__init__()
        self._stream = stream
        self._label = label
        self._pending: list[str] = []
        self._at_line_start = True

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # A plain str before anything: the text may be a str subclass of sandboxed code's
        # (an exception's __str__ reaches here through the unraisable hook), whose split()
        # ran in this frame and kept it, and the frames below it, through a traceback (a
        # red-team run, round 17). Nothing of the argument's own is called.
        if not issubclass(type(text), str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        text = "".join([text])
        *complete, rest = text.split("\n")
        if complete:
            self._pending.append(complete[0])
            complete[0] = "".join(self._pending)
            self._pending.clear()
            for line in complete:
                self._emit(line, end="\n")
        if rest:
            self._pending.append(rest)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            partial = "".join(self._pending)
            self._pending.clear()
            self._emit(partial, end="")
        self._stream.flush()

    def _emit(self, line: str, *, end: str) -> None:
        label = self._label if self._at_line_start else ""
        self._stream.write(label + line.translate(_STDERR_ESCAPES) + end)
        self._at_line_start = bool(end)


def explain_missing_builtin(exc: BaseException) -> None:
    """Add a note to a NameError for a builtin the installed policy does not grant.

    Without it the sandboxed code gets a bare ``name 'open' is not defined``, which names
    neither the policy nor the grant (an import refusal names both).
    """
    if type(exc) is not NameError or _installed_policy is None:
        return
    name, granted = exc.name, _installed_policy.builtins
    if not isinstance(name, str) or name in granted or not hasattr(_builtins_module, name):
        return
    if name == "open":
        grant = ".allow_read(dir) or .allow_write(dir), which grant open"
    elif name == "__import__":
        grant = "an import statement, and .allow_import(module)"
    else:
        grant = f".allow_builtins({name!r})"
    exc.add_note(f"{name!r} is a builtin that the sandbox's policy "
                 f"{_installed_policy.name!r} does not grant: widen it with {grant}")


_installed_policy: _Enforcer | None = None

# What our loaders of what crosses by value may do that the hook refuses everyone else
# (_CODE_EVENTS): by the loader's code, each event it raises itself, and the local variable
# of its frame that the event's first argument must be (make_function checks the code it
# unmarshals, then makes one function of it; _reduce_function marshals a function's code
# to send it). Not "whatever is raised while a loader's frame is on top": the loaders
# touch objects sandboxed code chose (a function's namespace and attributes as a result
# is pickled; a count or a state as an exception is loaded again), and the C callables
# those objects hold run with the loader's frame on top. A red-team run (round 12) had a
# fake function's vars().items() make FunctionType(code, {}) "as" _reduce_function, which
# took the real builtins; an int-like count's __index__ could do it in make_function.
_MAKERS: dict[types.CodeType, dict[str, str]] = {
    _Enforcer.make_function.__code__: {"marshal.loads": "code_bytes",
                                       "function.__new__": "code"},
    _crossing._reduce_function.__code__: {"marshal.dumps": "code"},
}
# What the import system may do of the same: unmarshal the modules it loads (.pyc files).
# Nothing else: its frames also touch what sandboxed code passes to __import__.
_IMPORT_SYSTEM_CODE_EVENTS = frozenset({"marshal.loads", "marshal.load"})


def _made_by(frame: types.FrameType, local: str, args: tuple[object, ...]) -> bool:
    """Whether the event's first argument is the loader's own ``local``: the very object,
    or for bytes (marshal.loads audits a copy), equal exact bytes."""
    value = frame.f_locals.get(local, _MISSING)
    arg = args[0] if args else _MISSING
    if value is _MISSING or arg is _MISSING:
        return False
    if type(value) is bytes:
        return type(arg) is bytes and arg == value
    return arg is value


# The interpreter's own stdout and stderr objects, kept alive while replaced (they never
# close fd 1 or 2).
_replaced_streams: list[object] = []


def install(spec: PolicySpec) -> Callable[[bytes, tuple[object, ...]], object]:
    """Install the policy in this interpreter; returns the loader for requests.

    Called once, by ``_inside.serve``, before any request is read.
    """
    global _installed, _installed_policy, _relative_import_root
    if _installed:
        raise RuntimeError("a policy is already installed in this sandbox")
    _installed = True
    enforcer = _installed_policy = _Enforcer(spec)
    _relative_import_root = any(type(p) is str and not posixpath.isabs(p) for p in sys.path)
    _guard_enum_property(enforcer.name)
    _guard_singledispatch(enforcer)
    _guard_traceback_suggestions()
    for name in _GUARDED_ON_IMPORT:
        if name in _modules:
            _guarded_modules.add(name)
            _guard_on_import(enforcer, _modules[name])
    from . import _core, errors

    machinery: dict[tuple[str, str], object] = {
        ("subsandbox._crossing", "_make_function"): enforcer.make_function,
        ("subsandbox._crossing", "_fill_function"): _crossing._fill_function,
        ("subsandbox._crossing", "_make_class"): _crossing._make_class,
        ("subsandbox._crossing", "_fill_class"): _crossing._fill_class,
        ("subsandbox._crossing", "_EMPTY_CELL"): _crossing._EMPTY_CELL,
        # The parts of a class crossing by value: each makes one object from what crossed
        # (a property from its functions, an enum from its metaclass and its values), and
        # reaches nothing else.
        ("subsandbox._crossing", "_make_enum"): _crossing._make_enum,
        ("subsandbox._crossing", "_make_staticmethod"): _crossing._make_staticmethod,
        ("subsandbox._crossing", "_make_classmethod"): _crossing._make_classmethod,
        ("subsandbox._crossing", "_make_property"): _crossing._make_property,
        ("subsandbox._crossing", "_make_mappingproxy"): _crossing._make_mappingproxy,
        ("subsandbox._crossing", "_dataclass_sentinel"): _crossing._dataclass_sentinel,
        ("subsandbox._crossing", "_make_typevar"): _crossing._make_typevar,
        ("subsandbox._crossing", "_make_lru_cached"): _crossing._make_lru_cached,
        ("subsandbox._inside", "exec_source"): enforcer.exec_source,
        ("importlib", "import_module"): lambda name, package=None: enforcer._import(
            name, fromlist=("*",)),
        ("copyreg", "_reconstructor"): __import__("copyreg")._reconstructor,
        ("copyreg", "__newobj__"): __import__("copyreg").__newobj__,
        ("copyreg", "__newobj_ex__"): __import__("copyreg").__newobj_ex__,
    }
    for cls_name in errors.__all__:
        machinery[("subsandbox.errors", cls_name)] = getattr(errors, cls_name)
    for data_type in (_core.frozendict, _core.immutableset):
        machinery[(data_type.__module__, data_type.__qualname__)] = data_type
    _machinery.update(machinery)

    # __main__ is where sandboxed code lives: only its name and the policy's builtins.
    main = enforcer.main_dict
    main.clear()
    main.update({"__name__": "__main__", "__doc__": None, "__builtins__": enforcer.builtins})

    if "print" not in enforcer.builtins:
        _replaced_streams.extend((sys.stdout, sys.__stdout__))
        refusing = _StdoutNotGranted(enforcer.name)
        sys.stdout = refusing
        setattr(sys, "__stdout__", refusing)  # Final in typeshed; replaced here on purpose
    if sys.stderr is not None:
        _replaced_streams.extend((sys.stderr, sys.__stderr__))
        labelled = _LabelledStderr(sys.stderr, f"[sandbox {_core.interpreter_id()}] ")
        sys.stderr = labelled
        setattr(sys, "__stderr__", labelled)  # as __stdout__ above

    sys.addaudithook(_sealed(enforcer.hook, "audit hook"))
    # CPython drops that hook before the interpreter's last garbage collection: from the
    # moment this interpreter is being finalized, the C core refuses every event of it
    # (teardown_guard.c).
    _core._register_policy_interpreter()
    return _sealed(enforcer.loads)


# Modules whose namespaces the enforcement reads while it decides, besides subsandbox's
# own: the code check decodes bytecode with dis (and opcode's tables), the path checks
# resolve with posixpath, pickling goes through pickle/copyreg, the patched libraries
# call what their namespaces hold. None of them rebinds a global of its own once loaded.
_SEALED_MODULES = ("dis", "opcode", "types", "os", "posixpath", "genericpath", "stat",
                   "_thread", "marshal", "pickle", "_pickle", "copyreg", "io", "_io",
                   "_string", "operator", "_operator", "functools", "traceback",
                   "linecache", "_frozen_importlib", "_frozen_importlib_external")


def seal() -> None:
    """Seal the enforcement's state (seal.c), once the sandbox's machinery has taken what
    ``install`` returned (_inside.serve): from now on, a change to any namespace it
    decides by (this module's and subsandbox's others, the modules above, the patched
    libraries as they load, its own classes) breaks the policy: every guarded function
    (the audit hook, the builtins, module views, the patched library functions) refuses
    from then on, and the sandbox can only compute. Red-team runs ended every escape they
    found by rewriting such state; whatever way in the next one finds, that last step
    now stops the sandbox instead."""
    if not _installed:
        raise RuntimeError("no policy is installed in this sandbox")
    own = [vars(m) for name, m in list(_modules.items())
           if name.startswith("subsandbox.") and isinstance(m, types.ModuleType)]
    stdlib = [vars(_modules[name]) for name in _SEALED_MODULES if name in _modules]
    tables: list[dict[Any, Any]] = [_DROPPED, _DROP_REASONS, _STDERR_ESCAPES, _machinery]
    classes: list[type] = [_Enforcer, _PolicyUnpickler, _StdoutNotGranted, _LabelledStderr]
    namespaces: list[dict[Any, Any] | type] = [*own, *stdlib, *tables, *classes]
    _core.seal(tuple(namespaces), PolicyError)
    for name in _guarded_modules:
        _core.seal(_patched_namespaces(_modules[name]), PolicyError)
