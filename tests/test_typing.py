"""The package type-checks: mypy, configured by pyproject.toml's [tool.mypy], finds nothing.

It checks subsandbox/_core.pyi (the types of the C extension, kept by hand in step with
_ext/*.c) together with every module that uses it, on the CPython that runs the tests:
[tool.mypy] pins no python_version, so each version's own branches are checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_passes() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, (
        f"mypy exited with status {result.returncode}:\n{result.stdout}{result.stderr}")


def test_the_stub_matches_the_c_extension(tmp_path: Path) -> None:
    """mypy's stubtest imports the built _core and compares every name, signature and
    class of subsandbox/_core.pyi with it: a function added, removed or changed in
    _ext/*.c without its stub fails here. Run from an empty directory, so that the
    package found is the one under test (installed, or on PYTHONPATH), with its .so."""
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy.stubtest", "subsandbox._core"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"stubtest exited with status {result.returncode}:\n{result.stdout}{result.stderr}")


def test_a_users_strict_mypy_sees_every_public_name(tmp_path: Path) -> None:
    """A project that type-checks with --strict (no implicit re-export) must find each
    public name of the package, with its type: __all__ has to be a literal for that."""
    pytest.importorskip("mypy")
    import subsandbox

    assert sorted(subsandbox.__all__) == sorted(subsandbox._LAZY)
    user = tmp_path / "user_code.py"
    imports = ", ".join(subsandbox.__all__)
    user.write_text(
        f"from subsandbox import {imports}\n"
        "import subsandbox\n"
        "def score(x: int, label: str) -> float:\n"
        "    return x / len(label)\n"
        "def work(sb: Sandbox, pool: SandboxPoolExecutor) -> float:\n"
        "    shared: frozendict[str, int] = share({'a': 1})\n"
        "    return (sb.call(score, 1, 'ab') + pool.submit(abs, -1).result() + shared['a']\n"
        "            + pool.submit(score, 2, label='cd').result())\n"
        "def wrong(sb: Sandbox, pool: SandboxPoolExecutor) -> None:\n"
        "    sb.call(score, 'one', 'ab')\n"
        "    pool.submit(score, 1, 2)\n"
        "reveal_type(subsandbox.Sandbox)\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "MYPYPATH": str(ROOT)})
    assert "does not explicitly export" not in result.stdout, result.stdout
    assert "subsandbox.sandbox.Sandbox" in result.stdout, result.stdout
    # The two wrong calls, and nothing else: arguments are checked against the function.
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [e.split(":")[1] for e in errors] == ["10", "11"], result.stdout
    assert all("arg-type" in e for e in errors), result.stdout
