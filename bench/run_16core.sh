#!/usr/bin/env bash
# The 16-core benchmark run, in one shot, on a machine without network.
#
#   here, once:        bench/run_16core.sh --prepare     # fills .whl/ (needs network)
#   on the machine:    bench/run_16core.sh               # from the repository root
#
# The device tool copies the working tree; carry ".whl" with it (git ignores it). The
# script makes a venv on the machine's CPython 3.12 (3.12.3 there; PYTHON=... to choose),
# installs pyperf, matplotlib and interpreters-pep-734 from .whl/ and subsandbox from the
# source tree (the C extension is compiled there, against that exact 3.12 release: the
# core reads a few CPython internals, whose layout may differ between 3.12 patch
# releases; a wheel built here is the fallback if there is no compiler). Then it runs
# each suite on its own, so that a suite cut short by the time limit loses only itself.
#
# Results: $OUT/bench-16core/<suite>/ (results.md, results.pyperf.json, plots) and
# $OUT/bench-16core/all.log. $OUT is the device tool's output folder (default: bench/).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="$PWD/.whl"
DEPS=(setuptools pyperf psutil matplotlib interpreters-pep-734)

if [ "${1:-}" = "--prepare" ]; then
    py="${PYTHON:-python3.12}"
    command -v "$py" >/dev/null || py=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python3 | tail -1)
    mkdir -p "$WHEELS"
    # Binary wheels for any CPython 3.12 on x86-64 Linux, with their dependencies.
    "$py" -m pip download --quiet --dest "$WHEELS" --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "${DEPS[@]}"
    # Fallback: subsandbox built here (3.12 ABI; see above for why it is only a fallback).
    "$py" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" .
    du -sh "$WHEELS"
    exit 0
fi

OUT_DIR="${OUT:-$PWD/bench}/bench-16core"
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/all.log") 2>&1

py="${PYTHON:-}"
if [ -z "$py" ]; then
    for candidate in python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12 python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c \
            'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
            py=$(command -v "$candidate"); break
        fi
    done
fi
[ -n "$py" ] || { echo "no CPython 3.12 found; set PYTHON=/path/to/python3.12" >&2; exit 1; }
[ -d "$WHEELS" ] || { echo "no .whl/ here: run bench/run_16core.sh --prepare first and carry .whl" >&2; exit 1; }
echo "== $("$py" -VV); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

venv=/tmp/subsandbox-16core-venv
"$py" -m venv --clear "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$WHEELS")
"${pip[@]}" "${DEPS[@]}"
if ! "${pip[@]}" --no-build-isolation --no-deps . ; then
    echo "== building the extension failed (no compiler?): installing the prepared wheel"
    "${pip[@]}" --no-deps subsandbox
fi
(cd /tmp && "$venv/bin/python" -m subsandbox info)

# Parallel efficiency at N = cores from paired rounds first (short; issue #5's figure),
# then startup, scaling, and every other suite there is.
echo "== efficiency ($(date -u +%H:%M:%S))"
"$venv/bin/python" bench/efficiency.py --rounds 5 --json "$OUT_DIR/efficiency.json" \
    > "$OUT_DIR/efficiency.md" || echo "== efficiency failed: $?"
cat "$OUT_DIR/efficiency.md"

suites=(startup scaling)
for f in bench/bench_*.py; do
    name=$(basename "$f" .py); name=${name#bench_}
    [[ " ${suites[*]} " == *" $name "* ]] || suites+=("$name")
done
for suite in "${suites[@]}"; do
    echo "== $suite ($(date -u +%H:%M:%S))"
    "$venv/bin/python" -m subsandbox bench --bench-dir bench --suite "$suite" \
        --out "$OUT_DIR/$suite" ${BENCH_ARGS:-} || echo "== $suite failed: $?"
done
echo "== done ($(date -u +%H:%M:%S)); results in $OUT_DIR"
