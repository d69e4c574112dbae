"""Build the C core of subsandbox: every ``_ext/*.c`` file becomes one extension module.

The metadata lives in pyproject.toml; this file only describes the extension, which
setuptools cannot yet take from pyproject.toml.
"""

from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
SOURCES = sorted(str(p.relative_to(HERE)) for p in (HERE / "_ext").glob("*.c"))

setup(
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
