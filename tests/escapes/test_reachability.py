"""Everything sandboxed code can reach, walked the way an attacker would walk it.

The walk runs *inside* the sandbox, as sandboxed code, with the attacker's own means: the
builtins it has, every module the policy grants, ``type()``, ``dir()``, ``getattr`` over
every name ``dir()`` lists, ``mro()``, and the items of every container it meets. No call
of anything but those. The test then asserts that nothing it reached is a way out: no real
module (module views only), no frame, traceback or code object, no builtin function of a
module that acts on the world, and none of the enforcement's own objects.
"""

from __future__ import annotations

import sys

import subsandbox
from ._escape import attempt

WALK = """
# A function, so that the walk's own state (its queue...) is not among the roots.
def walk():
    import_names = {modules!r}
    roots = list((__builtins__ if type(__builtins__) is dict else vars(__builtins__)).values())
    for name in import_names:
        roots.append(__import__(name, fromlist=['x']))
    def gen():
        yield 1
    async def coro():
        pass
    class C:
        x = 1
        def m(self):
            return self
    a_coroutine = coro()
    roots += [(), '', b'', 1, 1.5, 1j, [], {{}}, set(), frozenset(), range(1), slice(1),
              memoryview(b'x'), bytearray(), gen(), a_coroutine, C, C(), C().m, gen,
              ValueError('x'), globals(), type, object, super, property(len), staticmethod(len)]
    DANGEROUS = {{'posix', 'nt', 'os', 'sys', 'gc', 'marshal', '_io', 'io', '_thread', '_imp',
                 '_signal', 'signal', 'faulthandler', 'mmap', '_socket', 'socket', '_ctypes',
                 'subsandbox._core', '_pickle', 'pickle', '_frozen_importlib', 'importlib',
                 '_frozen_importlib_external', '_posixsubprocess', 'select', 'fcntl', 'resource',
                 '_interpreters', '_xxsubinterpreters', '_interpqueues', '_tracemalloc'}}
    REAL_ONLY = {{'open', '__import__', 'exec', 'eval', 'compile', 'getattr', 'setattr',
                 'delattr', 'hasattr', 'vars', 'breakpoint', 'input', 'help'}}
    # Bound methods and slot wrappers are made anew at each access: their only attributes the
    # rule allows are strings, their type (walked anyway) and more of themselves
    # (x.__call__.__call__...). They are checked, not expanded.
    # Numbers and strings only lead to more numbers and strings (x.real.imag.numerator...).
    LEAVES = {{'method-wrapper', 'builtin_function_or_method', 'method', 'wrapper_descriptor',
              'method_descriptor', 'classmethod_descriptor', 'getset_descriptor',
              'member_descriptor', 'int', 'float', 'complex', 'bool', 'str', 'bytes',
              'NoneType'}}
    seen = set()
    kept = []  # every object seen stays alive: no id() is reused during the walk
    found = []
    count = 0
    queue = [(r, 0) for r in roots]
    position = 0
    while position < len(queue):  # breadth first: each object at its shortest depth
        obj, depth = queue[position]
        position += 1
        if count >= {limit}:
            break
        if id(obj) in seen or depth > {depth}:
            continue
        seen.add(id(obj))
        kept.append(obj)
        count += 1
        kind = type(obj).__name__
        if kind == 'module':
            if '__spec__' in dir(obj) or '__loader__' in dir(obj):
                found.append('real module ' + obj.__name__)
            names = list(getattr(obj, '__all__', ()))
        else:
            try:
                names = dir(obj)
            except Exception:
                names = []
        if kind in ('frame', 'traceback', 'code', 'cell'):
            found.append(kind)
        if kind == 'builtin_function_or_method':
            owner = getattr(obj, '__module__', None)
            if owner in DANGEROUS or (owner == 'builtins' and obj.__name__ in REAL_ONLY):
                found.append('builtin ' + str(owner) + '.' + obj.__name__)
        owner_type_module = getattr(type(obj), '__module__', '')
        # A guarded function (seal.c) is the policy's own builtin: it holds only a name
        # and a doc, and what it wraps is out of reach.
        if owner_type_module.startswith('subsandbox') and kind not in (
                'frozendict', 'immutableset', 'guarded_function') \\
                and not isinstance(obj, BaseException):
            found.append('subsandbox object ' + kind)
        if kind in LEAVES:
            continue
        nxt = [type(obj)]
        if isinstance(obj, type):
            try:
                nxt += obj.mro()
            except TypeError:
                pass
        if isinstance(obj, dict):
            nxt += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            nxt += list(obj)
        for name in names:
            try:
                nxt.append(getattr(obj, name))
            except Exception:
                pass
        queue += [(n, depth + 1) for n in nxt]
    a_coroutine.close()
    return count, sorted(set(found))
result = walk()
"""

COMPUTE_MODULES = [
    "math", "cmath", "itertools", "functools", "operator", "collections", "collections.abc",
    "heapq", "bisect", "re", "json", "decimal", "fractions", "statistics", "string",
    "datetime", "random", "hashlib", "numbers", "textwrap", "unicodedata", "struct",
    "binascii", "base64", "zlib",
]
if sys.version_info < (3, 13):
    # CPython 3.12.1: `import hashlib` in any subinterpreter, with or without a policy,
    # aborts the process at exit ("free(): invalid pointer"); 3.13 does not.
    COMPUTE_MODULES.remove("hashlib")

MODULES = {
    "nothing": [],
    "compute": COMPUTE_MODULES,
}


def test_nothing_reachable_is_a_way_out(sb: subsandbox.Sandbox) -> None:
    """Walk the object graph from every root sandboxed code has; list every way out."""
    policy = sb.policy.name
    outcome = attempt(sb, WALK.format(modules=MODULES[policy], depth=6, limit=200_000))
    assert isinstance(outcome, tuple), outcome
    count, found = outcome
    assert 1000 < count < 200_000  # the walk did walk, and to its end
    assert found == []


def test_the_walk_finds_ways_out_without_a_policy() -> None:
    """Control: the same walk in an unrestricted sandbox finds real modules and frames."""
    with subsandbox.Sandbox() as sb:
        outcome = attempt(sb, WALK.format(modules=["json"], depth=4, limit=20_000))
    assert isinstance(outcome, tuple), outcome
    _, found = outcome
    assert "real module os" in found or "real module sys" in found
    assert "builtin _io.open" in found and "builtin builtins.__import__" in found
