"""The workload of tests/test_share_invariants.py: every operation of an interpreter that
could write into a shared object, run on a shared graph and compared with the same
operation on an equal local graph; and ``main()``, which runs it in several own-GIL
interpreters and the main one at once while the shared graph's pages are read-only.

Importable by raw interpreters (standard library and subsandbox only), and a script:
``python _shared_ops.py INTERPRETERS ROUNDS`` prints a dict of counts.
"""
import ast
import base64
import binascii
import codecs
import collections
import collections.abc
import copy
import functools
import gc
import hashlib
import io
import json
import locale
import marshal
import math
import operator
import os
import pickle
import re
import string
import struct
import sys
import types
import unicodedata
import weakref
import zlib
from decimal import Decimal
from fractions import Fraction


def make_value():
    """(a dict of everything, a tuple of loose values). Building a frozendict hashes its
    values, so the loose ones, under no dict, are hashed and encoded by share() alone."""
    return (make_dict(), LOOSE)


LOOSE = (b"loose bytes \x00\xff", bytes(range(200)), "loose caf\xe9", "loose \u4e2d\u6587",
         "loose \U0001f600", "loose ascii zz_q", 10**30, 3.25, 2j, (b"in a tuple", "t\xe9"))


def make_dict():
    return {
        "ascii": "hello world zz_q",
        "latin1": "caf\xe9 na\xefve",
        "ucs2": "\u4e2d\u6587 \u20ac text",
        "ucs4": "emoji \U0001f600 \U00010348",
        "surr": "lone \udc80 surrogate",
        "ident": "zz_identifier_q",
        "ident_uc": "zz_ident_\xe9",
        "ident_ucs2": "zz_\u4e2d\u6587",
        "dunders": ("__add__", "__len__", "__init__", "__eq__", "__hash__", "__getattr__",
                    "__class_getitem__", "__set_name__", "__repr__", "__call__",
                    "__iter__", "__getitem__", "__contains__", "__bool__",
                    "__init_subclass__", "__lt__", "__neg__", "__str__", "__format__"),
        "names": ("alpha", "beta", "gamma_q", "d\xe9lta"),
        "code_src": "def f(alpha, *, beta):\n    return alpha + beta\nr = f(1, beta=2)\n",
        "code_src_uc": "d\xe9lta = '\u4e2d'\nzz_\u4e2d\u6587 = d\xe9lta * 2\n",
        "expr": "alpha + 1",
        "big": 10**40, "neg": -(2**70), "mid": 123456789, "f": 2.5, "c": 1.5 - 2j,
        "b": b"some bytes payload \x00\xff", "bigb": bytes(range(256)) * 10,
        "tup": (1, (2, (3, "x")), "y"),
        "fd": {"a": 1, "b": (2, 3), "k\xe9": "v", "alpha": "A"},
        "set": frozenset({"p", "q", 3, (1, 2)}),
        "slots": ("alpha", "beta"),
        "ns": {"x": 1, "__doc__": "doc \xe9", "__module__": "zz_mod"},
        "fmtnew": "{0} {alpha} {1!r:>10}",
        "fmtold": "%(a)s-%(b)r",
        "path": "/tmp/zz_path_\xe9",
        "long_ucs2": "\u4e2d" * 5000,
        "long_latin": "\xe9" * 5000,
        "codeish": ("alpha", "beta", "gamma_q"),
        # One-character strings made at run time: on 3.12 chr(97) is not interned while
        # the equal _Py_ID(a) is, and a code object made from them stored the latter.
        "consts": (None, 1, "zz_const_q", "not an identifier!", (2, "inner_q"),
                   *map(chr, b"_abcdenprsx\xe9")),
        "nums": ("12345", "1.5e3", "  42  ", "\u0663\u0664", "1+2j", "-0.0"),
        "strs": ("a", "\xe9", "\u4e2d", "\U0001f600", "ab", "", "__add__"),
    }


STRKEYS = ["ascii", "latin1", "ucs2", "ucs4", "surr", "ident", "ident_uc", "ident_ucs2",
           "path", "long_ucs2", "long_latin", "code_src", "expr", "fmtnew", "fmtold"]


def r(fn):
    """Result summary: value or (exception type, message)."""
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001
        return ("err", type(e).__name__, str(e)[:200])


OPS = []


def op(fn):
    OPS.append(fn)
    return fn


class StrSub(str):
    """A subclass copies the characters (unicode_subtype_new, _PyUnicode_Copy paths)."""


# ---- str ----
ENCODINGS = ["utf-8", "utf-16", "utf-32", "latin-1", "ascii", "cp1252", "utf-7",
             "unicode_escape", "raw_unicode_escape", "idna", "punycode", "utf-8-sig",
             "shift_jis", "gb18030"]
ERRORS = ["strict", "replace", "surrogatepass", "surrogateescape", "backslashreplace",
          "xmlcharrefreplace", "ignore", "namereplace"]


@op
def str_encode(g):
    out = []
    for k in STRKEYS:
        s = g[k]
        out.append(r(lambda: s.encode()))
        for enc in ENCODINGS:
            for err in ERRORS:
                out.append(r(lambda: s.encode(enc, err)))
        out.append(r(lambda: codecs.encode(s, "utf-8", "surrogatepass")))
        out.append(r(lambda: codecs.utf_8_encode(s, "surrogateescape")))
        out.append(r(lambda: bytes(s, "utf-8", "replace")))
        out.append(r(lambda: os.fsencode(s)))
        out.append(r(lambda: codecs.getencoder("utf-16-le")(s)))
    return out


@op
def str_format(g):
    out = []
    for k in STRKEYS:
        s = g[k]
        out += [r(lambda: f"{s}"), r(lambda: f"{s!r}"), r(lambda: f"{s!a}"),
                r(lambda: f"{s:>50}"), r(lambda: format(s, "^60")),
                r(lambda: "%s|%r|%a" % (s, s, s)), r(lambda: "%-40s" % s),
                r(lambda: "{}".format(s)), r(lambda: s.__format__("")),
                r(lambda: str(s)), r(lambda: repr(s)), r(lambda: ascii(s)),
                r(lambda: "%.3s" % s), r(lambda: "{:.2}".format(s)),
                r(lambda: f"{s}{s}"), r(lambda: f"x{s}")]
    out.append(r(lambda: g["fmtnew"].format(g["ascii"], g["ucs2"], alpha=g["latin1"])))
    out.append(r(lambda: g["fmtold"] % g["fd"]))
    out.append(r(lambda: g["fmtold"] % dict(g["fd"])))
    out.append(r(lambda: "{a}{b}".format_map(g["fd"])))
    out.append(r(lambda: "{a}{alpha}".format(**g["fd"])))
    out.append(r(lambda: string.Template("$alpha $a").substitute(g["fd"])))
    out.append(r(lambda: string.Formatter().vformat(g["fmtnew"], (1, 2), {"alpha": 3})))
    return out


@op
def str_methods(g):
    out = []
    for k in STRKEYS:
        s = g[k]
        out += [r(lambda: hash(s)), r(lambda: s.upper()), r(lambda: s.lower()),
                r(lambda: s.casefold()), r(lambda: s.strip()), r(lambda: s.split()),
                r(lambda: s.join(["a", "b"])), r(lambda: "".join([s])),
                r(lambda: "".join([s, s])), r(lambda: s + s), r(lambda: s * 2),
                r(lambda: s * 1), r(lambda: s[:]), r(lambda: s[1:]), r(lambda: s[::-1]),
                r(lambda: s.replace("a", "b")), r(lambda: s.find("x")),
                r(lambda: "e" in s), r(lambda: s.startswith("h")),
                r(lambda: s.isidentifier()), r(lambda: s.isprintable()),
                r(lambda: s.isascii()), r(lambda: s.translate({101: "E"})),
                r(lambda: s.center(60)), r(lambda: s.zfill(60)), r(lambda: s.expandtabs()),
                r(lambda: s.partition(" ")), r(lambda: s.splitlines()),
                r(lambda: s.title()), r(lambda: s.swapcase()), r(lambda: s.ljust(5)),
                r(lambda: unicodedata.normalize("NFC", s)),
                r(lambda: unicodedata.normalize("NFKD", s)),
                r(lambda: unicodedata.is_normalized("NFC", s)),
                r(lambda: locale.strxfrm(s)), r(lambda: s.count("a")), r(lambda: list(s)),
                r(lambda: sorted(s)), r(lambda: re.escape(s)),
                r(lambda: bool(re.compile(re.escape(s)).search(s))),
                r(lambda: re.sub("[a-z]", "-", s)), r(lambda: re.findall(r"\w+", s)),
                r(lambda: json.dumps(s)), r(lambda: json.dumps(s, ensure_ascii=False)),
                r(lambda: json.loads(json.dumps(s))), r(lambda: len(marshal.dumps(s))),
                r(lambda: marshal.loads(marshal.dumps(s))),
                r(lambda: marshal.loads(marshal.dumps((s, s, [s])))),
                r(lambda: copy.copy(s)), r(lambda: copy.deepcopy(s)),
                r(lambda: io.StringIO(s).read()), r(lambda: str.maketrans(s[:1], "x")),
                r(lambda: s.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")),
                r(lambda: s.rsplit(" ", 1)), r(lambda: s.removeprefix("he")),
                r(lambda: s < "m"), r(lambda: s == "".join(list(s))),
                r(lambda: {s: 1}[s]), r(lambda: s in {s}), r(lambda: s.isnumeric()),
                r(lambda: s.isdecimal()), r(lambda: s.isalpha()), r(lambda: s.isspace()),
                r(lambda: str(s.encode("utf-8", "surrogatepass"), "utf-8", "replace")),
                r(lambda: os.path.join(s, "x")), r(lambda: os.path.basename(s)),
                r(lambda: os.path.exists(s)), r(lambda: sys.intern(s) == s),
                r(lambda: str(StrSub(s))), r(lambda: StrSub(s).encode("utf-8", "replace")),
                r(lambda: s.__getnewargs__()), r(lambda: s.__reduce_ex__(2)[1])]
        for p in range(pickle.HIGHEST_PROTOCOL + 1):
            out.append(r(lambda: pickle.dumps(s, p)))
            out.append(r(lambda: pickle.loads(pickle.dumps(s, p))))
    for s in g["nums"]:
        out += [r(lambda: int(s)), r(lambda: float(s)), r(lambda: complex(s)),
                r(lambda: Decimal(s)), r(lambda: Fraction(s))]
    out.append(r(lambda: ",".join(g["names"])))
    out.append(r(lambda: "".join(g["strs"])))
    out.append(r(lambda: os.path.join(*g["names"])))
    out.append(r(lambda: [ord(c) for c in g["strs"] if len(c) == 1]))
    out.append(r(lambda: [sys.intern(c) is c for c in g["strs"] if len(c) == 1]))
    return out


# ---- eval / compile / names ----
@op
def code_ops(g):
    out = []
    out.append(r(lambda: eval(g["expr"], {"alpha": 41})))
    out.append(r(lambda: eval(g["expr"], {g["names"][0]: 41})))
    out.append(r(lambda: eval(g["expr"], {}, g["fd"])))   # frozendict as locals
    ns = {}
    out.append(r(lambda: exec(g["code_src"], ns) or ns["r"]))
    ns2 = {}
    out.append(r(lambda: exec(g["code_src_uc"], ns2) or sorted(k for k in ns2 if k != "__builtins__")))
    out.append(r(lambda: compile(g["code_src"], g["path"], "exec").co_filename))
    out.append(r(lambda: compile(g["code_src"], g["ident"], "exec").co_names))
    out.append(r(lambda: eval(compile(g["expr"], g["ucs2"], "eval"), {"alpha": 1})))
    out.append(r(lambda: eval(g["ident"], {g["ident"]: 7})))
    out.append(r(lambda: eval(g["ident_uc"], {g["ident_uc"]: 8})))
    out.append(r(lambda: eval(g["ident_ucs2"], {g["ident_ucs2"]: 9})))
    gl = {g["ident"]: 1, g["ident_uc"]: 2, g["ident_ucs2"]: 3}
    out.append(r(lambda: exec("zz_identifier_q += 1\nzz_ident_\xe9 += 1\nzz_\u4e2d\u6587 += 1", gl)
                 or sorted((k, v) for k, v in gl.items() if k != "__builtins__")))
    fn = types.FunctionType(compile("def h():\n    return zz_identifier_q\n", "x", "exec").co_consts[0],
                            {g["ident"]: 11})
    out.append(r(lambda: [fn() for _ in range(20)]))   # specialized LOAD_GLOBAL
    # Code objects built from shared tuples: co_consts (its strings are interned in
    # place, PyTuple_SET_ITEM when interning gives another object: never for a shared
    # str). Not co_names: 3.13+ stores each name back into that tuple even when interning
    # returns it unchanged (test_share_invariants.py checks that case on its own).
    co = compile("a = 'zz_const_q'\n", "x", "exec")
    out.append(r(lambda: co.replace(co_consts=g["consts"]).co_consts))
    out.append(r(lambda: co.replace(co_filename=g["path"], co_name=g["ident"],
                                    co_qualname=g["ident_uc"]).co_name))
    # marshal of code with shared pieces
    out.append(r(lambda: marshal.loads(marshal.dumps(co.replace(co_consts=g["consts"]))).co_consts))
    # An AST whose constants are shared tuples, after equal local constants: the compiler
    # merges a tuple constant's items in place (subsandbox's compile hook gives it a copy).
    out.append(r(lambda: eval(compile(ast.fix_missing_locations(ast.Expression(ast.Tuple(
        [ast.Constant("".join(["zz_", "const_q"])), ast.Constant(float("2.5")),
         ast.Constant(g["consts"]), ast.Constant((0, g["tup"])),
         ast.Constant(frozenset({g["tup"]}))], ast.Load()))), "<ast>", "eval"))))
    return out


@op
def attr_ops(g):
    out = []
    C = type("C", (), {})
    o = C()
    allnames = g["names"] + (g["ident"], g["ident_uc"], g["ident_ucs2"])
    for i, n in enumerate(allnames):
        out += [r(lambda: setattr(C, n, i)), r(lambda: getattr(C, n)),
                r(lambda: hasattr(o, n)), r(lambda: setattr(o, n, -i)),
                r(lambda: getattr(o, n)), r(lambda: o.__dict__[n]),
                r(lambda: operator.attrgetter(n)(o)), r(lambda: vars(o).get(n)),
                r(lambda: [getattr(o, n) for _ in range(10)])]
    out.append(r(lambda: sorted(vars(o))))
    for n in allnames:
        out.append(r(lambda: delattr(o, n)))
    # keyword arguments
    def kw(**k):
        return sorted(k.items())

    def named(alpha, beta, gamma_q, délta):
        return (alpha, beta, gamma_q, délta)
    kwd = {n: i for i, n in enumerate(g["names"])}
    out.append(r(lambda: kw(**kwd)))
    out.append(r(lambda: named(**kwd)))
    out.append(r(lambda: kw(**g["fd"])))
    out.append(r(lambda: dict(**g["fd"])))
    out.append(r(lambda: functools.partial(kw, **g["fd"])()))
    out.append(r(lambda: named(**dict(zip(g["names"], g["names"])))))
    out.append(r(lambda: operator.methodcaller(g["names"][0].replace("alpha", "upper"))(g["ascii"])))
    return out


@op
def type_ops(g):
    out = []
    d = g["dunders"]
    calls = []

    class Desc:
        pass

    def set_name(self, owner, name):
        calls.append(name)
    setattr(Desc, d[7], set_name)   # __set_name__
    ns = {
        d[0]: lambda self, other: ("add", other),
        d[1]: lambda self: 5,
        d[2]: lambda self, v=0: setattr(self, "v", v),
        d[3]: lambda self, other: True,
        d[4]: lambda self: 42,
        d[5]: lambda self, name: ("ga", name),
        d[6]: classmethod(lambda cls, item: ("cgi", item)),
        d[8]: lambda self: "R",
        d[9]: lambda self, *a: ("call", a),
        d[10]: lambda self: iter((1, 2)),
        d[11]: lambda self, k: ("gi", k),
        d[12]: lambda self, k: k == 3,
        d[13]: lambda self: False,
        d[15]: lambda self, other: "lt",
        d[16]: lambda self: "neg",
        d[17]: lambda self: "S",
        d[18]: lambda self, spec: "F" + spec,
        "descr": Desc(),
    }
    T = type(g["ident"], (), ns)
    t = T(3)
    out += [r(lambda: t + 1), r(lambda: len(t)), r(lambda: t.v), r(lambda: t == 0),
            r(lambda: hash(t)), r(lambda: t.missing), r(lambda: T[int]), r(lambda: calls),
            r(lambda: repr(t)), r(lambda: t(1, 2)), r(lambda: list(t)), r(lambda: t[9]),
            r(lambda: 3 in t), r(lambda: bool(t)), r(lambda: t < t), r(lambda: -t),
            r(lambda: str(t)), r(lambda: format(t, "x")), r(lambda: f"{t:y}"),
            r(lambda: T.__name__), r(lambda: T.__qualname__)]
    # setattr on the class after creation (update_slot)
    U = type("U", (), {})
    for i, n in enumerate(d):
        if n in ("__init_subclass__", "__class_getitem__", "__set_name__", "__hash__",
                 "__eq__", "__getattr__", "__init__", "__repr__", "__str__", "__format__",
                 "__call__", "__iter__", "__contains__", "__bool__"):
            continue
        setattr(U, n, (lambda k: lambda self, *a: ("U", k))(i))
    u = U()
    out += [r(lambda: u + 1), r(lambda: len(u) if False else U.__len__(u)), r(lambda: u[1]),
            r(lambda: u < u), r(lambda: -u)]
    setattr(U, d[1], lambda self: 9)
    setattr(U, d[3], lambda self, o: "eq")
    setattr(U, d[4], lambda self: 77)
    setattr(U, d[5], lambda self, n: "ga:" + n)
    setattr(U, d[8], lambda self: "repr-U")
    setattr(U, d[9], lambda self: "called")
    setattr(U, d[13], lambda self: False)
    setattr(U, d[2], lambda self, a=1: setattr(self, "a", a))
    out += [r(lambda: len(u)), r(lambda: u == 1), r(lambda: hash(u)), r(lambda: u.nope),
            r(lambda: repr(u)), r(lambda: u()), r(lambda: bool(u)), r(lambda: U(5).a)]
    delattr(U, d[0])
    out.append(r(lambda: u + 1))
    # __init_subclass__ / __class_getitem__ via shared names
    seen = []
    B = type("B", (), {d[14]: classmethod(lambda cls, **kw: seen.append((cls.__name__, sorted(kw))))})
    out.append(r(lambda: type(g["ident_uc"], (B,), {}) and seen))
    # __slots__ from a shared tuple
    S = type("S", (), {"__slots__": g["slots"]})
    s = S()
    out += [r(lambda: setattr(s, g["slots"][0], 1)), r(lambda: s.alpha),
            r(lambda: setattr(s, "beta", 2)), r(lambda: getattr(s, g["slots"][1])),
            r(lambda: sorted(S.__slots__)), r(lambda: S.__slots__ == g["slots"])]
    # namespace from a shared frozendict (keys and values shared)
    N = type(g["ident_ucs2"], (), dict(g["ns"]))
    out += [r(lambda: N.x), r(lambda: N.__doc__), r(lambda: N.__module__),
            r(lambda: N.__name__)]
    # class statement with shared names in the body
    out.append(r(lambda: type("K", (), {k: v for k, v in g["fd"].items()}).alpha))
    # module globals with shared keys
    mod = types.ModuleType(g["ident"])
    setattr(mod, g["names"][0], 1)
    vars(mod)[g["names"][1]] = 2
    out.append(r(lambda: (mod.alpha, mod.beta, mod.__name__)))
    return out


# ---- numbers ----
@op
def number_ops(g):
    out = []
    for k in ("big", "neg", "mid"):
        i = g[k]
        out += [r(lambda: str(i)), r(lambda: repr(i)), r(lambda: hash(i)), r(lambda: i + 1),
                r(lambda: i * i), r(lambda: -i), r(lambda: abs(i)), r(lambda: +i),
                r(lambda: i << 3), r(lambda: i >> 3), r(lambda: i & 0xFF),
                r(lambda: divmod(i, 7)), r(lambda: pow(i, 3, 1000003)),
                r(lambda: i.to_bytes(40, "little", signed=True)),
                r(lambda: int.from_bytes(i.to_bytes(40, "big", signed=True), "big", signed=True)),
                r(lambda: i.bit_length()), r(lambda: i.bit_count()), r(lambda: format(i, ",")),
                r(lambda: f"{i:x}"), r(lambda: math.gcd(i, 12)), r(lambda: math.isqrt(abs(i))),
                r(lambda: float(i)), r(lambda: round(i, -3)), r(lambda: operator.index(i)),
                r(lambda: list(range(i, i + 3))), r(lambda: hex(i)), r(lambda: int(i)),
                r(lambda: i.numerator), r(lambda: i.real), r(lambda: i.conjugate()),
                r(lambda: Decimal(i)), r(lambda: Fraction(i, 3)), r(lambda: i.as_integer_ratio()),
                r(lambda: i // 3), r(lambda: i % 3), r(lambda: i ** 2), r(lambda: ~i),
                r(lambda: i == int(str(i))), r(lambda: sum([i, i])), r(lambda: i - i),
                r(lambda: i * 0), r(lambda: i * 1), r(lambda: i + 0), r(lambda: i | 0),
                r(lambda: i ^ 0), r(lambda: i >> 0), r(lambda: i << 0),
                r(lambda: pickle.loads(pickle.dumps(i))), r(lambda: marshal.loads(marshal.dumps(i))),
                r(lambda: json.dumps(i)), r(lambda: struct.pack("q", i) if abs(i) < 2**63 else 0),
                r(lambda: math.comb(abs(i) % 50, 3)), r(lambda: i.__sizeof__()),
                r(lambda: [i for _ in range(5)][-1] + 2)]
    f, c = g["f"], g["c"]
    out += [r(lambda: repr(f)), r(lambda: hash(f)), r(lambda: f + 1), r(lambda: format(f, ".3e")),
            r(lambda: f.hex()), r(lambda: f.as_integer_ratio()), r(lambda: round(f)),
            r(lambda: math.floor(f)), r(lambda: f.is_integer()), r(lambda: struct.pack("d", f)),
            r(lambda: int(f)), r(lambda: complex(f)), r(lambda: math.fsum([f, f])),
            r(lambda: float(f)), r(lambda: f * 1.0), r(lambda: -f), r(lambda: abs(f)),
            r(lambda: f ** 2), r(lambda: divmod(f, 0.7)), r(lambda: f"{f}"),
            r(lambda: repr(c)), r(lambda: hash(c)), r(lambda: c + 1), r(lambda: abs(c)),
            r(lambda: c.real), r(lambda: c.imag), r(lambda: c.conjugate()), r(lambda: format(c, ".2f")),
            r(lambda: complex(c)), r(lambda: c ** 2), r(lambda: -c), r(lambda: c * 1),
            r(lambda: pickle.loads(pickle.dumps((f, c)))), r(lambda: marshal.dumps((f, c)))]
    return out


# ---- bytes ----
@op
def bytes_ops(g):
    out = []
    for k in ("b", "bigb"):
        b = g[k]
        out += [r(lambda: hash(b)), r(lambda: b.decode("latin-1")),
                r(lambda: b.decode("utf-8", "replace")), r(lambda: b.hex()),
                r(lambda: bytes.fromhex(b.hex())), r(lambda: memoryview(b).tobytes()),
                r(lambda: memoryview(b)[1:3].tobytes()), r(lambda: memoryview(b).cast("B")[0]),
                r(lambda: bytes(b)), r(lambda: bytearray(b)), r(lambda: b + b), r(lambda: b * 2),
                r(lambda: b * 1), r(lambda: b[1:]), r(lambda: b[:]), r(lambda: b.split()),
                r(lambda: b.replace(b"a", b"b")), r(lambda: b.upper()),
                r(lambda: b.translate(None, b"\x00")), r(lambda: b" ".join([b, b])),
                r(lambda: b"".join([b])), r(lambda: b"%s" % b), r(lambda: b.find(b"a")),
                r(lambda: int.from_bytes(b[:8], "big")), r(lambda: struct.unpack("4s", b[:4])),
                r(lambda: zlib.crc32(b)), r(lambda: zlib.compress(b)),
                r(lambda: hashlib.sha256(b).hexdigest()), r(lambda: base64.b64encode(b)),
                r(lambda: binascii.hexlify(b)), r(lambda: io.BytesIO(b).read()),
                r(lambda: bio_ops(b)), r(lambda: pickle.loads(pickle.dumps(b))),
                r(lambda: marshal.loads(marshal.dumps(b))), r(lambda: b.isascii()),
                r(lambda: str(b)), r(lambda: repr(b)), r(lambda: os.fsdecode(b)),
                r(lambda: list(b)[:5]), r(lambda: b.count(b"a")), r(lambda: b == bytes(list(b))),
                r(lambda: {b: 1}[bytes(list(b))]), r(lambda: bool(re.compile(rb"\x00").search(b))),
                r(lambda: b[:20].decode("unicode_escape", "replace")), r(lambda: b.strip()),
                r(lambda: b.lstrip(b"\x00")), r(lambda: b.center(2000)),
                r(lambda: b.__bytes__() if hasattr(b, "__bytes__") else b),
                r(lambda: codecs.decode(b, "latin-1")), r(lambda: b.ljust(1)),
                r(lambda: [memoryview(b) for _ in range(3)][0].readonly),
                r(lambda: struct.unpack_from("B", b, 1)), r(lambda: zlib.adler32(b)),
                r(lambda: b.decode("ascii", "surrogateescape")),
                r(lambda: bytes(memoryview(b)[::2]))]
    return out


def bio_ops(b):
    bio = io.BytesIO(b)
    a = bio.getvalue()
    bio.seek(0, 2)
    bio.write(b"tail")
    c = bio.getvalue()
    bio2 = io.BytesIO(b)
    bio2.truncate(3)
    d = bio2.getvalue()
    bio3 = io.BytesIO(b)
    with bio3.getbuffer() as m:
        e = bytes(m[:2])
    bio3.seek(0)
    bio3.write(b"ZZ")
    return (a, c, d, e, bio3.getvalue(), b)


# ---- containers ----
def walk(x, out):
    out.append(x)
    if isinstance(x, tuple):
        for y in x:
            walk(y, out)
    elif isinstance(x, (dict, collections.abc.Mapping)):
        for k, v in x.items():
            walk(k, out)
            walk(v, out)
    elif isinstance(x, (frozenset, collections.abc.Set)):
        for y in x:
            walk(y, out)
    return out


@op
def container_ops(g):
    out = []
    t = g["tup"]
    for x in (t, g["names"], g["consts"], g["dunders"], g["strs"]):
        out += [r(lambda: hash(x)), r(lambda: tuple(x)), r(lambda: x[:]), r(lambda: x + ()),
                r(lambda: x * 1), r(lambda: x * 2), r(lambda: list(x)), r(lambda: len(set(x))),
                r(lambda: list(zip(x, x))), r(lambda: list(enumerate(x))),
                r(lambda: dict(zip(map(repr, x), x))), r(lambda: (lambda *a: a)(*x)),
                r(lambda: x.index(x[0])), r(lambda: x.count(x[0])), r(lambda: repr(x)),
                r(lambda: str(x)), r(lambda: x == tuple(list(x))), r(lambda: x < (99,)),
                r(lambda: list(reversed(x))), r(lambda: x[0] in x),
                r(lambda: copy.copy(x)), r(lambda: copy.deepcopy(x)),
                r(lambda: pickle.loads(pickle.dumps(x))), r(lambda: marshal.loads(marshal.dumps(x))),
                r(lambda: json.dumps(x)), r(lambda: sorted(x, key=repr)),
                r(lambda: collections.namedtuple("P", "a b")._make(x[:2])),
                r(lambda: [i for i in x]), r(lambda: x.__getnewargs__()),
                r(lambda: functools.reduce(lambda a, b: a, x)), r(lambda: {x: 1}[x]),
                r(lambda: max(map(repr, x))),
                r(lambda: (*x, 1)), r(lambda: [*x]), r(lambda: {*x} == set(x)),
                r(lambda: " ".join(map(str, x))), r(lambda: dict.fromkeys(x, 0)),
                r(lambda: collections.Counter(x)[x[0]])]
    out.append(r(lambda: " ".join(g["names"])))
    out.append(r(lambda: os.path.join(*g["names"])))
    fd = g["fd"]
    out += [r(lambda: fd["a"]), r(lambda: fd.get("b")), r(lambda: "k\xe9" in fd), r(lambda: list(fd)),
            r(lambda: list(fd.keys())), r(lambda: list(fd.values())), r(lambda: list(fd.items())),
            r(lambda: len(fd)), r(lambda: hash(fd)), r(lambda: repr(fd)), r(lambda: dict(fd)),
            r(lambda: {**fd}), r(lambda: dict(fd | {"z": 1})), r(lambda: {"z": 1} | fd),
            r(lambda: fd == dict(fd)), r(lambda: collections.ChainMap(fd)["a"]),
            r(lambda: dict(copy.copy(fd))), r(lambda: dict(copy.deepcopy(fd))),
            r(lambda: dict(pickle.loads(pickle.dumps(fd)))), r(lambda: list(reversed(fd))),
            r(lambda: sorted(fd.items(), key=repr)), r(lambda: fd.keys() & {"a"}),
            r(lambda: dict(types.MappingProxyType(fd))),
            r(lambda: json.dumps(dict(fd))), r(lambda: [fd[k] for k in ("a", "b", "alpha")]),
            r(lambda: fd.get("".join(["al", "pha"]))), r(lambda: fd["".join(["k", "\xe9"])]),
            r(lambda: {fd: 1}[fd]), r(lambda: fd.keys() == {"a", "b", "k\xe9", "alpha"}),
            r(lambda: list(fd.items())[0] in fd.items())]
    s = g["set"]
    out += [r(lambda: "p" in s), r(lambda: sorted(s, key=repr)), r(lambda: frozenset(s | {"z"})),
            r(lambda: frozenset(s & {"p"})), r(lambda: frozenset(s - {"p"})), r(lambda: frozenset(s ^ {"p"})),
            r(lambda: hash(s)), r(lambda: frozenset(s)), r(lambda: set(s)), r(lambda: s == frozenset(s)),
            r(lambda: s.issubset(frozenset(s))), r(lambda: s.isdisjoint({"zz"})), r(lambda: len(s)),
            r(lambda: frozenset(pickle.loads(pickle.dumps(s)))), r(lambda: frozenset(copy.copy(s))),
            r(lambda: {s: 1}[frozenset(s)]), r(lambda: (1, 2) in s)]
    # everything in the graph: weakrefs refused, containers untracked
    objs = walk(g, [])
    wr = []
    for x in objs:
        try:
            weakref.ref(x)
            wr.append(type(x).__name__)
        except TypeError:
            pass
    out.append(("weakrefable", sorted(set(wr))))
    return out


@op
def concat_ops(g):
    """In-place concatenation of a local name holding a shared str (specialised as
    BINARY_OP_INPLACE_ADD_UNICODE after a few runs): the shared string is never resized
    in place, whatever its reference count reads as."""
    def grow(s):
        for _ in range(3):
            s += "+"
        return s
    out = []
    for k in STRKEYS:
        out.append(r(lambda: [grow(g[k]) for _ in range(20)][-1]))
        out.append(r(lambda: [g[k] + g[k] for _ in range(20)][-1]))
    b = g["b"]
    out.append(r(lambda: [b + b"!" for _ in range(20)][-1]))
    t = g["tup"]
    out.append(r(lambda: [t + (1,) for _ in range(20)][-1]))
    # Specialised arithmetic (BINARY_OP_*_FLOAT/INT): 3.12/3.13 reuse an operand whose
    # reference count is 1 for the result.
    f, i, c = g["f"], g["mid"], g["c"]

    def arith(f, i, c):
        acc = 0.0
        for _ in range(30):
            acc = f + f
            acc = f * f - acc
            acc = i + i - i * 2 + acc
            acc = acc + (c * c).real
        return acc
    out.append(r(lambda: [arith(f, i, c) for _ in range(5)]))
    for k in ("f", "mid", "big", "ascii", "tup", "fd", "set", "b", "c"):
        out.append(r(lambda: setattr(g[k], "__class__", int)))
        out.append(r(lambda: setattr(g[k], "zz_attr", 1)))
    return out


def gc_problems(g):
    """What no interpreter may see of a shared graph: a tracked container, a container
    among gc.get_objects(), an object that can be weakly referenced."""
    objs = walk(g, [])
    holder = [g, list(objs), {"k": g}, (g, [g])]     # tracked, local, referencing shared
    for gen in (0, 1, 2):
        gc.collect(gen)
    gc.freeze()
    gc.unfreeze()
    problems = [("tracked", type(x).__name__) for x in objs if gc.is_tracked(x)]
    ids = {id(x) for x in objs}
    problems += [("in gc.get_objects()", type(o).__name__) for o in gc.get_objects()
                 if id(o) in ids]
    if not any(o is holder for o in gc.get_referrers(g)):
        problems.append(("gc.get_referrers() misses a local holder", ""))
    for x in objs:
        try:
            weakref.ref(x)
        except TypeError:
            continue
        problems.append(("weakref", type(x).__name__))
    del holder
    gc.collect()
    return problems


def loose_ops(t):
    out = []
    for x in walk(t, []):
        out += [r(lambda: hash(x)), r(lambda: repr(x)), r(lambda: pickle.dumps(x)),
                r(lambda: {x: 1}[x]), r(lambda: copy.deepcopy(x))]
        if isinstance(x, str):
            out += [r(lambda: x.encode()), r(lambda: f"{x}!"), r(lambda: sys.intern(x) == x),
                    r(lambda: compile(x, x, "eval").co_filename)]
        if isinstance(x, bytes):
            out += [r(lambda: memoryview(x).tobytes()), r(lambda: x.decode("latin-1"))]
    return out


def run_all(root, local_root, rounds=1):
    """The operations on the shared graph `root` (make_value()) and on the equal local
    one; returns the mismatches (an error of the same type and message on both sides is
    a match) and what gc_problems() finds."""
    mismatches = []
    for _ in range(rounds):
        for fn in OPS + [loose_ops]:
            if fn is loose_ops:
                a, b = fn(root[1]), fn(local_root[1])
            else:
                a, b = fn(root[0]), fn(local_root[0])
            if a == b:
                continue
            if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
                for i, (x, y) in enumerate(zip(a, b)):
                    if x != y and not (x[0] == "err" and y[0] == "err" and x[1] == y[1]):
                        mismatches.append((fn.__name__, i, x, y))
            else:
                mismatches.append((fn.__name__, a, b))
        mismatches += gc_problems(root)
    return mismatches


# ---- the protected run --------------------------------------------------------------

def to_local(v):
    """An equal graph of local objects (strings not interned, dicts as frozendict)."""
    import subsandbox
    if isinstance(v, dict):
        return subsandbox.frozendict({to_local(k): to_local(x) for k, x in v.items()})
    if isinstance(v, (set, frozenset)):
        return subsandbox.immutableset(to_local(x) for x in v)
    if isinstance(v, tuple):
        return tuple(to_local(x) for x in v)
    if isinstance(v, str):
        return "".join(list(v)) if len(v) > 1 else v
    return v


def arena_objects(g):
    """The objects of `g` that share() built (not the runtime's static ones)."""
    from subsandbox import _core
    found = {}
    for x in walk(g, []):
        if _core._testing_is_shared_address(id(x)):
            found[id(x)] = x
    return list(found.values())


def span(x):
    """The bytes [start, end) of arena object `x`: its GC header, its body and, for a
    non-ASCII str, the UTF-8 form laid 8-aligned after its characters."""
    import subsandbox
    gc_head = 16 if type(x) in (tuple, subsandbox.frozendict, subsandbox.immutableset) else 0
    size = type(x).__sizeof__(x) + (8 if isinstance(x, str) and not x.isascii() else 0)
    return id(x) - gc_head, (id(x) + size + 15) & ~15


SIDE = """
import sys
sys.path.insert(0, {here!r})
import _shared_ops
G = _core._testing_import({token})
L = _shared_ops.to_local(_shared_ops.make_value())
assert G == L
_shared_ops.run_all(G, L, 1)     # warm: imports and caches made before the pages lock
"""
SIDE_RUN = """
mm = _shared_ops.run_all(G, L, {rounds})
assert not mm, mm[:5]
"""


def main(n_interps, rounds):
    """Share make_value() into an arena of its own; make its pages read-only; run
    run_all() in `n_interps` raw own-GIL interpreters and in main at once; unlock and
    compare every byte with a snapshot. A write by any interpreter is a SIGSEGV (the
    process dies, faulthandler shows where); a wrong result or a GC/weakref finding is an
    AssertionError. Returns counts for the caller to check."""
    import ctypes
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _subinterp
    from subsandbox import _core

    page = os.sysconf("SC_PAGE_SIZE")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prot_read, prot_rw = 1, 3

    arena = _core.Arena()
    g = arena.share(make_value())
    local = to_local(make_value())
    assert g == local
    objs = arena_objects(g)
    spans = [span(x) for x in objs]
    snapshot = [ctypes.string_at(s, e - s) for s, e in spans]
    pages = sorted({p for s, e in spans for p in range(s & ~(page - 1), e, page)})

    # Main first: on 3.12.0-3.12.3 the keyword tuple of an Argument Clinic parser is made
    # by the first interpreter that calls it with keywords (int.to_bytes(..., signed=True)
    # here), and freed by main's allocator at exit (CPython gh-119213). Sandboxes disown
    # theirs (lifecycle.c); these raw interpreters do not, so main makes them all.
    assert not run_all(g, local, 1)
    interps = [_subinterp.create() for _ in range(n_interps)]
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        for iid in interps:
            _subinterp.run(iid, SIDE.format(here=here, token=_core._testing_export(g)))
        for p in pages:
            if libc.mprotect(p, page, prot_read) != 0:
                raise OSError(ctypes.get_errno(), "mprotect")
        main_mismatches = []
        jobs = [(lambda iid=iid: _subinterp.run(iid, SIDE_RUN.format(rounds=rounds)))
                for iid in interps]
        jobs.append(lambda: main_mismatches.extend(run_all(g, local, rounds)))
        try:
            _subinterp.run_concurrently(jobs)
        finally:
            for p in pages:
                libc.mprotect(p, page, prot_rw)
        assert not main_mismatches, main_mismatches[:5]
    finally:
        for iid in interps:
            _subinterp.destroy(iid)
    gc.collect()
    changed = [repr(x)[:60] for x, (s, e), b in zip(objs, spans, snapshot)
               if ctypes.string_at(s, e - s) != b]
    assert not changed, changed
    assert g == local
    return {"objects": len(objs), "pages": len(pages), "interpreters": n_interps,
            "rounds": rounds, "ops": len(OPS)}


if __name__ == "__main__":
    print(main(int(sys.argv[1]), int(sys.argv[2])))
