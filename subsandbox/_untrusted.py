"""Loading what comes out of a sandbox that runs under a policy.

A result or an exception crosses back as a pickle that the sandbox wrote, and the code in
the sandbox chose what went into it: a ``__reduce__`` can name any importable callable,
and a function or class crossing by value is code. Loaded with the ordinary unpickler,
that would run the sandbox's choice of code in the caller's interpreter, outside every
policy. So the caller loads it with this unpickler, which builds data and nothing else:

- builtin data types and exception classes, this package's exceptions and frozen types;
- data classes of modules the policy lets the sandbox import: a class (never a function,
  a metaclass, or a class whose instances are callable), of a module that is not one of
  the standard library's modules of effects (files, processes, sockets, threads, code,
  pickling: _EFFECT_MODULES); and a few reconstructors by name (``re._compile`` rebuilds
  a Pattern, ``array._array_reconstructor`` an array);
- the caller's own ``__main__`` classes, which come back as themselves (never rebuilt,
  never changed: their attributes as the sandbox sent them are ignored, and no part of
  the pickle may set an attribute on any class: BUILD on a class is refused).

Functions, classes defined inside the sandbox, modules and anything else are refused with
an error that says what and why.

Why so narrow. Pickle's REDUCE calls whatever callable is on the stack, with arguments
the pickle chose: every function of a granted module, and every callable object a granted
class makes (``operator.attrgetter``'s instances walk attributes up to ``eval``), would
run here, in the caller, where the sandbox's audit hook does not refuse any effect. A
class that is let through still runs its own ``__new__``/``__init__``/``__setstate__``
here with arguments the sandbox chose: grant a sandbox only modules whose classes are
data (docs/security.md).

This loader is the pure-Python unpickler (``pickle._Unpickler``): the C one cannot be
told to refuse one opcode (BUILD on a class).
"""

from __future__ import annotations

import builtins
import copyreg
import io
import pickle
import sys
import types
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any, Callable

from . import _core, _crossing, errors
from .policy import Policy

__all__ = ["loader"]

# Not slice: a chain of nested slices, which CPython frees without its trashcan,
# overflowed the C stack of the caller when the result was dropped (3.12, 3.13; round 13).
_DATA_BUILTINS = frozenset({
    "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
    "object", "range", "set", "str", "tuple",
})
# The finite containers a call may be handed: any other iterable, handed to a class that
# iterates what it gets, may last for ever (ipaddress.IPv6Network("::/0") into a deque:
# round 13).
_FINITE_CONTAINERS = (str, bytes, bytearray, tuple, list, dict, set, frozenset,
                      _core.frozendict, _core.immutableset)
# Data classes of granted modules that are not data enough: re.Scanner compiles a lexicon
# (with its flags, re.DEBUG included: it printed in the caller) and holds its callbacks;
# typing.ForwardRef compiles its string here, and evaluates it when asked (3.12, 3.13);
# a ChainMap is a view over mappings, merged on len() and iteration (round 17).
_NOT_DATA = frozenset({("re", "Scanner"), ("typing", "ForwardRef"),
                       ("collections", "ChainMap")})


# Modules none of whose classes is data: typing's compile the strings they are given as
# forward references, which the caller evaluates with the real builtins (TypeVar's bound:
# round 18). A caller's TypeVar comes back through _existing_typevar.
_NOT_DATA_MODULES = frozenset({"typing", "annotationlib"})


# Standard-library modules whose classes exist to have effects (open files, run
# processes, talk to the network, start threads, make code, load pickles), by their top
# package: no class of theirs comes out of a sandbox, granted or not.
_EFFECT_MODULES = frozenset({
    "_ctypes", "_io", "_multiprocessing", "_pickle", "_posixsubprocess", "_socket",
    "_sqlite3", "_thread", "asyncio", "atexit", "builtins", "bz2", "code", "codeop",
    "concurrent", "copyreg", "ctypes", "dbm", "faulthandler", "fcntl", "fileinput",
    "ftplib", "gc", "gzip", "http", "imaplib", "importlib", "inspect", "io", "logging",
    "lzma", "mailbox", "marshal", "mmap", "multiprocessing", "nt", "os", "pickle",
    "pkgutil", "poplib", "posix", "pty", "queue", "resource", "runpy", "sched", "select",
    "selectors", "shelve", "shutil", "signal", "smtplib", "socket", "socketserver",
    "sqlite3", "ssl", "subprocess", "subsandbox", "sys", "syslog", "tarfile", "tempfile",
    "termios", "threading", "tkinter", "tracemalloc", "tty", "types", "urllib", "venv",
    "weakref", "webbrowser", "wsgiref", "xmlrpc", "zipapp", "zipfile", "zipimport",
    "zoneinfo",
})
# Functions that rebuild data, let through by name from granted modules.
_RECONSTRUCTORS = frozenset({("re", "_compile"), ("array", "_array_reconstructor")})


def _instances_are_callable(cls: type) -> bool:
    return any("__call__" in vars(base) for base in cls.__mro__ if base is not object)


def _instances_are_iterators(cls: type) -> bool:
    """An iterator class (itertools.count, collections.deque's iterator...): handed to a
    constructor, a lazy or endless iterator made the caller loop in C, its GIL held, past
    every timeout (a red-team run: ``deque(count(), 0)`` froze the caller)."""
    return any("__next__" in vars(base) for base in cls.__mro__ if base is not object)


def _builtin_items(container: object) -> list[object]:
    """The items of a builtin container (or of an instance of a subclass), as the builtin
    iterates them."""
    for base in _FINITE_CONTAINERS:
        if isinstance(container, base):
            iterate: Callable[[object], Iterable[object]] = base.__iter__  # type: ignore[assignment]
            return list(iterate(container))
    return []


def _refuse(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"a sandbox under a policy may only return data: {what}")


def _check_call(maker: object, args: object, kwargs: object = None, *,
                called: bool = False, budget: list[int] | None = None) -> None:
    """What a REDUCE or NEWOBJ is about to call, checked before the call runs here, in the
    caller: its arguments must be a tuple (``f(*args)`` unpacks any iterable) of finite
    data, no size for bytes to allocate; a class called (REDUCE: ``called``) must be made
    by ``type.__call__`` (an enum class called with one value looks its member up; with
    more, it makes a new class, whose ``__eq__`` the sandbox chose: a red-team run, round
    12). NEWOBJ calls ``cls.__new__`` itself."""
    if type(args) is not tuple or not (kwargs is None or type(kwargs) is dict):
        raise _refuse("a call's arguments must be a tuple")
    if any(maker is c for c in _CONSTRUCTORS) and args:
        # copyreg's constructors call the class they are given: the rules are that
        # class's (a red-team run made bytes(10**9) through copyreg.__newobj__).
        if maker is copyreg.__newobj_ex__ and len(args) == 3:  # type: ignore[attr-defined]
            _check_call(args[0], args[1], args[2], budget=budget)
        elif maker is copyreg._reconstructor and len(args) == 3:  # type: ignore[attr-defined]
            _check_call(args[1], (args[2],) if args[2] is not None else (), budget=budget)
        else:
            _check_call(args[0], args[1:], budget=budget)
    _check_argument_spread(args)
    values = list(args) + (list(kwargs.values()) if kwargs else [])
    # Inside the builtin containers too: dict([range(10**9)]) made a list of it (round
    # 14). A result shares no container (_after_get): this walk is as
    # long as the arguments, and no container is walked for two calls.
    stack = list(values)
    while stack:
        value = stack.pop()
        if budget is not None:
            # Each call's arguments are walked: list(list(...list(big)...)) handed the
            # same 100,000 items to 200 calls, 20 s of walking for a result that barely
            # grew (round 18). A load walks at most so many items in all.
            budget[0] -= 1
            if budget[0] < 0:
                raise _refuse("a result whose calls are handed the same items over and "
                              "over (more items walked than its size allows)")
        if isinstance(value, (str, bytes, bytearray)):
            continue
        if isinstance(value, _FINITE_CONTAINERS):
            # Through the builtin's own iteration: a subclass's __iter__ or items() is
            # not asked what it holds.
            stack.extend(dict.items(value) if isinstance(value, dict)
                         else _builtin_items(value))
        elif (_instances_are_iterators(type(value)) or hasattr(type(value), "__iter__")
              or hasattr(type(value), "__getitem__")):
            # (__getitem__: iter() walks it from 0 up until IndexError; a re._parser
            # SubPattern whose data was range(2**62) looped in deque(sp, 0): round 16.)
            raise _refuse(f"the iterable {type(value).__name__!r} cannot be handed to "
                          f"{getattr(maker, '__qualname__', maker)!r}: it would be "
                          f"iterated here, for as long as it lasts")
    shown = maker.__name__ if isinstance(maker, type) else type(maker).__name__
    # Subclasses too: a caller's own str, bytes, int or Fraction subclass comes back as
    # itself, and was called past these rules (round 19: bytes(10**9) through one).
    text_kind = isinstance(maker, type) and issubclass(maker, (str, bytes, bytearray))
    number_kind = isinstance(maker, type) and issubclass(maker, (int, float, complex))
    if text_kind and len(values) > 1:
        # An encoding: the codec's lookup imports encodings.<name> here (round 14).
        raise _refuse(f"{shown}() with an encoding")
    fractions = sys.modules.get("fractions")
    fraction_kind = (fractions is not None and isinstance(maker, type)
                     and issubclass(maker, fractions.Fraction))
    if fraction_kind and not all(
            type(value) is int for value in values):
        # Fraction("1e16000000") computes 10**16000000 (13 s for a 20-byte argument,
        # round 13); Fraction pickles as its two ints.
        raise _refuse("a Fraction is made again only from its numerator and denominator")
    if fraction_kind and any(
            value.bit_length() > _FRACTION_BITS_MAX for value in values):
        # Fraction(n, d) divides both by their gcd, whose time grows with the square of
        # their size: two ints of 4,000,000 bits (1 MB) took 18.6 s (3.13.0).
        raise _refuse(f"a Fraction whose numerator or denominator has more than "
                      f"{_FRACTION_BITS_MAX} bits (its gcd would take time that grows with "
                      f"the square of its size): return the two ints")
    if isinstance(maker, type) and issubclass(maker, (bytes, bytearray)):
        if any(isinstance(value, int) for value in values):
            raise _refuse(f"{shown}() of a size")
    if number_kind and not all(
            type(value) in _SCALARS for value in values):
        # int(Decimal('1e1000000')) converts in time that grows faster than its size,
        # in C: a 74-byte result took 25 s (round 17). Numbers are made from scalars.
        raise _refuse(f"{shown}() of a {type(values[0]).__name__}"
                      if values else f"{shown}()")
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(maker, type) and issubclass(
            maker, decimal.Decimal) and any(
            type(value) is int and value.bit_length() > _FRACTION_BITS_MAX
            for value in values):
        raise _refuse(f"a Decimal made from an int of more than {_FRACTION_BITS_MAX} bits "
                      f"(its conversion grows with the square of its size): a Decimal "
                      f"comes back as its str")
    if maker is _re_compile and len(args) > 1:
        flags = args[1]
        re = sys.modules["re"]
        if not isinstance(flags, int) or int(flags) & int(re.DEBUG):
            raise _refuse("a pattern compiled with re.DEBUG prints here")
    if called and isinstance(maker, type) and type(maker).__call__ is not type.__call__:
        enum = sys.modules.get("enum")
        if not (enum is not None and isinstance(maker, enum.EnumType) and len(args) == 1):
            raise _refuse(f"calling the class {maker.__qualname__!r}, whose metaclass "
                          f"{type(maker).__qualname__!r} has a __call__ of its own")
        if issubclass(maker, enum.Flag):
            # A Flag called with a value it has no member for makes a pseudo-member and
            # keeps it in the class for good (re.RegexFlag keeps any int): one per value,
            # for every result. Only combinations of its own flags, which are finite.
            value = args[0] if type(args) is tuple and args else None
            mask = getattr(maker, "_flag_mask_", 0)
            if not (type(value) is int and value >= 0 and type(mask) is int
                    and not value & ~mask):
                raise _refuse(f"a {maker.__qualname__} value other than a combination of "
                              f"its flags")


# 6 ms for the gcd of two ints this long (3.13.0): a megabyte of them costs ~0.4 s.
_FRACTION_BITS_MAX = 2**16
# Characters of pattern text a result's compiled patterns may hold in all (~1.2 s at the
# worst known ~0.6 ms per character), and how deep a result may nest.
_PATTERN_CHARS_MAX = 2048
_DEPTH_MAX = 2000


def defuse_exception(exc: BaseException) -> None:
    """What the caller's traceback module would act on in an exception a sandbox under a
    policy made, whether raised or returned (round 17 returned them as values): an
    ImportError's ``name_from`` (traceback imports ``name`` to suggest one), a
    SyntaxError's caret columns past its text (3.12 draws as many carets as
    ``end_offset`` says: 3 * 10**8 took 600 MB) and, on 3.14, its ``_metadata``, with
    which traceback opens the file the error names; and a UnicodeError's range outside its
    object (str() of one read past it, and crashed 3.12 and 3.13)."""
    if isinstance(exc, ImportError):
        exc.name_from = None
    if isinstance(exc, SyntaxError):
        text = exc.text
        columns = len(text) + 1 if type(text) is str else 0
        for column in ("offset", "end_offset"):
            value = getattr(exc, column)
            if value is not None and not (type(value) is int and 0 <= value <= columns):
                setattr(exc, column, None)
        if _data_descriptor(type(exc), "_metadata"):
            exc._metadata = None  # type: ignore[attr-defined]
    subject = getattr(exc, "object", None) if isinstance(exc, UnicodeError) else None
    if subject is not None:
        start, end = getattr(exc, "start", 0), getattr(exc, "end", 0)
        size = len(subject) if type(subject) in (str, bytes, bytearray) else -1
        if not (type(start) is int and type(end) is int and 0 <= start <= end <= size):
            raise _refuse(f"a {type(exc).__name__} whose range [{start}:{end}] is not "
                          f"within its object")


def _re_compile(*args: object) -> object:
    """re._compile, as _RECONSTRUCTORS lets it through (re is imported only when it is)."""
    return sys.modules["re"]._compile(*args)


_NO_FUNCTION = ("a function cannot come out of a sandbox that runs under a policy: it "
                "would run the sandbox's code here; return data instead")


class _Inert:
    """Stands for a function that crossed by value; never called, never handed out.

    The only place one may end up is the state of a caller's class coming back (its
    methods travel with it, and are thrown away with that state). Anywhere else, the load
    fails.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError(_NO_FUNCTION)


def _inert_values(value: object) -> list[_Inert]:
    """The placeholders directly inside ``value`` (one container level deep)."""
    if isinstance(value, _Inert):
        return [value]
    items: Any = ()
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, (tuple, list, set, frozenset)):
        items = value
    return [v for v in items if isinstance(v, _Inert)]


def _existing_class(key: tuple[int, int], name: str, *rest: object) -> type:
    cls = _crossing._rebuilt_classes.get(key)
    if cls is None:
        raise pickle.UnpicklingError(
            f"the class {name!r} was defined inside the sandbox; a sandbox under a policy "
            f"can only return instances of classes this interpreter already has")
    return cls


def _existing_typevar(key: tuple[int, int], kind: str, name: str, *rest: object) -> object:
    tv = _crossing._rebuilt_typevars.get(key)
    if tv is None:
        raise pickle.UnpicklingError(
            f"the {kind} {name!r} was made inside the sandbox; a sandbox under a policy can "
            f"only return the type variables this interpreter already has")
    return tv


class _Metaclass:
    """Stands for a class's metaclass: ``_existing_class`` is given one and ignores it."""

    __slots__ = ()

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError("a sandbox under a policy cannot make a class in "
                                     "this interpreter: it may only return data")


_METACLASS = _Metaclass()


def _type_of(obj: object) -> object:
    """``type`` as pickle needs it here: ``type(None)`` (and of the other singletons), and
    a class's metaclass (which ``_existing_class`` does not use). Never a metaclass
    itself: ``type(int)`` is ``type``, and a pickle that called what it got back made a
    class in the caller (found by a red-team run); a class's metaclass comes out as an
    inert stand-in. Nothing else: ``type`` of one of the loader's own bound methods was
    ``types.MethodType``, which made a method whose function's ``__dict__`` BUILD then
    wrote into (a red-team run, round 12)."""
    if isinstance(obj, type):
        return _METACLASS
    if obj is None or obj is NotImplemented or obj is Ellipsis:
        return type(obj)
    raise _refuse(f"type() of a {type(obj).__name__} object")


def _dataclass_sentinel(name: str) -> object:
    """A dataclasses sentinel (``MISSING``...), where this interpreter has dataclasses
    already: a value coming out never makes the caller import a module, and without
    dataclasses no class here can hold one."""
    module = sys.modules.get("dataclasses")
    if module is None or name not in _crossing._DATACLASS_SENTINELS:
        raise pickle.UnpicklingError(
            f"dataclasses.{name} cannot come out of a sandbox under a policy where this "
            f"interpreter has not imported dataclasses")
    return getattr(module, name)


_MACHINERY: dict[tuple[str, str], object] = {
    ("builtins", "type"): _type_of,
    ("subsandbox._crossing", "_make_class"): _existing_class,
    ("subsandbox._crossing", "_make_enum"): _existing_class,
    ("subsandbox._crossing", "_make_typevar"): _existing_typevar,
    ("subsandbox._crossing", "_EMPTY_CELL"): _crossing._EMPTY_CELL,
    # Data: a read-only view of a dict, a dataclasses sentinel by its name.
    ("subsandbox._crossing", "_make_mappingproxy"): _crossing._make_mappingproxy,
    ("subsandbox._crossing", "_dataclass_sentinel"): _dataclass_sentinel,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]
    ("copyreg", "__newobj__"): copyreg.__newobj__,        # type: ignore[attr-defined]
    ("copyreg", "__newobj_ex__"): copyreg.__newobj_ex__,  # type: ignore[attr-defined]
}
for _name in errors.__all__:
    _MACHINERY[("subsandbox.errors", _name)] = getattr(errors, _name)
for _type in (_core.frozendict, _core.immutableset, _core.ChannelClosed,
              _core.ChannelEmpty, _core.ChannelFull, _core.NotShareableError):
    _MACHINERY[(_type.__module__, _type.__qualname__)] = _type


# The pure-Python unpickler's own opcodes that _ResultUnpickler wraps: BUILD, and those
# that make an object BUILD may then fill.
_DISPATCH = pickle._Unpickler.dispatch
_BUILD: Callable[[Any], None] = _DISPATCH[pickle.BUILD[0]]
# REDUCE makes an object BUILD may fill when it calls a class or one of these.
_CONSTRUCTORS = (copyreg._reconstructor, copyreg.__newobj__,  # type: ignore[attr-defined]
                 copyreg.__newobj_ex__)                       # type: ignore[attr-defined]


def _refused_opcode(self: _ResultUnpickler) -> None:
    """INST and OBJ, of protocols 0 and 1, call a class with what is on the stack, past
    the checks of the opcodes above (a red-team run, round 13); the sandbox's pickler never
    writes them."""
    raise _refuse("INST and OBJ (pickle protocols 0 and 1) are not read")


def _shareable(obj: object) -> bool:
    """What a result may refer to more than once (pickle's memo). A container (an iterable
    other than str and bytes) never: a tuple holding the tuple below it twice, 60 levels
    deep, took 283 bytes, and hashing it (3.12, 3.13) or str() of it never ended here (a
    red-team run, round 14). Nor an object whose hash, comparison or text walks its state:
    a statistics.NormalDist whose mu and sigma were the level below did the same (round
    16). Shared: scalars, classes and functions, enum members, short tuples of those, the
    standard library's value types, and objects that compare and print by identity (a
    random.Random)."""
    kind = type(obj)
    if kind in _SCALARS or isinstance(obj, type) or kind in _FUNCTION_TYPES or kind is _Inert:
        return True
    enum = sys.modules.get("enum")
    if enum is not None and isinstance(obj, enum.Enum):
        return True     # a Flag member is iterable, and a singleton
    if kind in (tuple, frozenset) and len(obj) <= _SHARED_TUPLE_MAX:  # type: ignore[arg-type]
        # A short tuple of scalars (a class's __slots__, its bases): each reference to it
        # costs what the tuple's length does.
        return all(type(item) in _SCALARS or isinstance(item, type)
                   or type(item) in _FUNCTION_TYPES
                   for item in obj)  # type: ignore[attr-defined]
    if isinstance(obj, BaseException):
        return False
    if _value_type(kind):
        return True
    # Read in the classes' own namespaces: a metaclass's __getattribute__ could answer
    # object's methods while the type's slots call its own.
    if any(name in vars(klass) for klass in kind.__mro__ if klass is not object
           for name in _STATE_WALKERS):
        return False
    # And holding only scalars: 60 string.Template objects whose attributes were the
    # level below, twice, made json.dumps(result, default=vars) double per level (round
    # 18). Slots are not read: an object with any is not shared.
    if any("__slots__" in vars(klass) for klass in kind.__mro__ if klass is not object):
        return False
    try:
        state = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return True
    return type(state) is dict and all(type(value) in _SCALARS
                                       for value in dict.values(state))


# The methods that hash, compare, print or size an object: object's own walk nothing.
_STATE_WALKERS = ("__hash__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
                  "__repr__", "__str__", "__format__", "__bool__", "__len__", "__iter__",
                  "__getitem__", "__contains__")
# Value types of the standard library, by module and name: each hashes, compares and
# prints from a fixed number of scalars (a datetime's tzinfo is one more such value).
_VALUE_TYPES = frozenset({
    ("datetime", "date"), ("datetime", "time"), ("datetime", "datetime"),
    ("datetime", "timedelta"), ("datetime", "timezone"), ("decimal", "Decimal"),
    ("fractions", "Fraction"), ("uuid", "UUID"), ("re", "Pattern"),
    *(("ipaddress", f"IPv{v}{kind}") for v in (4, 6)
      for kind in ("Address", "Network", "Interface")),
})
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def _value_type(kind: type) -> bool:
    """Whether ``kind`` is one of _VALUE_TYPES itself (not a subclass)."""
    return (getattr(kind, "__module__", None), getattr(kind, "__qualname__", None)) in _VALUE_TYPES
_SCALARS = (str, bytes, int, float, complex, bool, type(None))
_SHARED_TUPLE_MAX = 256


def _after_get(load: Callable[[Any], None]) -> Callable[[Any], None]:
    def get(self: _ResultUnpickler) -> None:
        load(self)
        value = self.stack[-1]
        if not _shareable(value):
            raise _refuse(f"a {type(value).__name__} may come back only once in "
                          f"a result (pickle's memo refers to it again): return a tree, "
                          f"copy what it shares")
        # Referred to again, it is no longer the load's alone to fill: BUILD on it after
        # a GET filled empty objects top-down, each judged shareable (and shallow) while
        # still empty (round 19).
        self._fresh.pop(id(value), None)
        if type(value) in (str, bytes) and len(value) > 64:
            # A megabyte str referred to 8,000 times made json.dumps() of a 1 MB result
            # write 8 GB (round 19): what the memo repeats is charged to the result.
            self._repeat_budget -= len(value)
            if self._repeat_budget < 0:
                raise _refuse("a result that refers to its long strings over and over "
                              "(more repeated text than its size allows)")
    return get


def _class_method(target: object, name: str) -> Callable[..., Any]:
    """``type(target).name``: pickle's own APPEND(S) and ADDITEMS look their methods up on
    the instance, where a class's __getattr__ answered what was then called (round 14)."""
    method = getattr(type(target), name, None)
    if method is None:
        raise _refuse(f"{name}() of a {type(target).__name__}")
    return method  # type: ignore[no-any-return]


def _load_append(self: _ResultUnpickler) -> None:
    value = self.stack.pop()
    self._filling(self.stack[-1], (value,), list)
    _class_method(self.stack[-1], "append")(self.stack[-1], value)


def _load_appends(self: _ResultUnpickler) -> None:
    items = self.pop_mark()  # type: ignore[attr-defined]
    self._filling(self.stack[-1], items, list)
    _class_method(self.stack[-1], "extend")(self.stack[-1], items)


def _load_additems(self: _ResultUnpickler) -> None:
    items = self.pop_mark()  # type: ignore[attr-defined]
    self._filling(self.stack[-1], items, set)
    self._spread_into(self.stack[-1], items)
    add = _class_method(self.stack[-1], "add")
    for item in items:
        add(self.stack[-1], item)


# Keys with one hash that a result may put in one dict or set. A dict compares a new key
# with every key of its hash before it: keys that all hash alike make building it
# quadratic, in C, with the caller's GIL held (40,000 ints k * (2**61 - 1) + 7 took 10 s
# on 3.13.0; int, float, tuple and Fraction hashes are not randomized). Past this many,
# the load stops, so a result's keys cost at most this many comparisons each.
_SAME_HASH_MAX = 64


def _too_many_alike(key: object) -> pickle.UnpicklingError:
    return _refuse(f"more than {_SAME_HASH_MAX} different keys of a dict or set in a result "
                   f"have the same hash ({type(key).__name__} keys): building it would take "
                   f"time that grows with the square of their number; return them in a "
                   f"list, or as str keys")


class _Spread:
    """The hashes of the keys put in one dict or set so far (_core.count_hashes). No
    pickler puts a key into one container twice, so each repeat of a hash is another key
    with that hash."""

    __slots__ = ("seen", "repeats")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.repeats: dict[int, int] = {}

    def add(self, keys: list[object], step: int) -> None:
        over = _core.count_hashes(keys, self.seen, self.repeats, _SAME_HASH_MAX, step)
        if over >= 0:
            raise _too_many_alike(keys[over])


def _check_spread(keys: list[object] | tuple[object, ...]) -> None:
    """Items handed to a maker at once (``frozenset(items)``, ``Counter(items)``), where
    a value may repeat: refuse only a hash shared by many *different* keys."""
    if _core.count_hashes(keys, set(), {}, _SAME_HASH_MAX) < 0:
        return      # no hash is shared by more than _SAME_HASH_MAX keys, equal or not
    different: dict[int, list[object]] = {}
    for key in keys:
        try:
            alike = different.setdefault(hash(key), [])
        except TypeError:
            continue
        if key not in alike:
            if len(alike) >= _SAME_HASH_MAX:
                raise _too_many_alike(key)
            alike.append(key)


def _load_setitem(self: _ResultUnpickler) -> None:
    value = self.stack.pop()
    key = self.stack.pop()
    target = self.stack[-1]
    if type(target) is not dict or len(target) >= _SAME_HASH_MAX:
        self._filling(target, (key, value), dict)
        self._spread_into(target, [key])
    target[key] = value


def _load_setitems(self: _ResultUnpickler) -> None:
    items = self.pop_mark()  # type: ignore[attr-defined]
    target = self.stack[-1]
    # A small dict, the usual case, is checked here without a call.
    if type(target) is not dict or len(target) + len(items) // 2 > _SAME_HASH_MAX:
        self._filling(target, items, dict)
        self._spread_into(target, items, 2)
    for index in range(0, len(items), 2):
        target[items[index]] = items[index + 1]


def _load_frozenset(self: _ResultUnpickler) -> None:
    items = self.pop_mark()  # type: ignore[attr-defined]
    if len(items) > _SAME_HASH_MAX:
        _check_spread(items)
    self.stack.append(frozenset(items))


def _nesting(load: Callable[[Any], None], taken: int) -> Callable[[Any], None]:
    """``load``, an opcode that makes a tuple of the top ``taken`` items of the stack
    (TUPLE1 to TUPLE3), or of those above the mark (``taken`` 0: TUPLE): the tuple is
    one deeper than they are (_ResultUnpickler._nest)."""
    def nesting(self: _ResultUnpickler) -> None:
        items = self.stack[-taken:] if taken else self.stack
        load(self)
        self._nest(self.stack[-1], items)
    return nesting


def _check_argument_spread(args: object) -> None:
    """A long container handed to a maker (``frozenset(items)``, ``dict(pairs)``,
    ``Counter(items)``): its items, and the first item of each pair, as keys."""
    if type(args) is not tuple:
        return
    for arg in args:
        if (isinstance(arg, _FINITE_CONTAINERS) and not isinstance(arg, (str, bytes, bytearray))
                and len(arg) > _SAME_HASH_MAX):
            # (Any container: dict() of a frozenset of pairs whose own hashes differ put
            # keys that hash alike in: round 19.)
            arg = _builtin_items(arg)
            _check_spread(arg)
            # dict(pairs) takes the first item any 2-item iterable gives (a dict's first
            # key: round 18 built a dict of colliding keys from 2-key dicts).
            _check_spread([next(iter(_builtin_items(pair))) for pair in arg
                           if isinstance(pair, _FINITE_CONTAINERS) and len(pair) == 2])


def _refused_dup(self: _ResultUnpickler) -> None:
    """DUP pushes the top of the stack again: a container referred to twice without the
    memo (the rule of _after_get). No pickler writes it."""
    raise _refuse("DUP is not read")


def _fresh_after(load: Callable[[Any], None], maker_at: int, called: bool
                 ) -> Callable[[Any], None]:
    """``load``, an opcode that calls what lies ``maker_at`` items down the stack (a
    class for NEWOBJ and NEWOBJ_EX, anything for REDUCE), recording what it made as fresh
    when that was a class or one of copyreg's constructors. (OBJ and INST, of protocols
    0 and 1, which the sandbox's pickler never writes, make nothing BUILD may fill.)"""
    def making(self: _ResultUnpickler) -> None:
        maker = self.stack[-maker_at] if len(self.stack) >= maker_at else None
        if maker is not None:
            if (not isinstance(maker, type) and self._handed.get(id(maker)) is not maker
                    and maker is not _METACLASS):   # (which refuses, saying why)
                # Only a class, or a function find_class handed out, is called: an object
                # the result made (a caller's class with a __call__, its state set by
                # BUILD) ran the caller's own code with the sandbox's arguments (round 16).
                raise _refuse(f"a {type(maker).__name__} object cannot be called")
            _check_call(maker, *self.stack[1 - maker_at:], called=called,
                        budget=self._walk_budget)
            if maker is _re_compile:
                self._count_pattern(self.stack[-1])
        given = _arguments(self.stack[1 - maker_at:])
        load(self)
        if isinstance(maker, type) or any(maker is c for c in _CONSTRUCTORS):
            # Counted before any local holds it: the stack's reference and the call's.
            unshared = sys.getrefcount(self.stack[-1]) <= _FRESH_REFS
            made = self.stack[-1]
            # An enum class called with a value answers with its existing member, which a
            # BUILD would then change in this interpreter for everyone. (enum is looked up,
            # not imported: where nothing imported it there are no members, and a sandbox
            # that imported it would keep its strings for good, docs/lifecycle.md.)
            enum = sys.modules.get("enum")
            # Made by this very call: held only by the stack, `made` and getrefcount's
            # argument. A __new__ that hands out a cached instance (a singleton of the
            # caller's) handed out an object the caller holds, whose state BUILD then set
            # (a red-team run, round 14).
            if (not isinstance(made, type) and not (enum and isinstance(made, enum.Enum))
                    and unshared):
                self._fresh[id(made)] = made
            if isinstance(made, BaseException):
                self._made_exceptions.append(made)
        # After the count of references above: _nest keeps what it measures alive.
        self._nest(self.stack[-1], given)
        _check_value(self.stack[-1])
    return making


def _check_value(made: object) -> None:
    """A value whose constructor trusts its pickled form, checked as made (subclasses too:
    a caller's own datetime subclass comes back as itself): a datetime from its bytes
    checks only the month (year 0 made ctime() read before a table and crash, every
    version: round 18); a Decimal's exponent and digits set what int(), as_integer_ratio()
    or formatting it costs (1E+400000: 4.1 s; 400,000 digits: 13.5 s in statistics.mean;
    rounds 18, 19)."""
    datetime = sys.modules.get("datetime")
    if datetime is not None and isinstance(made, (datetime.date, datetime.time)):
        try:
            made.replace()  # checks every field
        except (ValueError, TypeError) as exc:
            raise _refuse(f"a {type(made).__name__} out of range: {exc}") from None
        return
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(made, decimal.Decimal) and made.is_finite():
        # Its text holds every digit (as_tuple() would make an int of them, which 3.12
        # refuses past 4,300 digits); adjusted() is the exponent of its first digit.
        if (abs(made.adjusted()) > _FRACTION_BITS_MAX
                or len(str(made)) > _DECIMAL_DIGITS_MAX + 16):
            raise _refuse(f"a Decimal of more than {_DECIMAL_DIGITS_MAX} digits or an "
                          f"exponent beyond +-{_FRACTION_BITS_MAX} (int() or "
                          f"as_integer_ratio() of it takes time that grows with its "
                          f"square): return its str")


# A Decimal's digits (~65,536 bits' worth).
_DECIMAL_DIGITS_MAX = 20_000


def _arguments(parts: list[Any]) -> list[object]:
    """The objects a call is handed: the items of its argument tuple and the values of
    its keyword dict (what the object it makes may hold)."""
    given: list[object] = []
    for part in parts:
        if type(part) is tuple:
            given.extend(part)
        elif type(part) is dict:
            given.extend(part.values())
        else:
            given.append(part)
    return given


def _refs_of(holder: Any) -> int:
    return sys.getrefcount(holder.stack[-1])


# What `making` reads for an object only the stack holds, read the same way (no local: 3.14
# lends a local to a call without a reference of its own, and whether it does depends on
# the rest of the function). A fixed `<= 3` of a local let through, on 3.14, an object one
# other reference held: a caller's singleton (a red-team run, round 16).
_FRESH_REFS = _refs_of(types.SimpleNamespace(stack=[object()]))


# An attribute name in a result's object state may be this long: a key of an instance's
# __dict__ joins its class's shared key table on 3.13+ for good (5 MB keys kept ~70 MB
# per class: a red-team run, round 16).
_NAME_MAX = 256


def _attribute_name(key: object, allowed_dunders: tuple[str, ...] = ()) -> str:
    """A name an object's state may set: a plain str, short, not a dunder. An instance's
    own __deepcopy__, __reduce_ex__ or __getstate__ is what copy and pickle call when the
    caller copies or sends the object on."""
    if type(key) is not str or len(key) > _NAME_MAX:
        raise _refuse(f"an attribute name in an object's state must be a str of at most "
                      f"{_NAME_MAX} characters")
    if len(key) > 4 and key.startswith("__") and key.endswith("__") and (
            key not in allowed_dunders):
        raise _refuse(f"an object's state may not set {key!r}")
    return key


def _set_slot(target: object, name: str, value: object) -> None:
    """A slot's value, through the slot's own descriptor; any other name into the
    instance's __dict__. setattr interned the name (immortal on 3.12: 20 results of
    20,000 names kept 136 MB; round 18) and ran any property's setter. Never a slot of a
    value type, in it or in a subclass (a caller's own subclass comes back as itself): a
    value is made from its constructor's checked arguments, and a Fraction's slots set
    to Fractions made ==, str() and hash() walk a tree that the memo shared, doubling
    with each level (round 17)."""
    for klass in type(target).__mro__:
        slot = vars(klass).get(name)
        if slot is not None:
            if _value_type(klass):
                raise _refuse(f"a {klass.__name__} is made only from its constructor's "
                              f"arguments")
            if type(slot) is not types.MemberDescriptorType:
                raise _refuse(f"an object's slot state may not set {name!r}, which is "
                              f"not a slot of its class")
            slot.__set__(target, value)
            return
    try:
        instance_dict = object.__getattribute__(target, "__dict__")
    except AttributeError:
        raise _refuse(f"an object's slot state names {name!r}, which its class does not "
                      f"have") from None
    instance_dict[name] = value


def _build_exception(target: BaseException, state: object) -> None:
    """An exception's state: its __dict__, written as such. BaseException.__setstate__
    calls setattr for each key, and an exception's own attributes are C members that
    CPython then trusts: UnicodeDecodeError.object set to an int made str() of it read
    past the int (3.12, 3.13: a crash), SyntaxError._metadata made 3.14's traceback open
    the file the exception names, __notes__ not a list printed for ever (3.12: round 16).
    Names the class defines as data descriptors (those members, args, __traceback__,
    __cause__, __context__) are not state, but for the few CPython pickles itself."""
    if state is None:
        return
    if type(state) is not dict:
        raise _refuse("an exception's state must be a dict")
    instance_dict = object.__getattribute__(target, "__dict__")
    for key, value in dict.items(state):
        name = _attribute_name(key, ("__notes__",))
        if _data_descriptor(type(target), name):
            # What CPython's own exceptions pickle as state: ImportError's name and path
            # (and name_from, which the sandbox's pickler adds), AttributeError's name and
            # args (3.12+), each of its own type.
            if name == "args" and type(value) is tuple:
                target.args = value
            elif (name in ("name", "path", "name_from")
                  and (value is None or type(value) is str)
                  and isinstance(target, (ImportError, AttributeError, NameError))
                  and (name == "name" or isinstance(target, ImportError))):
                setattr(target, name, value)
            else:
                raise _refuse(f"an exception's state may not set {name!r}, which its class "
                              f"defines (a member, property or descriptor)")
            continue
        if name == "__notes__" and not (type(value) is list
                                        and all(type(note) is str for note in value)):
            raise _refuse("an exception's __notes__ must be a list of str")
        instance_dict[name] = value


def _data_descriptor(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        attribute = vars(klass).get(name, _NOTHING)
        if attribute is not _NOTHING:
            kind = type(attribute)
            return hasattr(kind, "__set__") or hasattr(kind, "__delete__")
    return False


_NOTHING = object()


class _ResultUnpickler(pickle._Unpickler):
    stack: list[Any]        # the pure-Python unpickler's stack (not in typeshed)

    def _load_build(self) -> None:
        """BUILD, only on an object that this load made: by NEWOBJ, or by REDUCE of a
        class or of copyreg's constructors. Not on a class (its state would be set as the
        class's attributes: a caller's class, or one of this package's, is on the stack
        through find_class), nor on anything else that find_class hands out or that a
        function makes: a red-team run set __module__ and __name__ of the caller's
        copyreg.__newobj__, and every pickle.dumps in the caller then imported a module
        the sandbox named."""
        target = self.stack[-2]
        if isinstance(target, type):
            raise pickle.UnpicklingError(
                "a sandbox under a policy cannot set attributes of a class: it may only "
                "return data")
        if self._fresh.get(id(target)) is not target:
            raise pickle.UnpicklingError(
                f"a sandbox under a policy can set the state only of objects its result "
                f"makes, not of {type(target).__name__!r} objects this interpreter has")
        # pickle's own BUILD looks __setstate__ up on the instance: an instance attribute
        # (a first BUILD on an exception sets any), or what a class's __getattr__ answers
        # (an AttrDict's items), was called with the state, past every check (round 14).
        # The class's own, or pickle's default: the state into __dict__ and the slots.
        state = self.stack.pop()
        if isinstance(target, BaseException):
            _build_exception(target, state)
            return
        setstate = getattr(type(target), "__setstate__", None)
        if setstate is not None:
            _check_call(setstate, (state,), budget=self._walk_budget)
            setstate(target, state)
            return
        slotstate = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slotstate = state
        if state:
            if type(state) is not dict:
                raise _refuse("an object's state must be a dict")
            try:
                instance_dict = object.__getattribute__(target, "__dict__")
            except AttributeError:
                raise _refuse(f"a {type(target).__name__} has no attributes of its own to "
                              f"set") from None
            for key, value in dict.items(state):
                # Not interned (pickle interns): interned strings are immortal on 3.12,
                # and every result's names stayed in the caller for good (round 16).
                instance_dict[_attribute_name(key)] = value
        if slotstate:
            if type(slotstate) is not dict:
                raise _refuse("an object's slot state must be a dict")
            for key, value in dict.items(slotstate):
                _set_slot(target, _attribute_name(key), value)

    dispatch = dict(_DISPATCH)
    dispatch[pickle.BUILD[0]] = _load_build  # type: ignore[assignment]
    dispatch[pickle.INST[0]] = _refused_opcode  # type: ignore[assignment]
    dispatch[pickle.OBJ[0]] = _refused_opcode  # type: ignore[assignment]
    dispatch[pickle.DUP[0]] = _refused_dup  # type: ignore[assignment]
    for _op in (pickle.GET, pickle.BINGET, pickle.LONG_BINGET):
        dispatch[_op[0]] = _after_get(_DISPATCH[_op[0]])
    dispatch[pickle.APPEND[0]] = _load_append  # type: ignore[assignment]
    dispatch[pickle.APPENDS[0]] = _load_appends  # type: ignore[assignment]
    dispatch[pickle.ADDITEMS[0]] = _load_additems  # type: ignore[assignment]
    dispatch[pickle.SETITEM[0]] = _load_setitem  # type: ignore[assignment]
    dispatch[pickle.SETITEMS[0]] = _load_setitems  # type: ignore[assignment]
    dispatch[pickle.FROZENSET[0]] = _load_frozenset  # type: ignore[assignment]
    for _op, _taken in ((pickle.TUPLE, 0), (pickle.TUPLE1, 1), (pickle.TUPLE2, 2),
                        (pickle.TUPLE3, 3)):
        dispatch[_op[0]] = _nesting(_DISPATCH[_op[0]], _taken)
    for _op, _maker_at, _called in ((pickle.NEWOBJ, 2, False), (pickle.NEWOBJ_EX, 3, False),
                                    (pickle.REDUCE, 2, True)):
        dispatch[_op[0]] = _fresh_after(_DISPATCH[_op[0]], _maker_at, _called)

    def __init__(self, file: io.BytesIO, refs: tuple[object, ...], policy: Policy) -> None:
        super().__init__(file)
        self._refs = refs
        self._policy = policy
        self._inert: dict[int, _Inert] = {}           # placeholders made, by id
        self._owned: dict[int, list[_Inert]] = {}     # placeholders inside each one's state
        self._kept: set[int] = set()                  # inside a caller's class state
        self._fresh: dict[int, object] = {}           # objects made here, by id
        self._handed: dict[int, object] = {}          # functions find_class handed out
        self._made_exceptions: list[BaseException] = []   # to defuse once loaded
        self._depths: dict[int, int] = {}             # how deep each container goes
        self._depth_holders: list[object] = []        # ...kept alive while loading
        self._pattern_chars = 0                       # of the patterns compiled here
        # Items _check_call may walk in all: a few per byte of the result.
        self._walk_budget = [4 * len(file.getbuffer()) + 100_000]
        # Characters of long strings the memo may repeat in all.
        self._repeat_budget = 4 * len(file.getbuffer()) + (1 << 20)
        self._keys_added: dict[int, int] = {}         # keys put in other containers, by id
        self._spreads: dict[int, _Spread] = {}        # the hashes of those keys, past a few
        self._own = {
            ("subsandbox._crossing", "_make_function"): self._make_function,
            ("subsandbox._crossing", "_fill_function"): self._fill_function,
            ("subsandbox._crossing", "_fill_class"): self._keep_class,
            # A method wrapper or property holds functions: inert too, and kept only with
            # the caller's class state that holds it, with the functions inside it.
            ("subsandbox._crossing", "_make_staticmethod"): self._make_wrapper,
            ("subsandbox._crossing", "_make_classmethod"): self._make_wrapper,
            ("subsandbox._crossing", "_make_property"): self._make_wrapper,
        }

    def _spread_into(self, target: object, items: list[object], step: int = 1) -> None:
        """Before the keys ``items[::step]`` go into ``target``: once it holds more keys
        than one hash may, count their hashes (_Spread). A smaller dict or set costs a
        len()."""
        keys = (len(items) + step - 1) // step
        if type(target) in (dict, set):
            # Nothing leaves a dict or set during a load: once past the bound, it stays.
            if len(target) + keys <= _SAME_HASH_MAX:  # type: ignore[arg-type]
                return
        else:   # other classes' __len__ is not called: count what went in
            added = self._keys_added.get(id(target), 0) + keys
            self._keys_added[id(target)] = added
            if added <= _SAME_HASH_MAX:
                return
        spread = self._spreads.get(id(target))
        if spread is None:
            spread = self._spreads[id(target)] = _Spread()
            if type(target) is dict or type(target) is set:
                spread.add(list(target), 1)     # the keys already in it
            # (Another class's keys before these, at most _SAME_HASH_MAX, are not
            # counted: they can only double the bound.)
        spread.add(items, step)

    def _make_function(self, code: bytes, name: str, qualname: str, *rest: object) -> _Inert:
        inert = _Inert(qualname)
        self._inert[id(inert)] = inert
        return inert

    def _make_wrapper(self, *functions: object) -> _Inert:
        inert = _Inert("a method or property")
        self._inert[id(inert)] = inert
        self._owned[id(inert)] = [f for f in functions if isinstance(f, _Inert)]
        return inert

    def _fill_function(self, fn: object, state: dict[str, Any]) -> None:
        if not isinstance(fn, _Inert) or not isinstance(state, dict):
            raise pickle.UnpicklingError(_NO_FUNCTION)
        inside = [i for value in state.values() for i in _inert_values(value)]
        self._owned.setdefault(id(fn), []).extend(inside)

    def _keep_class(self, cls: type, attrs: dict[str, Any]) -> None:
        """The caller's class stays as the caller defined it; the state sent is dropped."""
        if not isinstance(attrs, dict):
            raise pickle.UnpicklingError("a class's state must be a dict")
        stack = [i for value in attrs.values() for i in _inert_values(value)]
        while stack:
            inert = stack.pop()
            if id(inert) not in self._kept:
                self._kept.add(id(inert))
                stack.extend(self._owned.get(id(inert), ()))

    def load(self) -> Any:
        try:
            value = super().load()
            stray = [i for key, i in self._inert.items() if key not in self._kept]
            if stray:
                raise pickle.UnpicklingError(f"{_NO_FUNCTION} (function {stray[0].name!r})")
            for exc in self._made_exceptions:
                defuse_exception(exc)
            return value
        finally:
            # self._own holds bound methods of self: a cycle that kept every object the
            # load made (self._fresh) alive until the caller's next garbage collection.
            self._own.clear()
            self._fresh.clear()
            self._handed.clear()
            self._made_exceptions.clear()
            self._depths.clear()
            self._depth_holders.clear()
            self._keys_added.clear()
            self._spreads.clear()

    def _count_pattern(self, args: object) -> None:
        """A pattern is compiled again here, at up to ~0.6 ms per character of its text (a
        case-insensitive class over a wide range) or in time that grows with the square
        of its length (alternatives with a long shared prefix: 640,000 characters took
        11 s; round 17): a result's patterns may hold so many characters in all."""
        pattern = args[0] if type(args) is tuple and args else None
        if type(pattern) not in (str, bytes):
            raise _refuse("a pattern must be a str or bytes")
        self._pattern_chars += len(pattern)  # type: ignore[arg-type]
        if self._pattern_chars > _PATTERN_CHARS_MAX:
            raise _refuse(f"the compiled patterns of a result may hold at most "
                          f"{_PATTERN_CHARS_MAX} characters in all (compiling some costs "
                          f"~0.6 ms per character): return the pattern's text and flags")

    def _nest(self, holder: object, items: Iterable[object]) -> None:
        """``holder`` now holds ``items``: it is one deeper than the deepest of them. A
        result is refused past _DEPTH_MAX: CPython hashes a tuple and frees a deque, a
        defaultdict or an OSError's C members by recursion in C without a depth check,
        and a million-deep chain overflowed the caller's C stack when it hashed or
        dropped one (3.12, 3.13; the tuple's hash on 3.14 too: rounds 17, 18). Counted
        for tuples and for what calls make and fill; a builtin list, dict or set is not
        counted (it is freed with the trashcan and hashes nothing), which also keeps the
        count off the usual result's path."""
        depths = self._depths
        depth = 1 + max(map(depths.get, map(id, items), repeat(0)), default=0)
        if depth > depths.get(id(holder), 0):
            if depth > _DEPTH_MAX:
                raise _refuse(f"a result nested more than {_DEPTH_MAX} deep")
            if id(holder) not in depths:
                self._depth_holders.append(holder)   # alive, so its id is not reused
            depths[id(holder)] = depth

    def _filling(self, target: object, items: Sequence[object], builtin: type) -> None:
        """Before ``items`` go into ``target``, by an opcode whose own container is
        ``builtin`` (list for APPEND(S), dict for SETITEM(S), set for ADDITEMS). Items go
        only into a container this load made: a builtin one (nothing else puts one on the
        stack), or an object a class made (NEWOBJ, REDUCE). A dict subclass whose __new__
        handed out the caller's singleton got the sandbox's items (a red-team run, round
        16), as BUILD had got its state (round 14). Anything but the builtin is as deep
        as its items make it (_nest)."""
        if type(target) is builtin:
            return
        if type(target) not in (dict, list, set) and self._fresh.get(id(target)) is not target:
            raise _refuse(f"items may go only into containers the result makes, not into "
                          f"a {type(target).__name__!r} object this interpreter has")
        self._nest(target, items)

    def find_class(self, module: str, name: str) -> Any:
        value = self._find_class(module, name)
        if not isinstance(value, type):
            self._handed[id(value)] = value
        return value

    def _find_class(self, module: str, name: str) -> Any:
        own = self._own.get((module, name))
        if own is not None:
            return own
        special = _MACHINERY.get((module, name))
        if special is not None:
            return special
        if module == "builtins":
            value = getattr(builtins, name, None)
            if name in _DATA_BUILTINS or (isinstance(value, type)
                                          and issubclass(value, BaseException)):
                return value
        elif (self._policy.allows_import(module) and not any(
                part.startswith("__") for part in name.split("."))
              and not any(part.startswith("_") for part in module.split("."))
              and module not in _NOT_DATA_MODULES):
            # (Not from a private module: re._parser's SubPattern iterates its data
            # through __getitem__, and looped in the caller: round 16.)
            if (module, name) == ("re", "_compile"):
                super().find_class(module, name)    # imports re here, as pickle would
                return _re_compile
            if (module, name) in _RECONSTRUCTORS:
                return super().find_class(module, name)
            if module.partition(".")[0] not in _EFFECT_MODULES:
                value = super().find_class(module, name)
                # The class must be the one defined under this very name, as pickle itself
                # writes it: a path through another object ('random', '_os._Environ' is
                # os._Environ, whose __setitem__ calls os.putenv) would let a granted
                # module lend out the classes of any module it imported.
                if (isinstance(value, type) and not issubclass(value, type)
                        and getattr(value, "__module__", None) == module
                        and getattr(value, "__qualname__", None) == name
                        and not _instances_are_callable(value)
                        and not _instances_are_iterators(value)
                        and (module, name) not in _NOT_DATA):
                    return value
        raise pickle.UnpicklingError(
            f"{module}.{name} cannot come out of a sandbox under the policy "
            f"{self._policy.name!r}: only data can, and the data classes of the modules "
            f"the policy grants, each by its own module and name (not their functions, "
            f"not callable objects, not the classes of modules of effects such as io, os "
            f"or subprocess)")

    def persistent_load(self, pid: Any) -> object:
        return self._refs[pid]


def loader(policy: Policy) -> Callable[[bytes, tuple[object, ...]], Any]:
    """``loads(data, refs)`` for values coming out of a sandbox under ``policy``."""

    def loads(data: bytes, refs: tuple[object, ...]) -> Any:
        return _ResultUnpickler(io.BytesIO(data), refs, policy).load()

    return loads
