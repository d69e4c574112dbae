"""The command line: ``python -m subsandbox info | demo``."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import sysconfig


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def info() -> int:
    """Print what a bug report needs: versions, backend, GIL layout, cores, the extension."""
    print(f"subsandbox      {_version()}")
    print(f"python          {platform.python_implementation()} {platform.python_version()} "
          f"({sys.executable})")
    build = sysconfig.get_config_var("CONFIG_ARGS") or ""
    flags = [f for f in ("--with-pydebug", "--with-address-sanitizer",
                         "--with-thread-sanitizer", "--disable-gil") if f in build]
    print(f"build           {platform.python_compiler()}; {' '.join(flags) or 'release'}")
    try:
        from . import _core
    except ImportError as exc:
        print(f"extension       NOT LOADED: {exc}")
        return 1
    print(f"extension       loaded ({_core.__file__})")
    from ._backend import backend

    print(f"backend         {backend.name}")
    print(f"usable cores    {_usable_cpus()} (of {os.cpu_count()})")
    from .sandbox import Sandbox

    with Sandbox() as sandbox:
        config = sandbox.config
        inside = sandbox.call(_core.interpreter_config)
    own = config["gil"] == "own" and not config["use_main_obmalloc"]
    print(f"own GIL         {'yes' if own else 'NO'} (sandbox {config['gil']} GIL, "
          f"{'main' if config['use_main_obmalloc'] else 'own'} object allocator)")
    print(f"sandbox config  {inside}")
    return 0 if own else 1


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m subsandbox",
                                     description="Sandboxed threads on own-GIL subinterpreters.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, backend, GIL layout, cores, the extension")
    demo = commands.add_parser("demo", help="a CPU-bound job with threads, then sandboxes")
    demo.add_argument("--workers", type=int, default=None, help="default: usable cores")
    demo.add_argument("--size", type=float, default=1.0, help="scale the job (default 1.0)")
    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    from .demo import run_demo

    return run_demo(workers=args.workers, size=args.size)


if __name__ == "__main__":
    sys.exit(main())
