#!/usr/bin/env bash
# Build a CPython that neither python3 nor pyenv provides here, from Debian's source package,
# into .pythons/<minor>/ (git-ignored), so that the test matrix (noxfile.py) covers it.
#
#   tools/build-cpython.sh 3.14      # prints the interpreter's path when done
#
# Today that is 3.14, the first version with concurrent.interpreters in the standard
# library. The upstream tarball of Debian's python3.14 package is taken from this machine's
# Debian archive: first one of the versions pinned below, checked against its sha256 (from
# its .dsc), then, if the archive's pool has none of them, `apt-get source` from forky and
# sid (signed indexes). Built as upstream ships it, without Debian's patches or PGO (a few
# minutes on 2 cores). A second run finds the interpreter and does nothing.
#
# Exit status: 0 built (or already there), 1 the source could not be fetched, 2 the build
# failed (its logs are in .pythons/build-<minor>/), 3 bad usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MINOR=${1:-3.14}
PYTHONS=$ROOT/.pythons
DEST=$PYTHONS/$MINOR
JOBS=${JOBS:-$(( $(nproc) + 1 ))}

log() { printf '[build-cpython] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case $MINOR in
    3.14)
        SRCPKG=python3.14
        SUITES=(forky sid)
        # VERSION SHA256 of python3.14_VERSION.orig.tar.xz, newest first.
        PINS=("3.14.7 3b48dac8fb59f62eaa67ac83c1eb12bda1b7a08406dd286e252c11a66be27f81"
              "3.14.6 143b1dddefaec3bd2e21e3b839b34a2b7fb9842272883c576420d605e9f30c63"
              "3.14.5 7e32597b99e5d9a39abed35de4693fa169df3e5850d4c334337ffd6a19a36db6")
        ;;
    *) log "usage: $0 3.14 (no other version is built here)"; exit 3 ;;
esac

EXE=$DEST/bin/python$MINOR
if [[ -x $EXE ]] && "$EXE" -c 'import ssl, zlib, ctypes, _testcapi' 2>/dev/null; then
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

BUILD=$PYTHONS/build-$MINOR
rm -rf "$BUILD" "$DEST"
mkdir -p "$BUILD"
log "building $top into $DEST (make -j$JOBS; logs in $BUILD)"
t0=$(date +%s)
if ! (cd "$BUILD" \
        && "$SRC/$top/configure" --prefix="$DEST" --with-ensurepip=install \
               > configure.log 2>&1 \
        && make -j"$JOBS" > make.log 2>&1 \
        && make install > install.log 2>&1); then
    log "the build failed: see the logs in $BUILD"
    exit 2
fi
# _testcapi: a test of ours uses it (the test modules are built, as in pyenv's CPythons).
"$EXE" -c 'import ssl, zlib, ctypes, _testcapi' \
    || { log "$EXE lacks ssl, zlib, ctypes or _testcapi: see $BUILD/make.log"; exit 2; }
log "built $("$EXE" -VV | head -n1) in $(( $(date +%s) - t0 )) s"
rm -rf "$BUILD" "${SRC:?}/$top"
echo "$EXE"
