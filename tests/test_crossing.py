"""What crosses by value (subsandbox/_crossing.py): classes and functions of the main script.

A class defined in ``__main__`` crosses as its code and attributes and is rebuilt on the
other side. Each kind of class here crosses both ways, through ``Sandbox.call`` and through
``SandboxPoolExecutor.submit``: as an argument, checked inside (its behaviour, not only its
type), and as a result, checked outside. The classes must live in ``__main__``, and pytest's
test modules are not ``__main__``, so each test runs a script in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import run_script

# Each script starts with this: cross(make, inside, outside) sends make() into a sandbox
# (Sandbox.call) and into a pool worker (SandboxPoolExecutor.submit), where inside(value)
# checks it and returns a value made there, which outside(result) checks here.
HARNESS = """
import subsandbox

def cross(make, inside, outside):
    with subsandbox.Sandbox() as sb:
        outside(sb.call(inside, make()))
    with subsandbox.SandboxPoolExecutor(1) as ex:
        outside(ex.submit(inside, make()).result())
    print("ok")
"""


def run_kind(source: str) -> None:
    result = run_script(HARNESS + textwrap.dedent(source))
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "ok", result.stdout


# -- kinds of classes ---------------------------------------------------------------------

def test_property_staticmethod_classmethod_and_new() -> None:
    run_kind("""
        class Temperature:
            def __new__(cls, celsius):
                self = super().__new__(cls)
                self._celsius = celsius
                return self

            @property
            def fahrenheit(self):
                "In degrees Fahrenheit."
                return self._celsius * 9 / 5 + 32

            @fahrenheit.setter
            def fahrenheit(self, value):
                self._celsius = (value - 32) * 5 / 9

            def __getnewargs__(self):                 # how pickle calls __new__
                return (self._celsius,)

            @staticmethod
            def freezing():
                return 0

            @classmethod
            def boiling(cls):
                return cls(100)

        def inside(t):
            assert type(t) is Temperature and t.fahrenheit == 212
            assert Temperature.fahrenheit.__doc__ == "In degrees Fahrenheit."
            t.fahrenheit = 32                                 # the setter crossed too
            assert t._celsius == 0
            assert Temperature.freezing() == t.freezing() == 0
            assert type(Temperature.boiling()) is Temperature
            assert t.boiling().fahrenheit == 212
            return Temperature(37)

        def outside(t):
            assert type(t) is Temperature and round(t.fahrenheit, 1) == 98.6

        cross(lambda: Temperature(100), inside, outside)
    """)


def test_annotations() -> None:
    # 3.14 evaluates a class's annotations lazily, with a function that reads the class
    # namespace through a cell; that cell holds the whole namespace, descriptors and all.
    run_kind("""
        class Config:
            Unit = str
            retries: int = 3
            unit: Unit = "s"

        def inside(config):
            assert Config.__annotations__ == {"retries": int, "unit": str}
            assert (config.retries, config.unit) == (3, "s")
            return Config()

        def outside(config):
            assert type(config) is Config and config.retries == 3

        cross(Config, inside, outside)
    """)


def test_slots() -> None:
    run_kind("""
        class Point:
            __slots__ = ("x", "__y")          # "__y" is mangled to "_Point__y"

            def __init__(self, x, y):
                self.x, self.__y = x, y

            @property
            def y(self):
                return self.__y

        class Point3(Point):
            __slots__ = {"z": "the height"}

            def __init__(self, x, y, z):
                super().__init__(x, y)
                self.z = z

        def inside(p):
            assert type(p) is Point3 and (p.x, p.y, p.z) == (1, 2, 3)
            assert not hasattr(p, "__dict__") and Point3.__slots__ == {"z": "the height"}
            try:
                p.w = 4
            except AttributeError:
                pass
            else:
                raise AssertionError("a slotted instance took a new attribute")
            p.x = 5
            return p, Point(6, 7)

        def outside(result):
            p3, p = result
            assert type(p3) is Point3 and (p3.x, p3.y, p3.z) == (5, 2, 3)
            assert type(p) is Point and (p.x, p.y) == (6, 7)

        cross(lambda: Point3(1, 2, 3), inside, outside)
    """)


def test_dataclasses() -> None:
    run_kind("""
        import dataclasses

        @dataclasses.dataclass(order=True)
        class Item:
            name: str
            price: float = 0.0
            tags: list = dataclasses.field(default_factory=list, compare=False,
                                           metadata={"unit": "label"})
            _: dataclasses.KW_ONLY
            qty: int = 1

        @dataclasses.dataclass(frozen=True, slots=True)
        class Key:
            id: int

        def inside(item):
            fields = dataclasses.fields(item)
            assert [f.name for f in fields] == ["name", "price", "tags", "qty"]
            assert fields[0].default is dataclasses.MISSING and fields[1].default == 0.0
            assert fields[2].default_factory is list and fields[2].metadata["unit"] == "label"
            assert fields[3].kw_only and Item.__dataclass_params__.order
            assert item == Item("pen", 1.5, ["a"], qty=2)
            assert repr(item) == "Item(name='pen', price=1.5, tags=['a'], qty=2)"
            assert dataclasses.asdict(item) == {"name": "pen", "price": 1.5, "tags": ["a"],
                                                "qty": 2}
            assert dataclasses.replace(item, qty=3).qty == 3
            assert Item("a") < Item("b") and Item("x").tags == []
            assert Item("x").tags is not Item("x").tags       # default_factory, each time
            key = Key(1)
            try:
                key.id = 2
            except dataclasses.FrozenInstanceError:
                pass
            else:
                raise AssertionError("a frozen dataclass changed")
            assert key == Key(1) and hash(key) == hash(Key(1)) and repr(key) == "Key(id=1)"
            return Item("book", 9.0, ["b"]), key

        def outside(result):
            item, key = result
            assert type(item) is Item and item == Item("book", 9.0, ["b"])
            assert dataclasses.asdict(item)["tags"] == ["b"]
            assert type(key) is Key and key == Key(1) and hash(key) == hash(Key(1))

        cross(lambda: Item("pen", 1.5, ["a"], qty=2), inside, outside)
    """)


def test_namedtuples() -> None:
    run_kind("""
        import collections
        import typing

        Pair = collections.namedtuple("Pair", "left right", defaults=[0])

        class Row(typing.NamedTuple):
            id: int
            label: str = "?"

            def describe(self):
                return f"{self.id}:{self.label}"

        def inside(value):
            pair, row = value
            assert type(pair) is Pair and isinstance(pair, tuple) and pair == (1, 2)
            assert (pair.left, pair.right) == (1, 2) and Pair._fields == ("left", "right")
            assert Pair(5) == (5, 0) and Pair._make([7, 8]) == Pair(7, 8)
            assert pair._replace(right=3) == (1, 3) and pair._asdict() == {"left": 1, "right": 2}
            assert type(row) is Row and isinstance(row, tuple) and tuple(row) == (3, "x")
            assert row.describe() == "3:x" and Row(4).label == "?"
            assert Row._fields == ("id", "label") and Row._field_defaults == {"label": "?"}
            return Pair(9, 10), Row(5, "y")

        def outside(value):
            pair, row = value
            assert type(pair) is Pair and pair == (9, 10) and pair.right == 10
            assert type(row) is Row and row.describe() == "5:y"

        cross(lambda: (Pair(1, 2), Row(3, "x")), inside, outside)
    """)


def test_enums() -> None:
    run_kind("""
        import enum

        class Color(enum.Enum):
            RED = 1
            GREEN = 2
            CRIMSON = 1                                # an alias of RED

            def describe(self):
                return f"{self.name}={self.value}"

            @classmethod
            def _missing_(cls, value):
                return cls.RED if value == "r" else None

        class Perm(enum.IntFlag):
            R = 4
            W = 2
            X = 1
            RW = 6

        class Planet(enum.Enum):
            EARTH = (5.97e24, 6.37e6)

            def __init__(self, mass, radius):
                self.mass, self.radius = mass, radius

        class Level(str, enum.Enum):
            LOW = "low"

        def inside(value):
            color, again, perm, planet, level = value
            # One member is one object on this side too: the argument's, the class's own.
            assert color is again is Color.RED is Color(1) is Color["RED"] is Color.CRIMSON
            assert (color.name, color.value, color.describe()) == ("RED", 1, "RED=1")
            assert Color("r") is Color.RED and list(Color) == [Color.RED, Color.GREEN]
            assert perm is Perm.RW and perm == 6 and Perm.R | Perm.W is perm
            assert Perm.X in Perm(7) and Perm(5).value == 5
            assert planet is Planet.EARTH and (planet.mass, planet.radius) == (5.97e24, 6.37e6)
            assert level is Level.LOW and level == "low" and isinstance(level, str)
            return Color.GREEN, Color.GREEN, Perm(5), Planet.EARTH

        def outside(value):
            green, again, perm, planet = value
            assert green is again is Color.GREEN and green.describe() == "GREEN=2"
            assert perm is Perm(5) and perm == Perm.R | Perm.X
            assert planet is Planet.EARTH and planet.mass == 5.97e24

        cross(lambda: (Color.RED, Color.RED, Perm.RW, Planet.EARTH, Level.LOW),
              inside, outside)
    """)


def test_abstract_base_classes() -> None:
    run_kind("""
        import abc

        class Shape(abc.ABC):
            @abc.abstractmethod
            def area(self):
                ...

            def describe(self):
                return f"area {self.area()}"

        class Square(Shape):
            def __init__(self, side):
                self.side = side

            def area(self):
                return self.side ** 2

        Shape.register(int)

        def inside(square):
            assert isinstance(square, Shape) and square.describe() == "area 4"
            assert isinstance(3, Shape)                        # the registry crossed
            try:
                Shape()
            except TypeError:
                pass
            else:
                raise AssertionError("an abstract class was instantiated")
            return Square(3)

        def outside(square):
            assert type(square) is Square and square.describe() == "area 9"

        cross(lambda: Square(2), inside, outside)
    """)


def test_generic_classes_and_their_type_variables() -> None:
    run_kind("""
        import typing

        T = typing.TypeVar("T", bound=int)

        class Box(typing.Generic[T]):
            def __init__(self, value: T):
                self.value = value

            def get(self) -> T:
                return self.value

        class IntBox(Box[int]):
            pass

        class Pair[K, V]:                                  # PEP 695
            def __init__(self, key: K, value: V):
                self.key, self.value = key, value

        def inside(value):
            box, int_box, pair, tv = value
            # One TypeVar is one object on this side too: Box[T] is only Box[T] with it.
            assert tv is T and Box.__parameters__ == (T,) and T.__bound__ is int
            assert Box[T] == Box[tv] and IntBox.__orig_bases__ == (Box[int],)
            assert typing.get_args(IntBox.__orig_bases__[0]) == (int,)
            assert box.get() == 1 and int_box.get() == 2 and isinstance(int_box, Box)
            k, v = Pair.__type_params__
            assert (k.__name__, v.__name__) == ("K", "V") and Pair.__parameters__ == (k, v)
            assert (pair.key, pair.value) == ("a", 3)
            return Box(4), T, Pair.__type_params__[0]

        def outside(value):
            box, tv, k = value
            assert type(box) is Box and box.get() == 4
            assert tv is T and k is Pair.__type_params__[0]

        cross(lambda: (Box(1), IntBox(2), Pair("a", 3), T), inside, outside)
    """)


def test_a_class_that_comes_back_is_left_as_its_script_defined_it() -> None:
    # A result of a __main__ class brings the class's attributes as the other side holds
    # them; the class that comes back is the script's own, and stays as the script made it.
    result = run_script("""
        import enum
        import subsandbox

        class Point:
            def norm(self):
                return 1

        class Planet(enum.Enum):
            EARTH = 1

            def __init__(self, value):
                self.moons = ["moon"]

        before = (Point.norm, Planet.EARTH.moons)
        with subsandbox.Sandbox() as sb:
            p, planet = sb.call(lambda: (Point(), Planet.EARTH))
        assert type(p) is Point and Point.norm is before[0]
        assert planet is Planet.EARTH and planet.moons is before[1]
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-4000:]


def test_classes_cross_into_and_out_of_a_sandbox_under_a_policy() -> None:
    # Under a policy the caller loads results with a restricted unpickler: the script's own
    # class comes back with its methods and properties (dropped, the class stays as it
    # is), while a property or method made inside still cannot come out on its own.
    result = run_script("""
        import pickle
        import subsandbox

        class Account:
            __slots__ = ("cents",)

            def __init__(self, cents):
                self.cents = cents

            @property
            def euros(self):
                return self.cents / 100

            @staticmethod
            def zero():
                return Account(0)

            @classmethod
            def of(cls, euros):
                return cls(round(euros * 100))

        def deposit(account, euros):
            assert account.euros == 1.5 and Account.zero().cents == 0
            return Account.of(account.euros + euros)

        with subsandbox.Sandbox(policy=subsandbox.Policy.compute()) as sb:
            account = sb.call(deposit, Account(150), 2)
            assert type(account) is Account and account.euros == 3.5
            try:
                sb.call(lambda: property(lambda self: 1))
            except pickle.UnpicklingError as exc:
                assert "cannot come out" in str(exc), exc
            else:
                raise AssertionError("a property made inside came out")
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "ok"


def test_what_cannot_cross_names_the_class_and_what_to_do() -> None:
    result = run_script("""
        import enum
        import threading
        import typing
        import subsandbox

        class Holder:
            lock = threading.Lock()

        class Coord(bytes, enum.Enum):
            def __new__(cls, value, label):
                member = bytes.__new__(cls, [value])
                member._value_, member.label = value, label
                return member

            PX = (0, "P.X")

        class Movie(typing.TypedDict):                     # its instances are dicts
            title: str

        class Plugin:
            def __init_subclass__(cls, /, name, **kwargs):
                super().__init_subclass__(**kwargs)
                cls.name = name

        class Zip(Plugin, name="zip"):                     # made with a keyword argument
            pass

        with subsandbox.Sandbox() as sb:
            for value in (Holder(), Coord.PX, Movie, Zip()):
                try:
                    sb.call(print, value)
                except TypeError as exc:
                    print(exc)
                else:
                    print("crossed")
            assert sb.call(len, Movie(title="x")) == 1
    """)
    assert result.returncode == 0, result.stderr[-4000:]
    holder, coord, movie, plugin = result.stdout.splitlines()
    assert "'Holder'" in holder and "attribute 'lock'" in holder, holder
    assert "define the class 'Holder' in an importable module" in holder, holder
    for line, name in ((coord, "'Coord'"), (movie, "'Movie'"), (plugin, "'Zip'")):
        assert name in line and "importable module" in line, line
    assert "a TypedDict class cannot be made again" in movie, movie
    assert "keyword arguments" in plugin, plugin
    assert "mappingproxy" not in holder + coord


# -- the main script of a multiprocessing child ---------------------------------------------

def test_functions_of_a_spawned_childs_main_script_cross_by_value(tmp_path: Path) -> None:
    # A spawn (or forkserver) child runs the parent's script as the module __mp_main__,
    # which no sandbox can import: its functions and classes must cross by value.
    script = tmp_path / "spawned.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import subsandbox

        def square(x):
            return x * x

        class Box:
            def __init__(self, v):
                self.v = v

        def unbox(box):
            return box.v + 1

        def task(x):
            assert __name__ == "__mp_main__", __name__
            with subsandbox.SandboxPoolExecutor(1) as ex:
                pooled = ex.submit(square, x).result()
            with subsandbox.Sandbox() as sb:
                called = sb.call(unbox, Box(x))
            return pooled, called

        if __name__ == "__main__":
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                print(pool.submit(task, 7).result())
    """))
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "(49, 8)"


# -- functions that come back ---------------------------------------------------------------

def test_a_main_function_that_comes_back_is_itself_and_writes_no_global() -> None:
    # A function of the main script returned by a sandbox (or a pool worker) used to be
    # rebuilt into the caller's __main__ itself: every global it names was overwritten
    # with the sandbox's copy (here `config`, a dict the program goes on using), and the
    # function that came back was a copy, not the program's own.
    result = run_script("""
        import subsandbox

        config = {"scale": 2}
        original_config = config

        def scaled(x):
            return x * config["scale"]

        def echo(value):
            return value

        def made_inside():
            config = "the sandbox's own"        # a local: nothing to do with main's
            def inner(y):
                return (y, helper_name)
            return inner

        with subsandbox.Sandbox() as sb:
            assert sb.call(echo, scaled) is scaled
            assert sb.call(echo, (scaled, [scaled]))[1][0] is scaled
            assert globals()["config"] is original_config
            config["scale"] = 5
            assert scaled(2) == 10
            sb.exec("helper_name = 'set in the sandbox'")
            got = sb.call(made_inside)
            # A function made in the sandbox gets a namespace of its own here: it names
            # no global of main's, and main's namespace gains nothing.
            assert got.__globals__ is not globals() and got(1) == (1, "set in the sandbox")
            assert "helper_name" not in globals() and "inner" not in globals()
        with subsandbox.SandboxPoolExecutor(1) as ex:
            assert ex.submit(echo, scaled).result() is scaled
            assert globals()["config"] is original_config
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "ok", result.stdout


# -- globals by binding ---------------------------------------------------------------------

def test_a_global_reaches_the_sandbox_once_per_binding_of_the_script() -> None:
    # A global of the script was written into the sandbox's __main__ at every call, so
    # the sandbox lost what its own code did to it (a counter, a cache, an initializer's
    # `global`); now it is written the first time and after each new binding in the script.
    result = run_script("""
        import gc
        import weakref
        import subsandbox

        COUNT = 0
        CACHE = {}
        LIMIT = 10

        class Data:
            pass

        data = Data()

        def count():
            global COUNT
            COUNT += 1
            return COUNT

        def remember(key):
            CACHE[key] = True
            return sorted(CACHE)

        def limit():
            return LIMIT

        def uses_data():
            return type(data).__name__

        with subsandbox.Sandbox() as sb:
            assert [sb.call(count) for _ in range(3)] == [1, 2, 3]
            assert [sb.call(remember, k) for k in "ab"] == [["a"], ["a", "b"]]
            CACHE["script"] = True                     # in place: the sandbox keeps its own
            assert sb.call(remember, "c") == ["a", "b", "c"]
            CACHE = {"new": True}                      # a new binding: the sandbox gets it
            assert sb.call(remember, "d") == ["d", "new"]
            assert sb.call(limit) == 10
            sb.exec("LIMIT = 99")                      # the sandbox's own binding stays...
            assert sb.call(limit) == 99
            LIMIT = 11                                 # ...until the script binds it anew
            assert sb.call(limit) == 11
            assert COUNT == 0
            # The script's old objects are let go once it has rebound the name: the
            # sender keeps the last one sent only to compare identities, and looks for
            # names rebound every _SWEEP_EVERY sends.
            assert sb.call(uses_data) == "Data"
            gone = weakref.ref(data)
            data = Data()
            for _ in range(subsandbox._crossing._SWEEP_EVERY):
                assert sb.call(limit) == 11
            gc.collect()
            assert gone() is None
        # A pool's worker keeps its own the same way, its function sent once or each time.
        LIMIT, CACHE = 20, {}
        with subsandbox.SandboxPoolExecutor(1) as pool:
            assert [pool.submit(count).result() for _ in range(3)] == [1, 2, 3]
            assert [pool.submit(remember, k).result() for k in "ab"] == [["a"], ["a", "b"]]
            CACHE["script"] = True
            assert pool.submit(remember, "c").result() == ["a", "b", "c"]
            LIMIT = 21
            assert pool.submit(limit).result() == 21
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "ok", result.stdout


def test_threads_sending_from_one_namespace_never_break_the_bindings_sweep() -> None:
    # The sender's sweep of the bindings it sent iterated its dict while another thread's
    # send could add a name: "dictionary changed size during iteration" from a plain
    # Sandbox.call. A switch interval of 1 us makes that interleaving near certain (the
    # old sweep failed in every one of 4 runs, 3 of 4 threads each time).
    import threading

    from subsandbox import _crossing

    namespace = {f"n{i}": object() for i in range(400)}
    errors: list[BaseException] = []

    def send(k: int) -> None:
        try:
            for i in range(3000):
                name = f"n{(i * 7 + k * 101) % 400}"
                if i % 5 == 0:
                    namespace[name] = object()      # rebound: the sweep lets the old go
                _crossing._binding_tokens(namespace, {name: namespace[name]})
        except BaseException as exc:  # noqa: BLE001 - collected and checked below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    # And the sweep still does its job: after one more round of sends, the sender keeps
    # only objects that the namespace binds now, none that was rebound away.
    for _ in range(_crossing._SWEEP_EVERY):
        _crossing._binding_tokens(namespace, {"n0": namespace["n0"]})
    sent = _crossing._sent_bindings[id(namespace)][2]
    assert sent and all(namespace[name] is value for name, (value, _) in sent.items())


def test_a_cached_function_of_the_script_crosses_with_a_cache_of_its_own() -> None:
    # functools.cache/lru_cache wrappers pickle by name, which a sandbox's __main__ does
    # not have: a script's cached function, or any function that called one, failed with
    # "no attribute 'fib'". fib(80) finishes only if the recursion goes through the cache.
    result = run_script("""
        import functools
        import subsandbox

        @functools.cache
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        @functools.lru_cache(maxsize=8, typed=True)
        def square(x):
            return x * x

        def uses(n):
            return (fib(n) + square(3), fib.cache_info().hits > 0,
                    square.cache_parameters() == {"maxsize": 8, "typed": True})

        for policy in (None, subsandbox.Policy.compute()):
            with subsandbox.Sandbox(policy=policy) as sb:
                assert sb.call(fib, 80) == 23416728348467685
                assert sb.call(uses, 30) == (832040 + 9, True, True)
            with subsandbox.SandboxPoolExecutor(1, policy=policy) as ex:
                assert ex.submit(fib, 80).result() == 23416728348467685
                assert ex.submit(uses, 30).result() == (832040 + 9, True, True)
        assert fib.cache_info().currsize == 0            # the script's cache was not used
        print("ok")
    """)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "ok", result.stdout
