"""Channel: the Python face of the C queue (``_ext/queue.c``).

A channel carries only immutable values between interpreters: None, bool, int, float,
complex, str, bytes and tuples of them by value, shared objects by pointer (a SharedRef
arrives as the object it names), channels and arenas. Anything else raises
NotShareableError naming the part at fault; nothing is pickled.
"""

from ._core import Channel

__all__ = ["Channel"]
