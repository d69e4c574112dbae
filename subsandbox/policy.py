"""Policy: what a sandbox may import, which builtins it has, and which effects it may cause.

A policy is a value: every ``allow_*`` method returns a new, wider policy, so presets can be
shared and widened freely::

    Sandbox(policy=Policy.compute().allow_read("data/"))

It crosses into the sandbox as a plain tuple (``spec()``) inside the boot parcel, and
``subsandbox._enforce`` installs it there before the sandbox runs any request. What the
enforcement covers, and what it cannot, is in docs/security.md.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ._grants import grants

__all__ = ["Policy", "resolve"]

# Builtins that only compute: no input, no output, no files, no imports, no debugger.
# getattr/hasattr/setattr/delattr/vars/exec/eval/compile are replaced by guarded versions
# inside the sandbox (see _enforce); __build_class__ is what a class statement calls.
_COMPUTE_BUILTINS = (
    "abs", "aiter", "all", "anext", "any", "ascii", "bin", "bool", "bytearray", "bytes",
    "callable", "chr", "classmethod", "compile", "complex", "delattr", "dict", "dir",
    "divmod", "enumerate", "eval", "exec", "filter", "float", "format", "frozenset",
    "getattr", "globals", "hasattr", "hash", "hex", "id", "int", "isinstance", "issubclass",
    "iter", "len", "list", "locals", "map", "max", "memoryview", "min", "next", "object",
    "oct", "ord", "pow", "property", "range", "repr", "reversed", "round", "set", "setattr",
    "slice", "sorted", "staticmethod", "str", "sum", "super", "tuple", "type", "vars", "zip",
    "__build_class__", "Ellipsis", "NotImplemented", "False", "True", "None",
)

# Builtins that reach outside the sandbox or into the interpreter: never part of a preset.
DANGEROUS_BUILTINS = frozenset({
    "open", "input", "breakpoint", "help", "license", "credits", "copyright", "exit", "quit",
    "__import__", "__loader__", "__spec__",
})

# Pure-computation standard library modules (each with its submodules, but for the
# command-line programs among them: _grants.SEPARATE, `__main__`).
_COMPUTE_MODULES = (
    "math", "cmath", "itertools", "functools", "operator", "collections", "heapq", "bisect",
    "re", "json", "decimal", "fractions", "statistics", "string", "datetime", "random",
    "hashlib", "numbers", "textwrap", "unicodedata", "struct", "binascii", "base64", "zlib",
)

_EFFECTS = ("read", "write", "network", "processes", "native", "hooks", "threads")

# Modules no restricting policy can grant, each with why: what it hands sandboxed code is
# the interpreter itself (its real modules, builtins or frames), or code it runs in
# namespaces sandboxed code chooses, or with the real builtins (red-team runs found each
# of inspect, timeit, code and annotationlib doing so). Policy.unrestricted() has them.
UNGRANTABLE_MODULES = {
    "sys": "its modules dict holds every real module",
    "builtins": "it is the real builtins",
    "importlib": "import_module() imports past the policy and returns real modules",
    "inspect": "it reads any attribute by name (getmembers), hands out frames, and "
               "evaluates annotations in any module's namespace (eval_str)",
    "annotationlib": "it evaluates annotations in any module's namespace (eval_str)",
    "timeit": "it runs code in a namespace it fills with the real builtins",
    "code": "it runs code in a namespace it fills with the real builtins",
    "doctest": "it runs code in a namespace it fills with the real builtins",
    "runpy": "it runs modules' code past the policy",
    "pdb": "it is a debugger: frames, and code run in any of them",
    "bdb": "it is a debugger's core: frames, and code run in any of them",
    "trace": "it runs code in a namespace it fills with the real builtins",
    "profile": "it runs code in a namespace it fills with the real builtins",
    "cProfile": "it runs code in a namespace it fills with the real builtins",
    "pydoc": "it imports modules by name past the policy and walks their attributes",
    "rlcompleter": "it reads any attribute by name",
    "subsandbox": "it is the machinery that enforces the policy",
    # A red-team run (round 18) got the real builtins through each of these two.
    "logging": "its Formatter runs str.format with a template chosen at run time ('{' "
               "style: attribute walks, dunders included), and logging.config's "
               "BaseConfigurator.importer is the real __import__",
    # The code check decodes bytecode with dis, which reads opcode's tables (lists) at
    # every call: a sandbox that cleared dis.hasjrel hid jump targets from the check.
    "dis": "the policy's code check decodes bytecode with it, through opcode tables "
           "(lists) that whoever holds the module can change",
    "opcode": "the policy's code check decodes bytecode with its tables (lists), which "
              "whoever holds the module can change",
}


def _absolute_dirs(dirs: Iterable[str | os.PathLike[str]], method: str) -> tuple[str, ...]:
    out = []
    for d in dirs:
        if not isinstance(d, (str, os.PathLike)):
            raise TypeError(f"Policy.{method}() takes directories as str or path-like, "
                            f"not {type(d).__name__}")
        out.append(os.path.realpath(os.path.abspath(os.fspath(d))))
    return tuple(out)


class Policy:
    """What a sandbox may do. Make one from a preset, then widen it.

    - ``Policy.nothing()``: the builtins that compute, no imports, no effects.
    - ``Policy.compute()``: adds ``print`` and the pure-computation stdlib modules.
    - ``Policy.unrestricted()``: no enforcement at all (the default of ``Sandbox()``).

    Effects: ``allow_read(*dirs)`` / ``allow_write(*dirs)`` (no directory: anywhere),
    ``allow_network()``, ``allow_processes()`` (subprocesses and ``os`` process control),
    ``allow_native()`` (ctypes, loading native code that is not the stdlib's),
    ``allow_hooks()`` (``sys.settrace``, ``sys.setprofile``, audit hooks, monitoring),
    ``allow_threads()``. Modules: ``allow_import(*names)`` (each with its submodules).
    Builtins: ``allow_builtins(*names)``.
    """

    __slots__ = ("_name", "_modules", "_builtins", "_effects", "_read_dirs", "_write_dirs",
                 "_unrestricted")
    # The slots' types (set once, by _make()): annotations only, so no class attribute
    # conflicts with the slots.
    _name: str
    _modules: tuple[str, ...]
    _builtins: tuple[str, ...]
    _effects: tuple[str, ...]
    _read_dirs: tuple[str, ...]
    _write_dirs: tuple[str, ...]
    _unrestricted: bool

    def __init__(self) -> None:
        raise TypeError("make a Policy from a preset: Policy.nothing(), Policy.compute() "
                        "or Policy.unrestricted(), then widen it with allow_*()")

    @classmethod
    def _make(cls, name: str, modules: tuple[str, ...], builtins: tuple[str, ...],
              effects: tuple[str, ...], read_dirs: tuple[str, ...],
              write_dirs: tuple[str, ...], unrestricted: bool) -> Policy:
        self = object.__new__(cls)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_modules", tuple(sorted(set(modules))))
        object.__setattr__(self, "_builtins", tuple(sorted(set(builtins))))
        object.__setattr__(self, "_effects", tuple(e for e in _EFFECTS if e in effects))
        object.__setattr__(self, "_read_dirs", tuple(sorted(set(read_dirs))))
        object.__setattr__(self, "_write_dirs", tuple(sorted(set(write_dirs))))
        object.__setattr__(self, "_unrestricted", unrestricted)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Policy is immutable: allow_*() returns a new one")

    # -- presets ---------------------------------------------------------------------------

    @classmethod
    def nothing(cls) -> Policy:
        """The empty sandbox: builtins that compute, no imports, no effects."""
        return cls._make("nothing", (), _COMPUTE_BUILTINS, (), (), (), False)

    @classmethod
    def compute(cls) -> Policy:
        """Pure computation: ``print`` and the stdlib's computing modules, no effects."""
        return cls._make("compute", _COMPUTE_MODULES, _COMPUTE_BUILTINS + ("print",), (),
                         (), (), False)

    @classmethod
    def unrestricted(cls) -> Policy:
        """No enforcement: the sandbox is an isolated interpreter and nothing more."""
        return cls._make("unrestricted", (), (), _EFFECTS, (), (), True)

    # -- widening --------------------------------------------------------------------------

    def _widen(self, label: str, **changes: Any) -> Policy:
        if self._unrestricted:
            return self
        fields = {
            "modules": self._modules, "builtins": self._builtins, "effects": self._effects,
            "read_dirs": self._read_dirs, "write_dirs": self._write_dirs,
        }
        fields.update(changes)
        return Policy._make(f"{self._name}+{label}", unrestricted=False, **fields)

    def allow_import(self, *names: str) -> Policy:
        """Allow importing these modules (and their submodules, but for command-line
        programs inside them, ``json.tool`` and any ``__main__``: name one to grant it)."""
        for name in names:
            if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
                raise ValueError(f"Policy.allow_import() takes dotted module names, "
                                 f"not {name!r}")
            top = name.partition(".")[0]
            if top in UNGRANTABLE_MODULES:
                raise ValueError(f"Policy.allow_import(): {name!r} cannot be granted to "
                                 f"a sandbox under a policy: {UNGRANTABLE_MODULES[top]} "
                                 f"(use Policy.unrestricted() for code you trust)")
        return self._widen(f"import({','.join(names)})", modules=self._modules + names)

    def allow_builtins(self, *names: str) -> Policy:
        """Add these builtins (by name; ``open`` also needs ``allow_read``/``allow_write``)."""
        import builtins

        for name in names:
            if not isinstance(name, str) or not hasattr(builtins, name):
                raise ValueError(f"Policy.allow_builtins(): {name!r} is not a builtin")
            if name in ("__import__", "__loader__", "__spec__"):
                raise ValueError(f"Policy.allow_builtins(): {name!r} cannot be granted; "
                                 f"use allow_import() for modules")
        return self._widen(f"builtins({','.join(names)})", builtins=self._builtins + names)

    def _effect(self, effect: str) -> Policy:
        return self._widen(effect, effects=self._effects + (effect,))

    def allow_read(self, *dirs: str | os.PathLike[str]) -> Policy:
        """Allow reading files under ``dirs`` (anywhere if none is given); grants ``open``."""
        absolute = _absolute_dirs(dirs, "allow_read")
        label = f"read({','.join(map(str, dirs))})" if dirs else "read"
        if not dirs:
            return self._widen(label, effects=self._effects + ("read",),
                               builtins=self._builtins + ("open",), read_dirs=())
        if "read" in self._effects and not self._read_dirs:
            return self  # already anywhere
        return self._widen(label, read_dirs=self._read_dirs + absolute,
                           builtins=self._builtins + ("open",))

    def allow_write(self, *dirs: str | os.PathLike[str]) -> Policy:
        """Allow writing files under ``dirs`` (anywhere if none is given); grants ``open``."""
        absolute = _absolute_dirs(dirs, "allow_write")
        label = f"write({','.join(map(str, dirs))})" if dirs else "write"
        if not dirs:
            return self._widen(label, effects=self._effects + ("write",),
                               builtins=self._builtins + ("open",), write_dirs=())
        if "write" in self._effects and not self._write_dirs:
            return self
        return self._widen(label, write_dirs=self._write_dirs + absolute,
                           builtins=self._builtins + ("open",))

    def allow_network(self) -> Policy:
        """Allow sockets (the ``socket`` module still needs ``allow_import``)."""
        return self._effect("network")

    def allow_processes(self) -> Policy:
        """Allow starting processes and ``os`` process control (kill, exec, fork...)."""
        return self._effect("processes")

    def allow_native(self) -> Policy:
        """Allow ctypes and loading native code from outside the standard library."""
        return self._effect("native")

    def allow_hooks(self) -> Policy:
        """Allow interpreter-wide hooks: settrace, setprofile, audit hooks, monitoring."""
        return self._effect("hooks")

    def allow_threads(self) -> Policy:
        """Allow starting threads inside the sandbox."""
        return self._effect("threads")

    # -- reading ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """How errors name this policy, e.g. ``compute+read(data/)``."""
        return self._name

    @property
    def is_unrestricted(self) -> bool:
        """Whether this is ``Policy.unrestricted()``: nothing is enforced."""
        return self._unrestricted

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules it may import (each with its submodules), sorted; () if unrestricted."""
        return self._modules

    @property
    def builtins(self) -> tuple[str, ...]:
        """The names of the builtins the sandbox has, sorted; () if unrestricted (all)."""
        return self._builtins

    @property
    def effects(self) -> tuple[str, ...]:
        """Effects allowed anywhere; ``read``/``write`` under directories are apart."""
        return self._effects

    @property
    def read_dirs(self) -> tuple[str, ...]:
        """The absolute directories it may read files under (``read`` in effects: anywhere)."""
        return self._read_dirs

    @property
    def write_dirs(self) -> tuple[str, ...]:
        """The absolute directories it may write files under (``write`` in effects: anywhere)."""
        return self._write_dirs

    def allows_import(self, module: str) -> bool:
        """Whether the sandbox may import ``module`` (a dotted name)."""
        if self._unrestricted:
            return True
        return grants(self._modules, module)

    def spec(self) -> tuple[Any, ...] | None:
        """The plain form that crosses into the sandbox (None: nothing to enforce)."""
        if self._unrestricted:
            return None
        return ("subsandbox.policy/1", self._name, self._modules, self._builtins,
                self._effects, self._read_dirs, self._write_dirs)

    @classmethod
    def from_spec(cls, spec: tuple[Any, ...] | None) -> Policy:
        """The policy whose ``spec()`` this is (None: unrestricted); ValueError otherwise."""
        if spec is None:
            return cls.unrestricted()
        if not (isinstance(spec, tuple) and len(spec) == 7 and spec[0] == "subsandbox.policy/1"):
            raise ValueError(f"not a policy spec: {spec!r}")
        _, name, modules, builtins, effects, read_dirs, write_dirs = spec
        return cls._make(name, modules, builtins, effects, read_dirs, write_dirs, False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Policy.from_spec, (self.spec(),))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[Any, ...]:
        return (self._unrestricted, self._modules, self._builtins, self._effects,
                self._read_dirs, self._write_dirs)

    def __repr__(self) -> str:
        return f"<subsandbox.Policy {self._name}>"


def resolve(policy: Policy | None) -> Policy:
    """The policy a Sandbox (or an executor's sandboxes) runs under; None: unrestricted.

    For ``SandboxPoolExecutor(policy=...)``: check the argument once with this, then pass
    the result to each ``Sandbox(policy=...)``.
    """
    if policy is None:
        return Policy.unrestricted()
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must be a subsandbox.Policy (or None for unrestricted), "
                        f"not {type(policy).__name__}")
    return policy
