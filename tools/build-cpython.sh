#!/usr/bin/env bash
# Build a CPython that neither python3 nor pyenv provides here, from Debian's source package,
# into .pythons/<minor>/ (git-ignored), so that the test matrix (noxfile.py) covers it.
#
#   tools/build-cpython.sh 3.14        # prints the interpreter's path when done
#   tools/build-cpython.sh 3.14 --jit  # the same with the experimental JIT, into .pythons/3.14-jit/
#
# Today that is 3.14, the first version with concurrent.interpreters in the standard
# library. The upstream tarball of Debian's python3.14 package is taken from this machine's
# Debian archive: first one of the versions pinned below, checked against its sha256 (from
# its .dsc), then, if the archive's pool has none of them, `apt-get source` from forky and
# sid (signed indexes). Built as upstream ships it, without Debian's patches or PGO (a few
# minutes on 2 cores). A second run finds the interpreter and does nothing.
#
# --jit adds --enable-experimental-jit=yes (JIT compiled in and on; PYTHON_JIT=0 turns it off).
# Its build needs LLVM 19 (clang-19, llvm-readobj-19: installed from this machine's Debian when
# run as root) and a Python >= 3.11 to run Tools/jit/build.py. .pythons/3.14-jit is not in the
# nox matrix (noxfile.py takes .pythons/3.N only): docs/architecture.md says how its run went.
#
# Exit status: 0 built (or already there), 1 the source could not be fetched, 2 the build
# failed (its logs are in .pythons/build-<minor>/; with --jit also: no LLVM 19 or no Python
# >= 3.11 to build with), 3 bad usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MINOR=${1:-3.14}
PYTHONS=$ROOT/.pythons
JOBS=${JOBS:-$(( $(nproc) + 1 ))}

log() { printf '[build-cpython] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

JIT=
case ${2:-} in
    '') ;;
    --jit) JIT=-jit ;;
    *) log "usage: $0 3.14 [--jit]"; exit 3 ;;
esac
[[ $# -le 2 ]] || { log "usage: $0 3.14 [--jit]"; exit 3; }
DEST=$PYTHONS/$MINOR$JIT

case $MINOR in
    3.14)
        SRCPKG=python3.14
        SUITES=(forky sid)
        # VERSION SHA256 of python3.14_VERSION.orig.tar.xz, newest first.
        PINS=("3.14.7 3b48dac8fb59f62eaa67ac83c1eb12bda1b7a08406dd286e252c11a66be27f81"
              "3.14.6 143b1dddefaec3bd2e21e3b839b34a2b7fb9842272883c576420d605e9f30c63"
              "3.14.5 7e32597b99e5d9a39abed35de4693fa169df3e5850d4c334337ffd6a19a36db6")
        ;;
    *) log "usage: $0 3.14 [--jit] (no other version is built here)"; exit 3 ;;
esac

# What the built interpreter must import; a JIT build must also have its JIT on by default.
CHECK='import ssl, zlib, ctypes, _testcapi'
[[ -z $JIT ]] || CHECK="$CHECK; import sys; assert sys._jit.is_enabled(), 'JIT off'"
EXE=$DEST/bin/python$MINOR
if [[ -x $EXE ]] && env -u PYTHON_JIT "$EXE" -c "$CHECK" 2>/dev/null; then
    echo "$EXE"
    exit 0
fi

# shellcheck source=tools/debian-source.sh
. "$ROOT/tools/debian-source.sh"
if [[ $(id -u) == 0 ]]; then
    ensure_host_packages
else
    log "not root: build packages are not installed; configure will say what is missing"
fi

CONFIGURE_JIT=()
if [[ -n $JIT ]]; then
    if ! command -v clang-19 >/dev/null || ! command -v llvm-readobj-19 >/dev/null; then
        [[ $(id -u) == 0 ]] \
            || { log "error: --jit needs clang-19 and llvm-readobj-19 (LLVM 19) on PATH"; exit 2; }
        log "installing LLVM 19 from this machine's Debian: clang-19 llvm-19"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            clang-19 llvm-19 >/dev/null
    fi
    # Tools/jit/build.py runs under PYTHON_FOR_REGEN, which configure would take as the first
    # python3.N on PATH: a pyenv shim of a version not selected there is found but cannot run.
    regen=
    for cand in python3 python3.14 python3.13 python3.12 python3.11 \
            "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[1-9]*/bin/python3; do
        if "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            # The interpreter itself, not a pyenv shim that could resolve otherwise under make.
            regen=$("$cand" -c 'import sys; print(sys.executable)')
            break
        fi
    done
    [[ -n $regen ]] \
        || { log "error: --jit needs a Python >= 3.11 to run Tools/jit/build.py"; exit 2; }
    CONFIGURE_JIT=(--enable-experimental-jit=yes "PYTHON_FOR_REGEN=$regen")
fi

SRC=$PYTHONS/src
tarball=$(debian_pool_download "$SRCPKG" "$SRC" "${PINS[@]}") || tarball=
if [[ -z $tarball ]]; then
    debian_source_download "$SRCPKG" "$SRC" "$PYTHONS/apt" "${SUITES[@]}" \
        || die "no $SRCPKG source: the archive's pool has none of the pinned versions, and apt-get source failed"
    found=("$SRC"/"${SRCPKG}"_*.orig.tar.xz)
    tarball=${found[-1]}
fi
top=$(tar -tJf "$tarball" | awk -F/ 'NR == 1 { print $1 }')
rm -rf "${SRC:?}/$top"
tar -C "$SRC" -xJf "$tarball"

BUILD=$PYTHONS/build-$MINOR$JIT
rm -rf "$BUILD" "$DEST"
mkdir -p "$BUILD"
log "building $top into $DEST (make -j$JOBS; logs in $BUILD)"
t0=$(date +%s)
if ! (cd "$BUILD" \
        && "$SRC/$top/configure" --prefix="$DEST" --with-ensurepip=install \
               ${CONFIGURE_JIT[@]+"${CONFIGURE_JIT[@]}"} > configure.log 2>&1 \
        && make -j"$JOBS" > make.log 2>&1 \
        && make install > install.log 2>&1); then
    log "the build failed: see the logs in $BUILD"
    exit 2
fi
# _testcapi: a test of ours uses it (the test modules are built, as in pyenv's CPythons).
"$EXE" -c 'import ssl, zlib, ctypes, _testcapi' \
    || { log "$EXE lacks ssl, zlib, ctypes or _testcapi: see $BUILD/make.log"; exit 2; }
if [[ -n $JIT ]] && ! env -u PYTHON_JIT "$EXE" -c "$CHECK"; then
    log "$EXE has no JIT on by default: see $BUILD/configure.log and make.log"
    exit 2
fi
log "built $("$EXE" -VV | head -n1) in $(( $(date +%s) - t0 )) s"
rm -rf "$BUILD" "${SRC:?}/$top"
echo "$EXE"
