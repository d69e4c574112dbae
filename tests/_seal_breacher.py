"""A module a test grants to a sandbox under a policy, standing for a granted library that
writes where it should not: its code runs as library code, with the real builtins, so it
can reach the enforcement's namespaces, which sandboxed code never can (tests/test_seal.py)."""

import sys


def rebind(module: str, name: str) -> str:
    """Rebind ``name`` in ``module``'s namespace to a stand-in that does what the original
    does: what it does does not matter, the write does. (A dict stores the very same
    object again without a change, and without telling its watchers.)"""
    namespace = vars(sys.modules[module])
    original = namespace[name]
    namespace[name] = (lambda *args, **kwargs: original(*args, **kwargs)) \
        if callable(original) else type(original)(original)
    return "written"


def add_to(module: str, name: str) -> str:
    vars(sys.modules[module])[name] = None
    return "written"


def set_class_attribute(module: str, cls: str, name: str) -> str:
    setattr(getattr(sys.modules[module], cls), name, None)
    return "written"


def convert_globals_of(module: str) -> str:
    """What a granted library that hands EnumType._convert_ a module name would do: turn
    that module's globals (random._os) into members of a new enum."""
    import enum

    __import__(module)
    members = enum.Enum._convert_("X", module, lambda name: name == "_os")
    return type(members._os.value).__name__


def import_module(name: str) -> str:
    """A granted library importing a module by name, with the real import system."""
    import importlib

    return importlib.import_module(name).__name__
