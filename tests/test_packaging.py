"""The package as pip builds it: the sdist holds what builds it (and no build output or
half test suite), a wheel's ``_core`` built by another CPython is refused at import with
what to do, the next build of a checkout rebuilds it, and setup.py refuses a Python it
cannot serve in one line instead of a page of compiler errors.

The builds here are of a copy of the sources, with ``-O0`` and without LTO: seconds each.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a build reads: the sdist's content, from the checkout.
BUILD_INPUTS = ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in")
# A build for this very major.minor.micro in another release level (rc2 of a final
# release, the final one of a pre-release): internals may still change between the two.
_V = sys.version_info
FOREIGN_FINAL = (_V.releaselevel != "final")
FOREIGN_TEXT = f"{_V.major}.{_V.minor}.{_V.micro}" + ("" if FOREIGN_FINAL else "rc2")
FOREIGN = "-DSS_BUILT_FOR_VERSION_HEX=" + hex(
    (sys.hexversion & ~0xFF) | (0xF0 if FOREIGN_FINAL else 0xC2))


def _copy_sources(dest: Path) -> Path:
    dest.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "_ext", dest / "_ext")
    shutil.copytree(ROOT / "subsandbox", dest / "subsandbox",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return dest


def _build_in_place(tree: Path, cflags: str = "") -> None:
    pytest.importorskip("setuptools")
    env = dict(os.environ, SUBSANDBOX_NO_LTO="1", CFLAGS=f"-O0 {cflags}".strip())
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                            cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _run_from(tree: Path, source: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` with the package of ``tree`` (not the one under test)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([sys.executable, "-c", source], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


IMPORT_CORE = "import subsandbox._core as c; print(c.__file__)"


def test_a_core_built_for_another_cpython_refuses_to_import_and_says_what_to_do(
        tmp_path: Path) -> None:
    tree = _copy_sources(tmp_path / "src")
    _build_in_place(tree, FOREIGN)
    result = _run_from(tree, IMPORT_CORE)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: subsandbox._core was built for CPython "
                           f"{FOREIGN_TEXT} but this is CPython "
                           f"{platform.python_version()}:"), last
    # pip's wheel cache tells CPythons apart by major.minor only: without --no-cache-dir
    # the advice would reinstall the very wheel that was refused.
    assert ("pip install --force-reinstall --no-binary subsandbox --no-cache-dir subsandbox"
            in last), last


def test_a_build_left_by_another_cpython_is_built_again(tmp_path: Path) -> None:
    # The build folder is named by major.minor (build/temp.*-cpython-313), and build_ext
    # skips an extension whose .so is newer than its sources: after an upgrade from
    # 3.13.0 to 3.13.5, `pip install .` in a checkout built before installed the old .so.
    tree = _copy_sources(tmp_path / "src")
    _build_in_place(tree, FOREIGN)             # what the other CPython left behind
    (left,) = (tree / "subsandbox").glob("_core.*.so")
    before = left.stat().st_mtime_ns
    # What that CPython wrote into the folder's stamp: its sys.version.
    for stamp in (tree / "build").glob("temp.*/subsandbox-built-by"):
        stamp.write_text("3.99.0 (main, Jan 1 2030, 00:00:00) [GCC 99]")
    _build_in_place(tree)
    assert left.stat().st_mtime_ns != before, "the .so of the other CPython was kept"
    result = _run_from(tree, IMPORT_CORE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()).parent == tree / "subsandbox"


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An sdist built by setuptools' PEP 517 hook (what `python -m build` and pip call)
    from a copy of the checkout with build outputs lying around, as in a developer's."""
    pytest.importorskip("setuptools")
    base = tmp_path_factory.mktemp("sdist")
    tree = base / "checkout"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".git", ".nox*", ".venv*", ".pythons", ".sanitizers", ".devrun", ".whl", "build",
        "dist", "*.egg-info", ".mypy_cache", ".hypothesis", ".pytest_cache"))
    (tree / "subsandbox" / "_core.cpython-399-x86_64-linux-gnu.so").write_bytes(b"\0")
    (tree / "subsandbox" / "__pycache__").mkdir(exist_ok=True)
    (tree / "subsandbox" / "__pycache__" / "sandbox.cpython-399.pyc").write_bytes(b"\0")
    (tree / ".nox").mkdir()
    (tree / ".nox" / "junk.py").write_text("")
    out = base / "dist"
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta; "
                               "print(build_meta.build_sdist(sys.argv[1]))", str(out)],
        cwd=tree, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield out / result.stdout.strip().splitlines()[-1]


def _members(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tar:
        top = {name.split("/", 1)[0] for name in tar.getnames()}
        assert len(top) == 1, top
        return sorted(member.name.split("/", 1)[1] for member in tar.getmembers()
                      if member.isfile())


def test_the_sdist_holds_what_builds_the_package_and_nothing_else(sdist: Path) -> None:
    names = _members(sdist)
    needed = {"PKG-INFO", "LICENSE", "README.md", "pyproject.toml", "setup.py",
              "subsandbox/py.typed", "subsandbox/_core.pyi"}
    needed |= {f"_ext/{p.name}" for p in (ROOT / "_ext").iterdir() if p.suffix in (".c", ".h")}
    needed |= {f"subsandbox/{p.name}" for p in (ROOT / "subsandbox").glob("*.py")}
    assert needed <= set(names), sorted(needed - set(names))
    unwanted = [name for name in names
                if name.endswith((".so", ".pyc")) or "__pycache__" in name
                or name.split("/")[0] in ("tests", ".nox", "build", "bench", "docs")]
    assert not unwanted, unwanted
    allowed_top = {"PKG-INFO", "LICENSE", "README.md", "pyproject.toml", "setup.py",
                   "setup.cfg", "MANIFEST.in", "_ext", "subsandbox", "subsandbox.egg-info"}
    assert {name.split("/")[0] for name in names} <= allowed_top, names


def test_the_sdist_builds_a_working_package(sdist: Path, tmp_path: Path) -> None:
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (tree,) = tmp_path.iterdir()
    _build_in_place(tree)
    result = _run_from(tree, """if 1:
        import subsandbox
        table = subsandbox.share({"a": (1, 2.5)})
        with subsandbox.Sandbox() as sb:
            assert sb.call(lambda t: t["a"][1] * 2, table) == 5.0
        print(subsandbox.__file__)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()).parent == tree / "subsandbox"


def _older_cpython() -> str | None:
    """A CPython older than 3.12 on this machine (python3 is 3.11 on the CI machine)."""
    for name in ("python3.11", "python3.10", "python3.9", "python3"):
        exe = shutil.which(name)
        if exe is None:
            continue
        probe = subprocess.run([exe, "-c", "import sys; print(sys.version_info < (3, 12))"],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return exe
    return None


def test_setup_py_on_an_older_python_says_which_python_it_needs() -> None:
    old = _older_cpython()
    if old is None:
        pytest.skip("no CPython older than 3.12 on this machine")
    result = subprocess.run([old, "setup.py", "--version"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "subsandbox needs CPython 3.12 or newer" in result.stderr, result.stderr[-3000:]
    assert len(result.stderr.splitlines()) == 1, result.stderr[-3000:]
