"""Raw own-GIL interpreters for the tests of the shared-object core.

The Sandbox API is not there yet, so these tests drive CPython's private modules
directly: ``_xxsubinterpreters`` on 3.12, ``_interpreters`` on 3.13+. Every interpreter
is created isolated (own GIL, own obmalloc), imports ``subsandbox._core`` from where the
main interpreter got it, and is reported to the core with ``_core._interpreter_destroyed(id)`` once it
has been destroyed, as subsandbox itself will do.
"""

import os
import sys
import threading

import subsandbox

# The directory holding the subsandbox package this interpreter imported (site-packages in
# CI, the checkout under PYTHONPATH in development): the raw interpreters import the same.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(subsandbox.__file__)))
PREAMBLE = (
    "import sys\n"
    f"sys.path.insert(0, {ROOT!r})\n"
    "from subsandbox import _core\n"
)

if sys.version_info >= (3, 13):
    import _interpreters as _I

    def create():
        return _I.create("isolated")

    def run(iid, script):
        err = _I.exec(iid, PREAMBLE + script)
        if err is not None:
            raise RuntimeError(f"in interpreter {iid}:\n{err.errdisplay}")

else:
    import _xxsubinterpreters as _I

    def create():
        # Keep the InterpreterID object: when its last reference goes, 3.12 destroys the
        # interpreter by itself.
        return _I.create(isolated=True)

    def run(iid, script):
        try:
            _I.run_string(iid, PREAMBLE + script)
        except _I.RunFailedError as e:
            raise RuntimeError(f"in interpreter {iid}: {e}") from None


def destroy(iid, report=True):
    """Destroy the interpreter, then tell the core it holds nothing any more."""
    _I.destroy(iid)
    if report:
        from subsandbox import _core
        _core._interpreter_destroyed(int(iid))


def run_concurrently(jobs):
    """Run callables in threads at once; re-raise the first failure."""
    errors = []
    barrier = threading.Barrier(len(jobs))

    def wrap(fn):
        try:
            barrier.wait()
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
