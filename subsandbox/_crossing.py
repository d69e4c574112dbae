"""How a callable, its arguments and its result cross between interpreters.

Three ways, tried in this order for every object:

1. By reference, zero copy: shared objects (``subsandbox.share``), channels and arena
   handles are set aside by the pickler and travel through the C channel as pointers.
2. Functions the other side cannot import by name (defined in ``__main__``, a script, a
   notebook or a REPL, or ``__mp_main__``, the main script of a multiprocessing child;
   lambdas; nested functions) travel as their code object (``marshal``) plus the values
   of the globals, closure cells and defaults they use, and are rebuilt there, as
   cloudpickle does. Classes defined in ``__main__`` travel the same way: what ``type()``
   needs to make them again, then their attributes (methods, properties, slots,
   dataclass fields, enum members...; see "classes by value" below). Modules travel by
   name.
3. Everything else is pickled (by reference for importable functions and classes).

What cannot cross raises ``TypeError`` that names the part at fault and why.
"""

from __future__ import annotations

import builtins
import functools  # already loaded by _pickle, which every sandbox imports
import importlib
import io
import marshal
import sys
import types

# The C pickler itself (pickle.Pickler *is* _pickle.Pickler): pickle.py would also
# import re, enum and struct into every sandbox, and their strings stay for good once
# it is destroyed (docs/lifecycle.md, "Memory of closed sandboxes").
import _pickle
import _thread
import _weakref

# Not `import typing`: a sandbox that imports it keeps ~1,300 more strings for good
# once destroyed (docs/lifecycle.md, "Memory of closed sandboxes").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

from . import _core

_is_reference: Callable[[object], bool] = _core._is_reference

# Classes that crossed by value, by their key (interpreter id and id() of the class where
# it was defined): sending the same __main__ class twice must give the same class, and
# an instance coming back must be of the sender's own class, or isinstance() would fail.
_rebuilt_classes: dict[tuple[int, int], type] = {}
_KEY_ATTR = "__subsandbox_key__"

# The names of the main script's module: a multiprocessing spawn or forkserver child runs
# the parent's script as "__mp_main__" (and also calls it __main__), a name no other
# interpreter can import, so what it defines crosses by value just as __main__'s does.
_MAIN_MODULES = frozenset({"__main__", "__mp_main__"})


def _global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the code nested in it) may look up as globals.

    ``co_names`` also holds attribute names; shipping a global that happens to share a
    name with an attribute costs a little and changes nothing, and reading ``co_names``
    is far cheaper than disassembling.
    """
    names: set[str] = set()
    stack = [code]
    while stack:
        co = stack.pop()
        names.update(co.co_names)
        stack.extend(c for c in co.co_consts if isinstance(c, types.CodeType))
    return names


def _importable(obj: Any) -> bool:
    """True when ``obj`` is reachable by ``module.qualname`` as the very same object."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module_name or not qualname or module_name in _MAIN_MODULES:
        return False
    if "<locals>" in qualname or "<lambda>" in qualname:
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return False
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is obj


def _main_globals() -> dict[str, Any]:
    return sys.modules["__main__"].__dict__


def _function_globals(module_name: str | None) -> dict[str, Any]:
    """The globals a function shipped by value gets on this side.

    A function from the sender's ``__main__`` runs in this interpreter's ``__main__``; one
    nested in an importable module gets that module's namespace here.
    """
    if module_name is None or module_name in _MAIN_MODULES:
        return _main_globals()
    try:
        return importlib.import_module(module_name).__dict__
    except ImportError:
        return {"__builtins__": builtins, "__name__": module_name}


# -- functions by value: where they live on arrival ------------------------------------------
#
# In a sandbox, a function of the caller's main script runs in the sandbox's own __main__,
# where the globals it names are written: each the first time it arrives, and again
# whenever the caller's script has bound the name to another object since (see "globals
# by binding" below). Otherwise the sandbox keeps its own binding, which its code may have
# changed (an initializer's `global STATE`, a per-worker cache), as a worker process keeps
# the globals of the script it imported. The main interpreter's __main__ is the user's
# program itself, never written by a function that arrives:
#   - a function of its own that comes back (shipped to a sandbox, returned from there)
#     is the very function it sent, found by its key;
#   - any other (made in a sandbox) gets a namespace of its own, shared with the
#     functions that arrive with it from the same namespace, as cloudpickle does.

# Functions of this interpreter shipped by value, by key: each comes back as itself.
# (The C modules _weakref and _thread, not weakref and threading: a sandbox imports this
# module, and each module it imports costs every sandbox memory for good on 3.12/3.13:
# docs/lifecycle.md.) A function rebuilt here carries the key of the one it copies in
# its __dict__, as a class does (_KEY_ATTR).
_shipped_functions: dict[tuple[int, int], Any] = {}     # key -> weak reference
# The namespaces made in the current loads() for arriving functions, by the sender's
# namespace (see above).
_load_state = _thread._local()


def _function_key(fn: types.FunctionType) -> tuple[int, int]:
    key: tuple[int, int] | None = vars(fn).get(_KEY_ATTR)
    if key is None:
        key = (_core.interpreter_id(), id(fn))
        if key not in _shipped_functions:
            _shipped_functions[key] = _weakref.ref(fn, _ForgetShipped(key))
    return key


class _ForgetShipped:
    """The weak reference's callback: the function is gone, and its id() may be reused."""

    def __init__(self, key: tuple[int, int]) -> None:
        self.key = key

    def __call__(self, _ref: object) -> None:
        _shipped_functions.pop(self.key, None)


def _arrival_namespace(module_name: str | None, key: tuple[int, int],
                       globals_id: int) -> dict[str, Any]:
    if _core.interpreter_id() != 0 or module_name not in _MAIN_MODULES:
        return _function_globals(module_name)
    namespaces: dict[tuple[int, int], dict[str, Any]] | None = getattr(
        _load_state, "namespaces", None)
    if namespaces is None:
        namespaces = {}     # not inside loads(): one namespace for this function alone
    where = (key[0], globals_id)
    namespace = namespaces.get(where)
    if namespace is None:
        namespace = namespaces[where] = {"__builtins__": builtins, "__name__": module_name}
    return namespace


def _make_function(code_bytes: bytes, name: str, qualname: str, module_name: str | None,
                   ncells: int, key: tuple[int, int] | None = None,
                   globals_id: int = 0) -> types.FunctionType:
    if key is not None and key[0] == _core.interpreter_id():
        ref = _shipped_functions.get(key)
        original = ref() if ref is not None else None
        if original is not None:
            return original  # type: ignore[no-any-return]  # back home: left as it is
    code = marshal.loads(code_bytes)
    closure = tuple(types.CellType() for _ in range(ncells)) or None
    namespace = (_function_globals(module_name) if key is None
                 else _arrival_namespace(module_name, key, globals_id))
    fn = types.FunctionType(code, namespace, name, None, closure)
    fn.__qualname__ = qualname
    fn.__module__ = module_name  # type: ignore[assignment]
    if key is not None:
        vars(fn)[_KEY_ATTR] = key
    return fn


def _fill_function(fn: types.FunctionType, state: dict[str, Any]) -> None:
    if _KEY_ATTR not in vars(fn):
        # A function of this interpreter that came back: it keeps its own globals,
        # defaults and closure; the copies the other side sent are dropped.
        return
    # The globals are set after the function exists, so a function that calls itself
    # (or two that call each other) crosses as one graph, through pickle's memo.
    _install_globals(fn.__globals__, state["globals"], state.get("bindings"))
    fn.__defaults__ = state["defaults"]
    fn.__kwdefaults__ = state["kwdefaults"]
    fn.__doc__ = state["doc"]
    fn.__dict__.update(state["dict"])
    for cell, value in zip(fn.__closure__ or (), state["closure"]):
        if value is not _EMPTY_CELL:
            cell.cell_contents = value


# -- globals by binding ----------------------------------------------------------------------
#
# A global of the caller's __main__ crosses with every function that names it, but it is
# written into the sandbox's __main__ only when the sandbox has not had this binding yet:
# the caller sends, with each value, a token of the binding it came from (a new token each
# time the caller's name is bound to another object), and the sandbox writes the value
# when the token differs from the one it last wrote under that name. So the caller's
# rebinding (`LIMIT = 20`) reaches the sandbox, and the sandbox's own changes (a rebinding
# by an initializer, an append to a module-level cache) stay until then, whatever the
# value's type. A change made in place in the caller (`CONFIG["k"] = v`) is not a new
# binding and does not reach a sandbox that already has the object: rebind it, or pass it.

# Sender: id(namespace) -> [the namespace, sends since its last sweep, {name: (object last
# sent, its token)}]. The objects are kept only to compare identities (an id can be
# reused once its object is gone); every _SWEEP_EVERY sends from a namespace, the ones it
# no longer binds are let go (a sweep at every send cost ~2 us per 30 names).
_sent_bindings: dict[int, list[Any]] = {}
_SWEEP_EVERY = 16
_binding_counter = iter(range(1, sys.maxsize))  # next() is atomic under the GIL
_UNBOUND = object()
# Receiver: name -> the token of the binding last written into this interpreter's __main__.
_written_bindings: dict[str, tuple[int, int]] = {}


def _binding_tokens(namespace: dict[str, Any],
                    shipped: dict[str, Any]) -> tuple[int, tuple[int, ...]]:
    """This interpreter's id and the token of each shipped global's binding, in order."""
    entry = _sent_bindings.get(id(namespace))
    if entry is None or entry[0] is not namespace:
        entry = _sent_bindings[id(namespace)] = [namespace, 0, {}]
    sent: dict[str, tuple[object, int]] = entry[2]
    entry[1] += 1
    if entry[1] >= _SWEEP_EVERY:
        entry[1] = 0
        get = namespace.get
        # list(): one step under the GIL, where iterating the dict itself could meet
        # another thread's send adding a name ("dictionary changed size").
        for name, (value, _) in list(sent.items()):
            if get(name, _UNBOUND) is not value:
                sent.pop(name, None)
    tokens = []
    for name, value in shipped.items():
        last = sent.get(name)
        if last is None or last[0] is not value:
            last = sent[name] = (value, next(_binding_counter))
        tokens.append(last[1])
    return _core.interpreter_id(), tuple(tokens)


def _install_globals(namespace: dict[str, Any], values: dict[str, Any],
                     bindings: tuple[int, tuple[int, ...]] | None) -> None:
    if bindings is None or namespace is not _main_globals():
        # A namespace made for this load alone (a sandbox's function arriving in the
        # main interpreter), or a module's: nothing of its own to keep.
        namespace.update(values)
        return
    sender, tokens = bindings
    written = _written_bindings
    for (name, value), number in zip(values.items(), tokens):
        token = (sender, number)
        if name not in namespace or written.get(name) != token:
            namespace[name] = value
            written[name] = token


class _EmptyCell:
    def __reduce__(self) -> str:
        return "_EMPTY_CELL"


_EMPTY_CELL = _EmptyCell()


# -- classes by value ----------------------------------------------------------------------
#
# As cloudpickle does: a class crosses as (1) what ``type()`` needs to make it, its name,
# bases, metaclass and ``__slots__``, then (2) its attributes, set on it once it exists.
# Its methods and whatever else may refer back to the class are in (2), so a class that
# names itself crosses as one graph through pickle's memo. The attributes ``type()`` makes
# by itself (slot descriptors, ``__dict__``) are left for it to make again, and the
# objects pickle cannot take (staticmethod, classmethod, property, mappingproxy, the
# dataclasses sentinels) get reducers of their own, below.

# Never shipped as attributes: made by type() itself (__dict__, __weakref__), sent to
# _make_class (__module__, __qualname__, and __slots__ and __orig_bases__ in the namespace
# the class is made with), or handled apart (_abc_impl). __classdictcell__ (3.14) is the
# cell that gives a class's annotate function the class namespace, which typing.NamedTuple
# copies into its class; that function crosses with the part it reads (_cell_values).
_CLASS_SKIP = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__", "__slots__",
                         "__orig_bases__", "__classdictcell__", "_abc_impl", _KEY_ATTR})

# A key of a class's state that is no attribute: the classes registered as virtual
# subclasses of an abc.ABC, registered again on the other side.
_ABC_REGISTRY = "__subsandbox_abc_registry__"


def _class_key(cls: type) -> tuple[int, int]:
    """The key a class crosses under: where it was defined, and its id() there."""
    key: tuple[int, int] | None = vars(cls).get(_KEY_ATTR)
    if key is None:
        key = (_core.interpreter_id(), id(cls))
        _rebuilt_classes[key] = cls  # so that it comes back as itself
    return key


def _cannot_cross(cls: type, why: str) -> TypeError:
    return TypeError(f"the class {cls.__qualname__!r} is defined in the main script, so it "
                     f"would cross by value, and {why}: define it in an importable module, "
                     f"which the other side imports by name")


def _is_own_slot(cls: type, value: object) -> bool:
    """True for the member descriptor ``type()`` made for one of ``cls``'s __slots__."""
    return type(value) is types.MemberDescriptorType and value.__objclass__ is cls


def _creation_namespace(cls: type) -> dict[str, Any] | None:
    """What must already be in the namespace when the class is made.

    Its ``__slots__``, which ``type()`` turns into member descriptors (those cannot be
    made afterwards), and its ``__orig_bases__`` (``Generic[T]``), which
    ``Generic.__init_subclass__`` reads as the class is made: without them it refuses a
    class whose base is plain ``Generic``.
    """
    own = vars(cls)
    namespace: dict[str, Any] = {}
    if "__orig_bases__" in own:
        namespace["__orig_bases__"] = own["__orig_bases__"]
    if "__slots__" in own:
        slots = own["__slots__"]
        if not isinstance(slots, (str, tuple, list, dict)):
            # Any iterable will do for class creation; an iterator is used up by now, so
            # the names come from the descriptors it made. Their names are already mangled,
            # and a mangled name ("_C__x") is not mangled again.
            slots = tuple(name for name, value in own.items() if _is_own_slot(cls, value))
            slots += tuple(name for name in ("__dict__", "__weakref__") if name in own)
        namespace["__slots__"] = slots
    return namespace or None


def _class_state(cls: type) -> dict[str, Any]:
    """The attributes set on the class once it exists."""
    state = {name: value for name, value in vars(cls).items()
             if name not in _CLASS_SKIP and not _is_own_slot(cls, value)}
    if "_abc_impl" in vars(cls):
        # abc's registry is C data that pickle cannot take, and the other side's ABCMeta
        # makes its own; the classes registered in it travel as a list.
        refs = sys.modules["_abc"]._get_dump(cls)[0]
        state[_ABC_REGISTRY] = [sub for sub in (ref() for ref in refs) if sub is not None]
    return state


def _is_typeddict(cls: type) -> bool:
    return type(cls).__module__ == "typing" and type(cls).__name__ == "_TypedDictMeta"


def _reduce_class(cls: type) -> Any:
    if _is_enum(cls):
        return _reduce_enum(cls)
    if _is_typeddict(cls):
        # typing makes a TypedDict class from its annotations with helpers of its own, each
        # version its own way; its instances are plain dicts, and cross as such.
        raise _cannot_cross(cls, "a TypedDict class cannot be made again from its "
                                 "attributes")
    if not _typevars_tracked[0] and _GENERIC_ATTRS.intersection(vars(cls)):
        _track_typevars()
    args = (_class_key(cls), cls.__name__, cls.__qualname__, cls.__module__, cls.__bases__,
            type(cls), _creation_namespace(cls))
    return _make_class, args, _class_state(cls), None, None, _fill_class


def _make_class(key: tuple[int, int], name: str, qualname: str, module_name: str,
                bases: tuple[type, ...], metaclass: type,
                namespace: dict[str, Any] | None = None) -> type:
    cls = _rebuilt_classes.get(key)
    if cls is None:
        with _Making(qualname):
            cls = metaclass(name, bases, {**(namespace or {}), "__module__": module_name,
                                          "__qualname__": qualname, _KEY_ATTR: key})
        _rebuilt_classes[key] = cls
    return cls


class _Making:
    """Names the class when making it again fails on this side.

    The usual cause: a base's ``__init_subclass__`` or the metaclass needs the keyword
    arguments of the class statement (``class C(Base, option=1)``), which no class keeps.
    """

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if isinstance(exc, TypeError):
            raise TypeError(
                f"the class {self.qualname!r} crossed by value from the main script, and "
                f"could not be made again on this side ({exc}); a class whose making needs "
                f"the keyword arguments of its class statement cannot cross by value: "
                f"define it in an importable module, which this side imports by name"
            ) from exc


def _fill_class(cls: type, attrs: dict[str, Any]) -> None:
    if _KEY_ATTR not in vars(cls):
        # The class came back to the interpreter that defined it: it stays as its own code
        # made it (as under a policy, see _untrusted), and what the other side sent, its
        # copies of the methods and of its enum members' data, is dropped.
        return
    for attr, value in attrs.items():
        if attr == _ABC_REGISTRY:
            for subclass in value:
                cls.register(subclass)  # type: ignore[attr-defined]
        elif attr == _ENUM_MEMBER_ATTRS:
            _fill_enum_members(cls, value)
        else:
            setattr(cls, attr, value)


# -- enums ---------------------------------------------------------------------------------
#
# An enum's members are made by its metaclass while the class is made, so they cannot be
# set afterwards like other attributes: the class is made from its members' values (as
# cloudpickle does), each member crosses as ``Color(value)`` (Enum.__reduce_ex__), and so
# is the very member of the class on the side where it arrives: ``is`` holds there.

# What EnumType makes from the members and bases (3.12 to 3.14): made again, never sent.
_ENUM_MADE = frozenset({
    "_new_member_", "_use_args_", "_member_names_", "_member_map_", "_value2member_map_",
    "_unhashable_values_", "_hashable_values_", "_unhashable_values_map_", "_member_type_",
    "_value_repr_", "_boundary_", "_flag_mask_", "_singles_mask_", "_all_bits_",
    "_inverted_", "_generate_next_value_", "__new__",
})
# A member's own attributes as the metaclass sets them; any other (set by the enum's
# __init__ or __new__) crosses in the class's state under _ENUM_MEMBER_ATTRS.
_ENUM_MEMBER_OWN = frozenset({"_value_", "_name_", "__objclass__", "_sort_order_"})
_ENUM_MEMBER_ATTRS = "__subsandbox_enum_members__"


def _is_enum(cls: type) -> bool:
    enum = sys.modules.get("enum")  # not imported here: no enum, no enum class
    return enum is not None and isinstance(cls, enum.EnumType)


def _reduce_enum(cls: type) -> Any:
    members: dict[str, Any] = dict(cls.__members__)  # type: ignore[attr-defined]
    if cls._member_type_ is not object and any(  # type: ignore[attr-defined]
            "__new_member__" in vars(base) for base in cls.__mro__
            if base.__module__ in _MAIN_MODULES):
        # Its members were made by its own __new__, from the data type it mixes in: made
        # again from their values by the data type's own __new__, they could hold other data.
        raise _cannot_cross(cls, "its members, made by its own __new__ from a data type, "
                                 "cannot be made again from their values")
    values = {name: member._value_ for name, member in members.items()}
    # A Flag's boundary decides which values its metaclass accepts: made with the same one.
    args = (_class_key(cls), cls.__name__, cls.__qualname__, cls.__module__, cls.__bases__,
            type(cls), values, vars(cls).get("_boundary_"))
    return _make_enum, args, _enum_state(cls), None, None, _fill_class


def _enum_state(cls: type) -> dict[str, Any]:
    """An enum's attributes less its members and what its metaclass makes of them, plus
    the attributes its members got from its __init__ or __new__."""
    members: dict[str, Any] = dict(cls.__members__)  # type: ignore[attr-defined]
    state = {name: value for name, value in _class_state(cls).items()
             if name not in _ENUM_MADE and name not in members}
    extra = {name: own for name, member in members.items() if member._name_ == name
             and (own := {k: v for k, v in getattr(member, "__dict__", {}).items()
                          if k not in _ENUM_MEMBER_OWN})}
    if extra:
        state[_ENUM_MEMBER_ATTRS] = extra
    return state


def _make_enum(key: tuple[int, int], name: str, qualname: str, module_name: str,
               bases: tuple[type, ...], metaclass: Any, values: dict[str, Any],
               boundary: object) -> type:
    cls = _rebuilt_classes.get(key)
    if cls is None:
        member = sys.modules["enum"].member  # the enum module came with the metaclass
        namespace = metaclass.__prepare__(name, bases)
        namespace["__module__"] = module_name
        namespace["__qualname__"] = qualname
        namespace[_KEY_ATTR] = key
        for member_name, value in values.items():
            # enum.member(): a member whatever its value is (a value with __get__ would
            # otherwise be taken for a method). Aliases share a value, as they did.
            namespace[member_name] = member(value)
        kwargs = {} if boundary is None else {"boundary": boundary}
        with _Making(qualname):
            cls = metaclass(name, bases, namespace, **kwargs)
        _rebuilt_classes[key] = cls
    return cls


def _fill_enum_members(cls: type, extra: dict[str, dict[str, Any]]) -> None:
    for name, attrs in extra.items():
        # Into the member's __dict__, as its __init__ or __new__ set them, past any
        # __setattr__ the enum defines.
        vars(getattr(cls, name)).update(attrs)


# -- parts of classes that pickle cannot take ----------------------------------------------

# What staticmethod() and classmethod() copy from the function they wrap into their own
# __dict__: made again by wrapping it again.
_WRAPPER_COPIED = frozenset({"__module__", "__name__", "__qualname__", "__doc__",
                             "__annotations__", "__annotate__", "__wrapped__"})


def _wrapper_extra(wrapper: object) -> dict[str, Any] | None:
    extra = {k: v for k, v in vars(wrapper).items() if k not in _WRAPPER_COPIED}
    return extra or None


def _reduce_staticmethod(obj: staticmethod[..., Any]) -> Any:
    return _make_staticmethod, (obj.__func__,), _wrapper_extra(obj)


def _make_staticmethod(fn: Callable[..., Any]) -> staticmethod[..., Any]:
    return staticmethod(fn)


def _reduce_classmethod(obj: classmethod[Any, ..., Any]) -> Any:
    return _make_classmethod, (obj.__func__,), _wrapper_extra(obj)


def _make_classmethod(fn: Callable[..., Any]) -> classmethod[Any, ..., Any]:
    return classmethod(fn)


def _reduce_property(obj: property) -> Any:
    return _make_property, (obj.fget, obj.fset, obj.fdel, obj.__doc__)


def _make_property(fget: Callable[[Any], Any] | None, fset: Callable[[Any, Any], None] | None,
                   fdel: Callable[[Any], None] | None, doc: str | None) -> property:
    return property(fget, fset, fdel, doc)


def _reduce_mappingproxy(obj: types.MappingProxyType[Any, Any]) -> Any:
    # A read-only view (a dataclass field's metadata): crosses as a view of a copy.
    return _make_mappingproxy, (dict(obj),)


def _make_mappingproxy(mapping: dict[Any, Any]) -> types.MappingProxyType[Any, Any]:
    return types.MappingProxyType(mapping)


# dataclasses tells its fields apart by identity with its own sentinels (a field is a field
# when its _field_type `is _FIELD`, has no default when its default `is MISSING`): each
# crosses by name, and is the other side's own.
_DATACLASS_SENTINELS = ("MISSING", "KW_ONLY", "_FIELD", "_FIELD_CLASSVAR", "_FIELD_INITVAR",
                        "_HAS_DEFAULT_FACTORY")
_dataclass_sentinel_names: dict[int, str] = {}


def _track_dataclass_sentinels() -> None:
    """Give the sentinels' types a reducer, once dataclasses is imported here (never
    imported by this module: nothing can hold a sentinel before)."""
    dataclasses = sys.modules.get("dataclasses")
    if dataclasses is None or _dataclass_sentinel_names:
        return
    for name in _DATACLASS_SENTINELS:
        sentinel = getattr(dataclasses, name, None)
        if sentinel is not None and not isinstance(sentinel, type):
            _dataclass_sentinel_names[id(sentinel)] = name
            _REDUCERS[type(sentinel)] = _reduce_dataclass_sentinel


def _reduce_dataclass_sentinel(obj: object) -> Any:
    name = _dataclass_sentinel_names.get(id(obj))
    if name is None:
        return NotImplemented  # another instance of the type: pickled as pickle would
    return _dataclass_sentinel, (name,)


def _dataclass_sentinel(name: str) -> object:
    if name not in _DATACLASS_SENTINELS:
        raise ValueError(f"{name!r} is not a dataclasses sentinel")
    return getattr(importlib.import_module("dataclasses"), name)


# -- type variables ------------------------------------------------------------------------
#
# A TypeVar pickles by its name in its module, where the other side cannot find one of the
# main script (``T = TypeVar("T")``) or of a PEP 695 class (``class Box[T]``): those cross
# by value, under a key as classes do, so that one TypeVar is one object on each side
# (``Box[T]`` is only the same alias with the same ``T``).

_TYPEVAR_KINDS = ("TypeVar", "ParamSpec", "TypeVarTuple")
# A class with one of these attributes has type variables: their reducers are needed.
_GENERIC_ATTRS = frozenset({"__orig_bases__", "__parameters__", "__type_params__"})
_rebuilt_typevars: dict[tuple[int, int], object] = {}
_typevar_keys: dict[int, tuple[int, int]] = {}  # by id() of the TypeVar, held in the above
# Holds True once the reducers are in: a list, not a global rebound, because a sandbox under
# a policy seals this module's namespace (_enforce.install; seal.c) and any rebinding of it
# afterwards breaks the policy.
_typevars_tracked = [False]


def _track_typevars() -> None:
    """Give the type variables' types a reducer: done the first time a generic class (or,
    with ``typing`` imported, anything) is pickled here, so that a sandbox that never
    meets one does not import even the small builtin ``_typing``."""
    # Loaded already wherever typing is (no import: once a policy's seal is broken, every
    # import is refused, and an exception must still cross).
    typing_types = sys.modules.get("_typing") or importlib.import_module("_typing")
    for kind in _TYPEVAR_KINDS:
        _REDUCERS[getattr(typing_types, kind)] = _reduce_typevar
    _typevars_tracked[0] = True


def _reduce_typevar(tv: Any) -> Any:
    module = sys.modules.get(tv.__module__)
    if tv.__module__ not in _MAIN_MODULES and getattr(module, tv.__name__, None) is tv:
        return NotImplemented  # found by name on the other side, as pickle does it
    key = _typevar_keys.get(id(tv))
    if key is None:
        key = (_core.interpreter_id(), id(tv))
        _typevar_keys[id(tv)] = key
        _rebuilt_typevars[key] = tv  # so that it comes back as itself
    options = {option: getattr(tv, f"__{option}__")
               for option in ("bound", "covariant", "contravariant", "infer_variance")
               if hasattr(tv, f"__{option}__")}
    if getattr(tv, "has_default", None) is not None and tv.has_default():  # 3.13+
        options["default"] = tv.__default__
    constraints = getattr(tv, "__constraints__", ())
    return _make_typevar, (key, type(tv).__name__, tv.__name__, constraints, options)


def _make_typevar(key: tuple[int, int], kind: str, name: str, constraints: tuple[Any, ...],
                  options: dict[str, Any]) -> object:
    tv = _rebuilt_typevars.get(key)
    if tv is None:
        if kind not in _TYPEVAR_KINDS:
            raise ValueError(f"{kind!r} is not a kind of type variable")
        tv = getattr(importlib.import_module("_typing"), kind)(name, *constraints, **options)
        _rebuilt_typevars[key] = tv
        _typevar_keys[id(tv)] = key
    return tv


# -- functools.cache / lru_cache of a function that crosses by value -------------------------
#
# The wrapper pickles by module and qualname, which the sandbox's __main__ does not have
# (`@functools.cache def fib` of a script failed there with "no attribute 'fib'"). It
# crosses as the function it wraps and its two parameters, and is wrapped again on the
# other side, with an empty cache of its own. A wrapper that the function names as a
# global (recursion) is met again while its function is pickled: pickle's memo keeps
# the inner one, so the function and its name refer to the same wrapper there.

def _reduce_lru_cached(wrapper: Any) -> Any:
    if _importable(wrapper):
        return NotImplemented
    parameters = wrapper.cache_parameters()
    return _make_lru_cached, (wrapper.__wrapped__, parameters["maxsize"], parameters["typed"])


def _make_lru_cached(fn: Callable[..., Any], maxsize: int | None, typed: bool) -> Any:
    return functools.lru_cache(maxsize=maxsize, typed=typed)(fn)


# Reducers by exact type, looked up for every object the pickler meets: one dict lookup.
_REDUCERS: dict[type, Callable[[Any], Any]] = {
    staticmethod: _reduce_staticmethod,
    classmethod: _reduce_classmethod,
    property: _reduce_property,
    types.MappingProxyType: _reduce_mappingproxy,
    functools._lru_cache_wrapper: _reduce_lru_cached,
}


class _Pickler(_pickle.Pickler):
    def __init__(self, file: io.BytesIO, refs: list[object]) -> None:
        super().__init__(file, protocol=-1)    # pickle.HIGHEST_PROTOCOL
        self._refs = refs
        if not _dataclass_sentinel_names:
            _track_dataclass_sentinels()
        if not _typevars_tracked[0] and "typing" in sys.modules:
            _track_typevars()

    def persistent_id(self, obj: object) -> int | None:
        if _is_reference(obj):
            self._refs.append(obj)
            return len(self._refs) - 1
        return None

    def reducer_override(self, obj: object) -> Any:
        reduce = _REDUCERS.get(type(obj))
        if reduce is not None:
            return reduce(obj)
        # Exactly a function: isinstance() takes a fake __class__, and a fake "function"
        # would have _reduce_function run what its attributes are (a red-team run).
        if type(obj) is types.FunctionType and not _importable(obj):
            return _reduce_function(obj)
        if isinstance(obj, type) and obj.__module__ in _MAIN_MODULES:
            return _reduce_class(obj)
        if isinstance(obj, types.ModuleType):
            if obj.__name__ in _MAIN_MODULES:
                raise TypeError("the __main__ module itself cannot cross: pass the values "
                                "you need from it")
            return importlib.import_module, (obj.__name__,)
        return NotImplemented


def _cell_values(fn: types.FunctionType) -> list[Any]:
    """What the function's closure cells hold, as they cross.

    The annotation and type-parameter scopes of a class body (3.12+: PEP 695; 3.14: every
    class's __annotate__) read class attributes through a ``__classdict__`` cell that holds
    the whole class namespace, slot descriptors and all: only the names the code reads
    cross, as for globals.
    """
    cells: list[Any] = []
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:
            value = _EMPTY_CELL
        if name == "__classdict__" and type(value) is dict:
            names = _global_names(fn.__code__)
            value = {k: v for k, v in value.items() if k in names}
        cells.append(value)
    return cells


def _reduce_function(fn: types.FunctionType) -> Any:
    code = fn.__code__
    module_name = fn.__module__
    shipped: dict[str, Any] = {}
    if module_name is None or module_name in _MAIN_MODULES or module_name not in sys.modules:
        fn_globals = fn.__globals__
        for name in _global_names(code):
            if name in fn_globals:
                shipped[name] = fn_globals[name]
    cells = _cell_values(fn)
    state = {
        "globals": shipped,
        "bindings": _binding_tokens(fn.__globals__, shipped) if shipped else None,
        "defaults": fn.__defaults__,
        "kwdefaults": fn.__kwdefaults__,
        "doc": fn.__doc__,
        "dict": {k: v for k, v in vars(fn).items() if k != _KEY_ATTR},
        "closure": tuple(cells),
    }
    args = (marshal.dumps(code), fn.__name__, fn.__qualname__, module_name, len(cells),
            _function_key(fn), id(fn.__globals__))
    return _make_function, args, state, None, None, _fill_function


class _Unpickler(_pickle.Unpickler):
    def __init__(self, file: io.BytesIO, refs: tuple[object, ...]) -> None:
        super().__init__(file)
        self._refs = refs

    def persistent_load(self, pid: Any) -> object:
        return self._refs[pid]


def dumps(obj: object, what: str, labels: tuple[str | None, ...] | None = None
          ) -> tuple[bytes, tuple[object, ...]]:
    """Flatten ``obj`` for the trip: (pickle bytes, objects that cross by reference).

    ``what`` names the value in errors ("the arguments of f", "the result of f").
    ``labels`` name the items of a tuple ``obj`` in errors as the caller wrote them
    (``("args", "kwargs")`` gives ``args[0]``, ``kwargs['k']``; None: the item's own name),
    instead of their place in a tuple the caller never saw.
    """
    refs: list[object] = []
    buf = io.BytesIO()
    try:
        _Pickler(buf, refs).dump(obj)
    except Exception as exc:
        if labels is not None and type(obj) is tuple:
            reason = _diagnose_labelled(obj, labels, exc)
        else:
            reason = _diagnose(obj, exc)
        raise TypeError(f"{what} cannot cross into another interpreter: {reason}") from exc
    return buf.getvalue(), tuple(refs)


def _diagnose_labelled(items: tuple[object, ...], labels: tuple[str | None, ...],
                       exc: Exception) -> str:
    for item, label in zip(items, labels):
        inner = _try_pickle(item)
        if inner is not None:
            # _diagnose goes into the item's parts under its label: args[0], kwargs['k'].
            return _diagnose(item, inner, label or "")
    return _diagnose(items, exc)


def loads(data: bytes, refs: tuple[object, ...]) -> Any:
    outer = getattr(_load_state, "namespaces", None)
    _load_state.namespaces = {}
    try:
        return _Unpickler(io.BytesIO(data), refs).load()
    finally:
        _load_state.namespaces = outer


def _try_pickle(obj: object) -> Exception | None:
    try:
        _Pickler(io.BytesIO(), []).dump(obj)
    except Exception as exc:
        return exc
    return None


def _diagnose(obj: object, exc: Exception, path: str = "", depth: int = 0) -> str:
    """Find the innermost part of ``obj`` that fails to pickle, for the error message.

    Only runs after a failure, so it may be slow.
    """
    if depth < 8:
        for label, value, by_value in _parts(obj, path):
            inner = _try_pickle(value)
            if inner is not None:
                found = _diagnose(value, inner, label, depth + 1)
                if by_value is not None:
                    # What to do about it: the class itself, by name, needs none of this.
                    found += (f"; define the class {by_value.__qualname__!r} in an "
                              f"importable module: defined in the main script, it crosses "
                              f"by value, with all its attributes")
                return found
    what = (f"the class {obj.__qualname__!r}" if isinstance(obj, type)
            else f"a {type(obj).__qualname__}")
    where = f"{path} is {what}" if path else what
    return f"{where}, which cannot be pickled ({exc})"


# A part of an object that crosses with it: (label for the message, the part, the class
# crossing by value that holds it, if any).
_Part = tuple[str, object, "type | None"]


def _parts(obj: object, path: str) -> list[_Part]:
    """The parts of ``obj`` that cross with it."""
    parts: list[_Part] = []
    if type(obj) is types.FunctionType and not _importable(obj):
        label = path or f"function {obj.__qualname__!r}"
        for name in sorted(_global_names(obj.__code__)):
            if name in obj.__globals__:
                parts.append((f"{label} uses the global {name!r}, and it",
                              obj.__globals__[name], None))
        for name, value in zip(obj.__code__.co_freevars, _cell_values(obj)):
            if value is not _EMPTY_CELL:
                parts.append((f"{label} uses the free variable {name!r}, and it", value, None))
        for i, default in enumerate(obj.__defaults__ or ()):
            parts.append((f"{label}'s default #{i}", default, None))
    elif isinstance(obj, (tuple, list)):
        parts = [(f"{path}[{i}]" if path else f"item {i}", v, None) for i, v in enumerate(obj)]
    elif isinstance(obj, dict):
        parts = [(f"{path}[{k!r}]" if path else f"argument {k!r}", v, None)
                 for k, v in obj.items()]
    elif isinstance(obj, type) and obj.__module__ in _MAIN_MODULES and not _is_typeddict(obj):
        # (A TypedDict class is refused as a whole, whatever its parts: on 3.14 its
        # __annotate_func__ fails to pickle too, and would hide the reason.)
        who = f"the class {obj.__qualname__!r}"
        parts = _class_parts(obj, f"{path} is {who}, which" if path else who)
    elif type(obj).__module__ in _MAIN_MODULES:
        # An instance of a class that crosses by value: the class's attributes, then its own.
        kind = type(obj).__qualname__
        parts = _class_parts(type(obj), f"{path} is a {kind}, whose class" if path
                             else f"a {kind}, whose class")
        parts += [(f"{path}.{name}" if path else f"the {kind}'s attribute {name!r}", value,
                   None) for name, value in getattr(obj, "__dict__", {}).items()
                  if value is not type(obj)]  # an enum member's __objclass__: done above
    return parts


def _class_parts(cls: type, who: str) -> list[_Part]:
    state = _enum_state(cls) if _is_enum(cls) else _class_state(cls)
    parts: list[_Part] = [(f"{who} has the base {base.__qualname__!r}, and it", base, cls)
                          for base in cls.__bases__]
    parts += [(f"{who} has the attribute {name!r}, and it", value, cls)
              for name, value in state.items()]
    return parts
