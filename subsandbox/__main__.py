"""The command line: ``python -m subsandbox info | demo | bench``."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import sysconfig
from pathlib import Path


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
    print(f"CPython bugs    {_cpython_bugs(_core._raw_allocator_hooked())}")
    return 0 if own else 1


def _cpython_bugs(raw_allocator_hooked: bool) -> str:
    """What subsandbox does here about the CPython bugs of docs/cpython-3.12.md."""
    if sys.version_info >= (3, 13):
        return "none known that subsandbox must work around on this version"
    done = ["gh-117953: single-phase stdlib modules refused in sandboxes"]
    if sys.version_info < (3, 12, 4):
        done.append("gh-119213: keyword tuples made by sandboxes left to their arenas")
    if raw_allocator_hooked:
        done.append("gh-111924: raw allocator hooked here, sandboxes warn "
                    "(AllocatorRaceWarning)")
    return "; ".join(done) + " (docs/cpython-3.12.md)"


def _version() -> str:
    from . import __version__

    return __version__


def _find_bench_dir(given: Path | None) -> Path | None:
    """bench/ lives in the source checkout, not in the installed package."""
    if given is not None:
        return given if (given / "harness.py").is_file() else None
    here = Path.cwd().resolve()
    candidates = [here, *here.parents, Path(__file__).resolve().parent.parent]
    for folder in candidates:
        bench_dir = folder if folder.name == "bench" else folder / "bench"
        if (bench_dir / "harness.py").is_file():
            return bench_dir
    return None


def _bench(bench_dir: Path | None, argv: list[str]) -> int:
    found = _find_bench_dir(bench_dir)
    if found is None:
        where = f"{bench_dir} has no harness.py" if bench_dir else (
            "no bench/harness.py in this folder, its parents, or next to the package")
        print(f"python -m subsandbox bench: {where}; run it from a checkout of subsandbox "
              "or pass --bench-dir PATH/TO/bench", file=sys.stderr)
        return 2
    sys.path.insert(0, str(found))
    import harness  # type: ignore[import-not-found]  # bench/harness.py, found above

    return int(harness.main(argv))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m subsandbox",
                                     description="Sandboxed threads on own-GIL subinterpreters.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, backend, GIL layout, cores, the extension")
    demo = commands.add_parser("demo", help="a CPU-bound job with threads, then sandboxes")
    demo.add_argument("--workers", type=int, default=None, help="default: usable cores")
    demo.add_argument("--size", type=float, default=1.0, help="scale the job (default 1.0)")
    bench = commands.add_parser("bench", add_help=False,
                                help="run the benchmark suites of a checkout's bench/ "
                                     "(options: bench --help)")
    bench.add_argument("--bench-dir", type=Path, default=None,
                       help="the bench/ folder (default: ./bench, a parent's bench/, or "
                            "the checkout this package was imported from)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        return _bench(args.bench_dir, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "info":
        return info()
    from .demo import run_demo

    return run_demo(workers=args.workers, size=args.size)


if __name__ == "__main__":
    sys.exit(main())
