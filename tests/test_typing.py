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
