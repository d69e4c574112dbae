#!/usr/bin/env bash
# Build CPython 3.13 under AddressSanitizer and ThreadSanitizer (pydebug) and run the C core's
# tests under them. See docs/sanitizers.md.
#
#   tools/sanitizers.sh [asan|tsan|all] [TEST_FILE...] [-- PYTEST_ARGS...]
#
# Everything it builds lives in .sanitizers/ at the repository root (git-ignored), so a second
# run only reinstalls the project and reruns the tests. Nothing outside .sanitizers/ is
# changed, except that missing build packages of this machine's own Debian are installed with
# apt-get. The Debian *trixie* python3.13 source package is fetched with a private apt
# configuration (its own sources list, lists and cache under .sanitizers/apt/); the machine's
# apt sources are read, never written.
#
# Exit status: 0 when the tests passed and no sanitizer report touches our code (a frame of
# the _core .so or of _ext/*.c in any stack of the report, including the stack that allocated
# or freed the memory involved, or our global as the raced-on location), 1 when a report
# touches our code, 2 when pytest failed (or crashed) without such a report, 3 on a setup
# error.
#
# Environment knobs: JOBS (make -j, default 2), SAN_FORCE_REBUILD=1 (rebuild the Pythons),
# SUBSANDBOX_STRESS_RECORDS / SUBSANDBOX_MEMORY_MB / SUBSANDBOX_MEMORY_CYCLES (test sizes),
# SAN_NO_TESTS=1 (only build the Pythons and install the project), SAN_PROJECT=DIR (build and
# install the project from DIR instead of this checkout; the tests still come from here).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SAN=$ROOT/.sanitizers
JOBS=${JOBS:-2}
SUITE=trixie          # the Debian release whose python3.13 source package we build
SRCPKG=python3.13
SUPPRESSIONS=$ROOT/tools/tsan-suppressions.txt
PROJECT=${SAN_PROJECT:-$ROOT}   # the tree whose extension is built and installed
# The default set: the C core's own tests, a few minutes under TSan. Everything:
# `tools/sanitizers.sh asan tests/test_*.py` (docs/sanitizers.md: about 20 min under ASan,
# 35 under TSan on 2 cores).
DEFAULT_TESTS=(tests/test_ext_loads.py tests/test_share.py tests/test_share_props.py
               tests/test_frozen.py tests/test_type_guard.py tests/test_stress.py
               tests/test_memory.py tests/test_share_memo.py tests/test_keyword_tuples.py
               tests/test_executor_primitives.py)
# Sizes of the stress and memory tests under the sanitizers (everything runs ~10x slower
# under pydebug + TSan); the environment may override them.
export SUBSANDBOX_STRESS_RECORDS=${SUBSANDBOX_STRESS_RECORDS:-2000}
export SUBSANDBOX_MEMORY_MB=${SUBSANDBOX_MEMORY_MB:-8}
export SUBSANDBOX_MEMORY_CYCLES=${SUBSANDBOX_MEMORY_CYCLES:-10}
# Our code, as it appears in a sanitizer report: a frame in the extension's shared object
# "(_core.cpython-313d-x86_64-linux-gnu.so+0x...)" (TSan always prints it; ASan when it has no
# line info) or in one of our C sources: ASan prints "in ss_exec _ext/module.c:46" (the path
# as given to the compiler), TSan ".../_ext/module.c:46 (_core...so+0x...)".
# A report is "ours" when any of its lines matches: an access stack, the allocation or free
# stack of the memory involved (that is how a race or use-after-free on one of our shared
# objects shows up even when only CPython frames touch it), a mutex or thread creation stack.
# (Not just "subsandbox": the checkout's own path may contain that word.)
OURS_RE='_core\.cpython-[^ )]*\.so|(^|[ /(])_ext/[^ /:]+\.[ch]:'

log() { printf '[sanitizers] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 3; }

# ---- arguments -------------------------------------------------------------------------
WHICH=all
if [[ $# -gt 0 && $1 =~ ^(asan|tsan|all)$ ]]; then WHICH=$1; shift; fi
TESTS=()
PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
    if [[ $1 == -- ]]; then shift; PYTEST_ARGS=("$@"); break; fi
    TESTS+=("$1"); shift
done
if [[ ${#TESTS[@]} -eq 0 ]]; then
    for t in "${DEFAULT_TESTS[@]}"; do [[ -e $ROOT/$t ]] && TESTS+=("$t"); done
    if [[ ${#TESTS[@]} -eq 0 ]]; then
        while IFS= read -r t; do TESTS+=("${t#"$ROOT"/}"); done \
            < <(find "$ROOT/tests" -maxdepth 1 -name 'test_*.py' 2>/dev/null | sort)
    fi
fi
[[ ${#TESTS[@]} -gt 0 || ${SAN_NO_TESTS:-0} == 1 ]] || die "no test files found"
[[ -r $SUPPRESSIONS ]] || die "missing $SUPPRESSIONS"
for t in "${TESTS[@]}"; do
    [[ -e $ROOT/${t%%::*} ]] || die "no such test file: $t (usage: $0 [asan|tsan|all] [TEST_FILE...] [-- PYTEST_ARGS...])"
done
case $WHICH in all) KINDS=(asan tsan) ;; *) KINDS=("$WHICH") ;; esac

# ---- 1. host build packages, 2. trixie's python3.13 source package ----------------------
# (tools/debian-source.sh: through a private apt configuration under .sanitizers/apt/)
# shellcheck source=tools/debian-source.sh
. "$ROOT/tools/debian-source.sh"
APT_DIR=$SAN/apt

fetch_source() {
    local tarball
    local found=("$SAN"/src/"${SRCPKG}"_*.orig.tar.xz)
    tarball=${found[0]}
    [[ -f $tarball ]] || tarball=
    if [[ -z $tarball ]]; then
        debian_source_download "$SRCPKG" "$SAN/src" "$APT_DIR" "$SUITE" \
            || die "apt-get source of the $SUITE $SRCPKG package failed"
        found=("$SAN"/src/"${SRCPKG}"_*.orig.tar.xz)
        tarball=${found[0]}
        [[ -f $tarball ]] || die "apt-get source did not leave a ${SRCPKG}_*.orig.tar.xz"
    fi
    # The upstream tarball, without Debian's patches: we want CPython as upstream ships it.
    SRC_TOP=$(tar -tJf "$tarball" | awk -F/ 'NR == 1 { print $1 }')
    SRC_DIR=$SAN/src/$SRC_TOP
    if [[ ! -x $SRC_DIR/configure ]]; then
        log "unpacking $(basename "$tarball")"
        tar -C "$SAN/src" -xJf "$tarball"
    fi
}

# ---- sanitizer runtime options -----------------------------------------------------------
# detect_leaks=0: CPython does not free everything at exit, and isolated interpreters leak by
#   design (gh-110411, gh-113055); LeakSanitizer would report those at every exit.
# abort_on_error=1: die by SIGABRT, so pytest's faulthandler prints the Python stacks too.
# allocator_may_return_null=1: a huge allocation gives MemoryError, as in a normal build.
# handle_segv=0 (TSan): CPython's faulthandler owns SIGSEGV, as in CPython's own TSan CI.
# die_after_fork=0 (TSan): the tests fork while sandbox threads run (test_fork.py, the fork
#   pools of test_bench.py, test_keyword_tuples.py), and the child then starts sandboxes of
#   its own; by default TSan kills such a child at its first new thread ("starting new
#   threads after multi-threaded fork is not supported"). TSan only warns then.
# TSan: halt_on_error=0 so one run collects every race; exitcode=0 so the verdict is ours
#   (a report that touches our code), not "some race anywhere"; print_suppressions=1 so the
#   log says how many CPython races the suppressions hid.
asan_env() { # $1: log path prefix
    echo "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:log_path=$1"
}
tsan_env() { # $1: log path prefix
    echo "TSAN_OPTIONS=suppressions=$SUPPRESSIONS:print_suppressions=1:halt_on_error=0:exitcode=0:handle_segv=0:die_after_fork=0:second_deadlock_stack=1:log_path=$1"
}
san_env() { "$1_env" "$2"; }   # $1: asan|tsan

# ---- 3. the two Pythons -----------------------------------------------------------------
# ASan: --without-pymalloc (configure forces it anyway): ASan must see every malloc and free.
# TSan: pymalloc stays on, as in CPython's own TSan CI. It keeps each isolated interpreter's
#   own obmalloc, which is exactly what our code must respect: a block of interpreter A freed
#   or written from B's thread shows up as a race on A's pool. Block reuse inside one
#   interpreter is ordered by that interpreter's GIL, which TSan sees, so no false reports.
configure_flags() {
    case $1 in
        asan) echo --with-address-sanitizer --without-pymalloc ;;
        tsan) echo --with-thread-sanitizer ;;
    esac
}

build_python() { # $1: asan|tsan
    local kind=$1 prefix=$SAN/$1 bdir=$SAN/build-$1 stamp t0 t1
    stamp=$prefix/.built-from-$SRC_TOP
    if [[ -f $stamp && -x $prefix/bin/python3 && ${SAN_FORCE_REBUILD:-0} != 1 ]]; then
        log "$kind: reusing $prefix ($(cat "$stamp"))"
        return
    fi
    rm -rf "$bdir" "$prefix"
    mkdir -p "$bdir" "$SAN/logs"
    log "$kind: building $SRC_TOP into $prefix (make -j$JOBS; logs in $bdir)"
    t0=$(date +%s)
    (
        cd "$bdir"
        # Neutral sanitizer options while building: configure runs instrumented test
        # programs and reads their output, so nothing may change their exit status or
        # output (a TSAN_OPTIONS exitcode=0 plus an unreadable suppressions file made
        # configure read every size as empty). Only LeakSanitizer is turned off: the freshly
        # built python runs during the build and CPython does not free all at exit.
        unset TSAN_OPTIONS
        export ASAN_OPTIONS=detect_leaks=0
        # shellcheck disable=SC2046
        "$SRC_DIR/configure" --prefix="$prefix" --with-pydebug --without-ensurepip \
            $(configure_flags "$kind") >configure.log 2>&1
        make -j"$JOBS" >make.log 2>&1
        # make install byte-compiles the whole library, test suite included, 3 times
        # (-o 0 -o 1 -o 2) with the instrumented python: the slowest step under TSan. It
        # cannot be narrowed from outside (the Makefile's own -x comes last and wins).
        make install >install.log 2>&1
    ) || die "$kind: build failed, see $bdir/{configure,make,install}.log"
    t1=$(date +%s)
    printf '%s seconds for configure+make -j%s+install on %s\n' \
        $((t1 - t0)) "$JOBS" "$(date -u +%FT%TZ)" > "$stamp"
    log "$kind: built in $((t1 - t0)) s"
}

# ---- 4. pip, test tools and the project --------------------------------------------------
install_project() { # $1: asan|tsan
    local kind=$1 prefix=$SAN/$1 py=$SAN/$1/bin/python3 stage=$SAN/pkg-$1 ilog
    ilog=$SAN/logs/$kind-install.log
    mkdir -p "$SAN/logs"
    : > "$ilog"
    (
        export "$(san_env "$kind" "$SAN/logs/$kind-install-san")"
        if ! "$py" -m pip --version >/dev/null 2>&1; then
            log "$kind: bootstrapping pip (ensurepip)"
            "$py" -m ensurepip --default-pip >>"$ilog" 2>&1
        fi
        # pyperf for tests/test_bench.py (it builds psutil from source here). Not matplotlib
        # nor mypy: PyPI has no wheels of numpy for a pydebug ABI (cpython-313d), building
        # them under a sanitizer takes long, and the tests check the reports without plots
        # (test_bench.py) or skip (test_typing.py: mypy checks the sources, no C runs).
        if ! "$py" -c 'import setuptools, pytest, hypothesis, wheel, pyperf' >/dev/null 2>&1; then
            log "$kind: installing setuptools, wheel, pytest, hypothesis, pyperf from PyPI"
            "$py" -m pip install -q --disable-pip-version-check \
                'setuptools>=77' wheel 'pytest>=8' 'hypothesis>=6.100' 'pyperf>=2.6' >>"$ilog" 2>&1
        fi
        # Build from a fresh copy of the working tree: the ASan and TSan Pythons have the same
        # ABI tag (cpython-313d), so a shared ./build would let one reuse the other's objects.
        rm -rf "$stage"; mkdir -p "$stage"
        tar -C "$PROJECT" --exclude=./.sanitizers --exclude=./.git --exclude=./build \
            --exclude=./dist --exclude='./.venv*' --exclude=./.nox -cf - . | tar -C "$stage" -xf -
        # The Python's own CFLAGS already carry -fsanitize=...; say it again explicitly (and
        # keep frame pointers and debug info) so the extension is instrumented whatever
        # sysconfig says.
        local fl="-fsanitize=${kind/asan/address}"; fl=${fl/tsan/thread}
        log "$kind: installing the project ($fl)"
        CFLAGS="$fl -fno-omit-frame-pointer -g -O1" LDFLAGS="$fl" \
            "$py" -m pip install --disable-pip-version-check --no-build-isolation \
            --no-cache-dir --force-reinstall "$stage" >>"$ilog" 2>&1
    ) || die "$kind: installing failed, see $ilog"
    # Check the extension really is instrumented.
    local so sym
    # -P: the checkout (the current directory) may hold an in-place build of its own.
    so=$("$py" -P -c 'import importlib.util as u; print(u.find_spec("subsandbox._core").origin)' 2>/dev/null) \
        || die "$kind: subsandbox._core is not importable after install"
    case $kind in asan) sym=__asan_ ;; tsan) sym=__tsan_ ;; esac
    # (grep without -q reads all of nm's output: with pipefail, grep -q exiting at the first
    # match could kill nm with SIGPIPE and fail the check on an instrumented .so.)
    nm -D --undefined-only "$so" | grep "$sym" >/dev/null \
        || die "$kind: $so has no $sym symbols: not instrumented"
    log "$kind: $so is instrumented ($sym*)"
}

# ---- 5. run the tests and judge the reports ---------------------------------------------
# Splits sanitizer logs into reports (from the ERROR/WARNING line to its SUMMARY line) and
# prints "total ours" counts; the reports that touch our code are written to $2.
judge_reports() { # $1: log file glob prefix, $2: output file for our reports
    local prefix=$1 out=$2 logs
    shopt -s nullglob; logs=("$prefix".*); shopt -u nullglob
    # (The pattern goes through ENVIRON: awk -v would eat its backslashes.)
    cat /dev/null "${logs[@]}" | OURS_RE=$OURS_RE awk -v out="$out" '
        BEGIN { re = ENVIRON["OURS_RE"] }
        /(ERROR: AddressSanitizer|WARNING: ThreadSanitizer|ERROR: ThreadSanitizer)/ {
            inrep = 1; buf = ""; ours = 0; total++
        }
        inrep { buf = buf $0 "\n"; if ($0 ~ re) ours = 1 }
        inrep && /^SUMMARY: / {
            inrep = 0
            if (ours) { nours++; printf "%s\n", buf >> out }
        }
        END {
            if (inrep && ours) { nours++; printf "%s\n", buf >> out }
            printf "%d %d\n", total + 0, nours + 0
        }'
}

run_tests() { # $1: asan|tsan ; sets RESULT_<kind>
    local kind=$1 py=$SAN/$1/bin/python3 ldir stamp rc counts total ours ts
    ts=$(date +%Y%m%d-%H%M%S)
    ldir=$SAN/logs/$kind-$ts
    mkdir -p "$ldir"
    log "$kind: pytest ${TESTS[*]} ${PYTEST_ARGS[*]:-} (logs in $ldir)"
    set +e
    (
        export "$(san_env "$kind" "$ldir/san")"
        # The *installed*, instrumented subsandbox must be the one tested, here and in every
        # Python the tests start, never the checkout's subsandbox/ (it has no _core built for
        # this Python). -P keeps the current folder off pytest's own sys.path, but a child
        # started with `python -c ...` or `python -m ...` puts its current folder first on
        # its sys.path, and children inherit ours: so pytest runs from the log folder, outside
        # the checkout, with the test files given by absolute path (pytest still finds the
        # checkout's pyproject.toml, its rootdir, from them). PYTHONPATH is dropped for the
        # same reason. (PYTHONSAFEPATH=1 for all would also do, but would take a script's own
        # folder off its sys.path too: bench/ scripts import each other flat.)
        unset PYTHONPATH
        cd "$ldir"
        local abs=() t
        for t in "${TESTS[@]}"; do abs+=("$ROOT/$t"); done
        "$py" -P -m pytest -p no:cacheprovider --rootdir="$ROOT" "${abs[@]}" "${PYTEST_ARGS[@]}"
    ) 2>&1 | tee "$ldir/pytest.log"
    rc=${PIPESTATUS[0]}
    set -e
    : > "$ldir/ours.txt"
    counts=$(judge_reports "$ldir/san" "$ldir/ours.txt")
    read -r total ours <<<"$counts"
    local suppressed logs
    shopt -s nullglob; logs=("$ldir"/san.*); shopt -u nullglob
    suppressed=$(cat /dev/null "${logs[@]}" \
        | awk '/ThreadSanitizer: Matched [0-9]+ suppressions/ { n += $3 } END { print n + 0 }')
    local verdict=ok
    if [[ $ours -gt 0 ]]; then verdict="FAIL (reports touch our code: $ldir/ours.txt)"; STATUS=1
    elif [[ $rc -ne 0 ]]; then verdict="FAIL (pytest exit $rc)"; [[ $STATUS -eq 1 ]] || STATUS=2
    else rm -f "$ldir/ours.txt"; fi
    if [[ $total -gt $ours ]]; then
        log "$kind: $((total - ours)) report(s) only in CPython's own code, not judged" \
            "(TSan: candidates for tools/tsan-suppressions.txt): $ldir/san.*"
    fi
    local supp_txt=""
    [[ $kind != tsan ]] || supp_txt=" (+$suppressed suppressed, CPython's own)"
    SUMMARY+=("$kind: $total sanitizer report(s)$supp_txt, $ours touching subsandbox; pytest exit $rc; $verdict; logs $ldir")
}

# ---- main ----------------------------------------------------------------------------------
# In a function, so bash has parsed the whole file before running anything: editing the
# script while a long build runs cannot derail it.
main() {
    mkdir -p "$SAN"
    ensure_host_packages
    fetch_source
    STATUS=0
    SUMMARY=()
    local kind line
    for kind in "${KINDS[@]}"; do
        build_python "$kind"
        install_project "$kind"
        [[ ${SAN_NO_TESTS:-0} == 1 ]] || run_tests "$kind"
    done
    for line in "${SUMMARY[@]}"; do echo "SUMMARY $line"; done
    exit "$STATUS"
}
main
