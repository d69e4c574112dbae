"""Build the C core of subsandbox: every ``_ext/*.c`` file becomes one extension module.

The metadata lives in pyproject.toml; this file only describes the extension, which
setuptools cannot yet take from pyproject.toml.
"""

import os
import platform
import sys
import sysconfig
import tempfile
from pathlib import Path

# Before anything else (setuptools included): on another Python the build would fail later
# with a page of compiler errors about CPython internals, and an older pip (23.2, as 3.11
# bundles) reports an unsatisfiable dependency instead of the Python it needs. This is
# what pip shows when it gets to build.
if (sys.implementation.name != "cpython" or sys.version_info < (3, 12)
        or sysconfig.get_config_var("Py_GIL_DISABLED")):
    build = " free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    sys.exit(f"subsandbox needs CPython 3.12 or newer with the GIL (3.12, 3.13 and 3.14 are "
             f"supported); this is {platform.python_implementation()} "
             f"{platform.python_version()}{build} ({sys.executable}): install it with one of "
             f"those, e.g. python3.13 -m pip install subsandbox")

from setuptools import Extension, setup  # noqa: E402 - after the version check
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, LinkError

HERE = Path(__file__).parent
SOURCES = sorted(str(p.relative_to(HERE)) for p in (HERE / "_ext").glob("*.c"))


class BuildExtWithLTO(build_ext):
    """Link-time optimisation where the compiler has it. share() (share.c) calls the
    arena's allocator and string memo (arena.c) for every object it copies, and only LTO
    inlines across the two files: share() of 1 KB values took 6-12 % less time with it
    (docs/benchmarks.md, round 7). A compiler without it builds the same code without
    it; SUBSANDBOX_NO_LTO=1 turns it off."""

    # Which CPython built what lies in the build folder. _core must be built by the very
    # CPython that imports it (major.minor.micro: docs/guide.md, "Install"), but the build
    # folder is named by major.minor only (build/lib.*-cpython-313), and build_ext skips
    # an extension whose sources are older than its .so: after an upgrade from 3.13.0 to
    # 3.13.5, `pip install .` in a checkout built before would install the old .so again,
    # which refuses to import. The stamp makes a build by another CPython start afresh.
    STAMP = "subsandbox-built-by"

    def run(self) -> None:
        stamp = Path(self.build_temp, self.STAMP)
        built_by = sys.version    # version, build date and compiler of this CPython
        try:
            previous = stamp.read_text()
        except OSError:
            previous = None
        if previous != built_by:
            self.force = True
        super().run()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(built_by)

    def build_extensions(self) -> None:
        flag = self._lto_flag()
        if flag is not None:
            for ext in self.extensions:
                ext.extra_compile_args = [*ext.extra_compile_args, flag]
                ext.extra_link_args = [*ext.extra_link_args, flag]
        super().build_extensions()

    def _lto_flag(self) -> str | None:
        if os.environ.get("SUBSANDBOX_NO_LTO") or self.compiler.compiler_type != "unix":
            return None
        # -flto=auto (GCC) runs the link-time jobs in parallel, and without the warning
        # plain -flto prints about serial jobs; Clang knows only plain -flto.
        for flag in ("-flto=auto", "-flto"):
            if self._builds_with(flag):
                return flag
        return None

    def _builds_with(self, flag: str) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp, "probe.c")
            source.write_text("int subsandbox_probe(int x) { return x + 1; }\n")
            try:
                objects = self.compiler.compile([str(source)], output_dir=tmp,
                                                extra_postargs=[flag])
                self.compiler.link_shared_object(objects, str(Path(tmp, "probe.so")),
                                                 extra_postargs=[flag])
            except (CCompilerError, CompileError, LinkError):
                return False
        return True


setup(
    cmdclass={"build_ext": BuildExtWithLTO},
    ext_modules=[
        Extension(
            "subsandbox._core",
            sources=SOURCES,
            include_dirs=["_ext"],
            depends=[str(p.relative_to(HERE)) for p in (HERE / "_ext").glob("*.h")],
            extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-fvisibility=hidden"],
        )
    ]
)
