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
