"""A sandbox's keyword calls into extension modules leave the process able to exit.

CPython 3.12.0-3.12.3 make an Argument Clinic parser's keyword tuple on the first call
with keywords, in the calling interpreter's memory, and free it at exit with the main
interpreter's allocator (CPython gh-119213): one ``math.isclose(a, b, rel_tol=0.1)`` in a
sandbox made 3.12.1 abort at exit ("free(): invalid pointer", status 134). After it
destroys a sandbox, subsandbox marks such tuples as not owned by their parser
(``_ext/pyinternal.c``), and so does the child of a fork for the parent's sandboxes.
On 3.12.4+ and 3.13 there is no such tuple, and the same programs must exit as cleanly.
"""

from __future__ import annotations

from conftest import run_script

# First calls with keywords of functions of shared-library extension modules, each of
# which aborted 3.12.1 at exit when made in a subinterpreter.
KEYWORD_CALLS = """
import math, zlib, _bisect, hashlib, hmac
assert math.isclose(1.0, 1.05, rel_tol=0.1)
assert zlib.decompress(zlib.compress(b"abc", level=1)) == b"abc"
assert _bisect.bisect_left([1, 2, 3], 2, lo=0) == 1
digest = hashlib.md5(b"x", usedforsecurity=False).hexdigest()
mac = hmac.new(b"key", b"message", "sha256").hexdigest()
"""


def test_exit_after_a_sandbox_made_keyword_calls() -> None:
    result = run_script(f"""
        import math
        import subsandbox
        with subsandbox.Sandbox() as sb:
            sb.exec({KEYWORD_CALLS!r} + "import builtins; builtins.RESULT = digest, mac[:8]")
            print(sb.call(eval, "RESULT"))
        # The main interpreter goes on using the same parsers (the sandbox's tuples).
        print(math.isclose(1.0, 1.05, rel_tol=0.1), math.isclose(1.0, 2.0, rel_tol=0.1))
    """)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr[-4000:]
    assert result.stdout == "('9dd4e461268c8034f5c8564e155c67a6', '6e9ef29b')\nTrue False\n"


def test_exit_after_a_pool_of_recycled_workers_made_keyword_calls() -> None:
    # Every recycled worker is a destroyed interpreter; the first one made the tuples.
    result = run_script(f"""
        import subsandbox

        def work(n):
            exec({KEYWORD_CALLS!r}, {{}})
            return n

        with subsandbox.SandboxPoolExecutor(2, max_tasks_per_worker=2) as pool:
            print(sum(pool.map(work, range(10))))
    """, timeout=120)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr[-4000:]
    assert result.stdout == "45\n"


def test_a_forked_child_exits_cleanly_after_the_parents_sandbox_made_keyword_calls() -> None:
    # The child never destroys the parent's sandboxes; it ends through normal
    # finalization (sys.exit), which frees owned keyword tuples.
    result = run_script(f"""
        import os, sys, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        import subsandbox
        sb = subsandbox.Sandbox()
        sb.exec({KEYWORD_CALLS!r})
        pid = os.fork()
        if pid == 0:
            import math
            assert math.isclose(1.0, 1.05, rel_tol=0.1)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        sb.close()
    """)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr[-4000:]
    assert result.stdout == "child 0\n"
