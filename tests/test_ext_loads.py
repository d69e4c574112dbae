"""Smoke test of the C extension: it loads in the main interpreter and in own-GIL
subinterpreters running at the same time, and survives their teardown.

This is the test tools/sanitizers.sh runs first under ASan and TSan: importing the module
runs its multi-phase init (module state, the interpreter dict entry) in every interpreter,
and destroying the interpreters runs m_clear/m_free, so it exercises the module's
per-interpreter lifetime even while the rest of _ext/ is stubs.
"""

import os
import sys
import threading

import pytest

import subsandbox._core as core

if sys.version_info >= (3, 13):
    import _interpreters

    def _create():
        return _interpreters.create("isolated")

    def _run(interp, code):
        # None on success, else a snapshot of the exception raised in the interpreter.
        return _interpreters.exec(interp, code)

    def _destroy(interp):
        _interpreters.destroy(interp)

    def _is_own_gil(interp):
        cfg = _interpreters.get_config(interp)
        # Own GIL, own obmalloc, and only multi-phase extensions that declare support.
        return (cfg.gil, cfg.use_main_obmalloc, cfg.check_multi_interp_extensions) == (
            "own", False, True)

else:  # 3.12
    import _xxsubinterpreters as _interpreters

    def _create():
        return _interpreters.create(isolated=True)

    def _run(interp, code):
        try:
            _interpreters.run_string(interp, code)
        except _interpreters.RunFailedError as exc:
            return exc
        return None

    def _destroy(interp):
        _interpreters.destroy(interp)

    def _is_own_gil(interp):
        return True  # create(isolated=True) means an own GIL on 3.12


# The subinterpreters must load the very file the main interpreter loaded (under the
# sanitizer scripts: the instrumented build installed into the sanitizer Python). Putting the
# directory that holds this package first on their sys.path makes sure of it, whether the
# package comes from site-packages or from an in-place build of the repository.
CORE_FILE = core.__file__
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(CORE_FILE)))

SUB_CODE = f"""
import sys
sys.path.insert(0, {PACKAGE_PARENT!r})
import subsandbox._core as core
assert core.__file__ == {CORE_FILE!r}, (core.__file__, {CORE_FILE!r})
assert core.__name__ == "subsandbox._core"
# Keep the interpreter busy for a moment so that the two threads really overlap.
total = 0
for i in range(20000):
    total += i * i
assert total == sum(i * i for i in range(20000))
"""


def test_main_interpreter_loads_core():
    assert core.__name__ == "subsandbox._core"
    assert core.__doc__
    # Importing again gives the same module object: one module per interpreter.
    import importlib

    assert importlib.import_module("subsandbox._core") is core


def test_isolated_config_has_own_gil():
    interp = _create()
    try:
        assert _is_own_gil(interp)
    finally:
        _destroy(interp)


def _run_concurrently(n):
    """Create n isolated interpreters, import _core in all of them at once from n threads,
    destroy them; return the list of failures."""
    interps = [_create() for _ in range(n)]
    errors = [f"interpreter {i} has no own GIL" for i in interps if not _is_own_gil(i)]
    barrier = threading.Barrier(n)

    def worker(interp):
        try:
            barrier.wait(timeout=60)
            exc = _run(interp, SUB_CODE)
            if exc is not None:
                errors.append(getattr(exc, "errdisplay", None) or repr(exc))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in interps]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a subinterpreter thread hung"
    finally:
        for interp in interps:
            _destroy(interp)
    return errors


def test_core_loads_in_two_concurrent_own_gil_subinterpreters():
    assert _run_concurrently(2) == []


@pytest.mark.parametrize("round_", range(3))
def test_repeated_create_import_destroy(round_):
    # Module init and teardown (m_clear/m_free) run once per interpreter per round.
    assert _run_concurrently(2) == []
