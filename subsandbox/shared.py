"""share(), Arena and is_shared: the Python face of the C arena (``_ext/arena.c``,
``_ext/share.c``), and the two immutable containers shared graphs are made of.

``share(value)`` copies a deeply immutable value once into process-wide memory, as
immortal objects that every interpreter reads by pointer: sending one to a sandbox moves a
pointer, whatever its size. ``dict`` becomes ``frozendict`` and ``set``/``frozenset``
become ``immutableset``. The memory of an ``Arena`` is given back once the arena is
closed and every interpreter that received one of its objects has been destroyed (see
docs/shared-memory.md); plain ``share()`` uses a process-lifetime arena.
"""

from ._core import Arena, frozendict, immutableset, is_shared, share

__all__ = ["Arena", "frozendict", "immutableset", "is_shared", "share"]
