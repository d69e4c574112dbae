"""The test matrix: every supported CPython found on this machine.

Found: pyenv's 3.12+ versions, the CPythons tools/build-cpython.sh built into .pythons/
(3.14: scripts/test builds it when this machine has none), and any ``python3.N``
(N >= 12) on PATH, so a newer CPython installed later is tested too. The ``matrix``
session fails unless the tests passed on at least two versions: a machine where only one
ran has not tested us.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
MARKERS = ROOT / ".nox" / "_matrix"
MIN_VERSIONS = 2

nox.options.sessions = ["tests", "matrix"]
nox.options.reuse_existing_virtualenvs = False


def _interpreters() -> list[str]:
    found: dict[str, str] = {}
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for exe in sorted(glob.glob(f"{pyenv_root}/versions/3.*/bin/python3.*")):
        m = re.fullmatch(r".*/versions/(3\.(\d+))\.[^/]*/bin/python3\.\d+", exe)
        if m and int(m.group(2)) >= 12 and "t" not in Path(exe).name[len("python3."):]:
            found.setdefault(m.group(1), exe)
    for exe in sorted(glob.glob(str(ROOT / ".pythons" / "3.*" / "bin" / "python3.*"))):
        m = re.fullmatch(r".*/\.pythons/(3\.(\d+))/bin/python3\.\d+", exe)
        if m and int(m.group(2)) >= 12:
            found.setdefault(m.group(1), exe)
    for minor in range(12, 30):
        exe = shutil.which(f"python3.{minor}")
        if exe and f"3.{minor}" not in found:
            found[f"3.{minor}"] = exe
    return [found[v] for v in sorted(found, key=lambda v: int(v.split(".")[1]))]


@nox.session(python=_interpreters())
def tests(session: nox.Session) -> None:
    """Build and install the package (with its C extension), then run pytest."""
    session.install(".[test]")
    version = session.run("python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])",
                          silent=True).strip()
    # Run from tests/ so that the source tree cannot shadow the installed package.
    session.chdir(ROOT / "tests")
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)
    MARKERS.mkdir(parents=True, exist_ok=True)
    (MARKERS / version).write_text("passed\n")


@nox.session(python=False)
def matrix(session: nox.Session) -> None:
    """Fail unless the tests passed on at least two CPython versions in this run."""
    passed = sorted(p.name for p in MARKERS.glob("3.*")) if MARKERS.exists() else []
    if MARKERS.exists():
        shutil.rmtree(MARKERS)
    session.log(f"tests passed on CPython {', '.join(passed) or 'no version'}")
    if len(passed) < MIN_VERSIONS:
        session.error(f"the tests passed on {len(passed)} CPython version(s); "
                      f"at least {MIN_VERSIONS} must run (found: {_interpreters()})")
