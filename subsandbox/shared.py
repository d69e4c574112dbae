"""share(), Arena and is_shared: the Python face of the C arena (``_ext/arena.c``,
``_ext/share.c``), and the two immutable containers shared graphs are made of.

``share(value)`` copies a deeply immutable value once into process-wide memory, as
immortal objects that every interpreter reads by pointer: sending one to a sandbox moves a
pointer, whatever its size. ``dict`` becomes ``frozendict`` and ``set``/``frozenset``
become ``immutableset``. The memory of an ``Arena`` is given back once the arena is
closed and every interpreter that received one of its objects has been destroyed (see
docs/shared-memory.md); plain ``share()`` uses a process-lifetime arena.

``Arena.share_detached(value)`` shares without the calling interpreter becoming a holder:
it returns a ``SharedRef``, an opaque handle that cannot be dereferenced there and arrives
as the shared object in the sandbox it is passed to. That is how the main interpreter,
which is never destroyed, prepares data for sandboxes and still gets the memory back.
"""

from ._core import Arena, SharedRef, frozendict, immutableset, is_shared, share

__all__ = ["Arena", "SharedRef", "frozendict", "immutableset", "is_shared", "share"]
