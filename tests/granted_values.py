"""A module a test grants to a sandbox under a policy: a library's own subclass of a
standard value type, which comes back by its module and name (tests/escapes)."""

import fractions


class Ratio(fractions.Fraction):
    """A Fraction by another name, as a library may define one."""
