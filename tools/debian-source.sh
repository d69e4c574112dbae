# Sourced, not run: fetching a CPython source package from this machine's Debian archive, and
# the Debian packages a CPython build needs. Used by tools/sanitizers.sh (trixie's python3.13)
# and tools/build-cpython.sh (python3.14 from forky/sid).
#
# The caller defines log MESSAGE and die MESSAGE (die exits) before sourcing this file.
# The machine's apt configuration is read, never written: downloads go through a private
# configuration (its own sources list, lists and cache) in a directory the caller names.

# What configure needs for the modules our tests and pip use (ssl for PyPI, zlib for wheels,
# ctypes, sqlite3, bz2/lzma, readline), from the machine's own Debian; and curl, which
# debian_pool_download uses (a minimal Debian has none).
HOST_PACKAGES=(build-essential pkg-config xz-utils curl libffi-dev libssl-dev zlib1g-dev
               libbz2-dev libreadline-dev libsqlite3-dev liblzma-dev libncurses-dev uuid-dev)

ensure_host_packages() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "installing build packages from this machine's Debian: ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

# Prints "URI KEYRING" of this machine's main Debian archive (not -security / -updates),
# read from deb822 .sources files or one-line .list files.
debian_archive() {
    local codename f
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "no VERSION_CODENAME in /etc/os-release"
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk -v cn="$codename" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; key = ""
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    if (line ~ /^Types:/)     { sub(/^Types:[ \t]*/, "", line); types = line }
                    if (line ~ /^URIs:/)      { sub(/^URIs:[ \t]*/, "", line); uris = line }
                    if (line ~ /^Suites:/)    { sub(/^Suites:[ \t]*/, "", line); suites = line }
                    if (line ~ /^Signed-By:/) { sub(/^Signed-By:[ \t]*/, "", line); key = line }
                }
                if ((" " types " ") !~ / deb /) next
                n = split(suites, s, /[ \t]+/)
                for (j = 1; j <= n; j++) if (s[j] == cn) {
                    split(uris, u, /[ \t]+/); print u[1], key; exit
                }
            }' "$f" | head -n1 | grep . && return 0
    done
    # One-line format: deb [options] URI suite components...
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        sed -E 's/\[[^]]*\]//' "$f" \
            | awk -v cn="$codename" '$1 == "deb" && $3 == cn { print $2, ""; exit }' \
            | grep . && return 0
    done
    die "no Debian archive for '$codename' found in /etc/apt/sources.list{,.d}"
}

# debian_source_download SRCPKG DEST_DIR APT_DIR SUITE...
# `apt-get source --download-only SRCPKG` from the given suites of this machine's archive,
# through a private apt configuration in APT_DIR (signed indexes: apt checks what it
# downloads). Leaves SRCPKG_*.orig.tar.xz in DEST_DIR; returns non-zero when it could not.
debian_source_download() {
    local srcpkg=$1 dest=$2 apt_dir=$3 uri key suite
    shift 3
    read -r uri key < <(debian_archive || true)
    [[ -n ${uri:-} ]] || die "no Debian archive URI found in /etc/apt/sources.list{,.d}"
    [[ -n $key ]] || key=/usr/share/keyrings/debian-archive-keyring.gpg
    mkdir -p "$apt_dir"/{sources.list.d,lists/partial,cache/archives/partial} "$dest"
    : > "$apt_dir/sources.list"
    for suite in "$@"; do
        echo "deb-src [signed-by=$key] $uri $suite main" >> "$apt_dir/sources.list"
    done
    local opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
                -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
                -o "Dir::State::Lists=$apt_dir/lists"
                -o "Dir::Cache=$apt_dir/cache"
                -o "APT::Sandbox::User=root")  # private dirs are root's: no _apt sandbox
    log "fetching the $* $srcpkg source package (download only)"
    apt-get -q "${opts[@]}" update >/dev/null || return 1
    (cd "$dest" && apt-get -q "${opts[@]}" source --download-only "$srcpkg" >/dev/null 2>&1) \
        || return 1
    compgen -G "$dest/${srcpkg}_*.orig.tar.xz" >/dev/null
}

# debian_pool_download SRCPKG DEST_DIR "VERSION SHA256"...
# For when the archive's index names versions its pool no longer (or not yet) serves: the
# upstream tarball of the first VERSION the pool has, checked against its pinned SHA256
# (taken from that version's .dsc). Prints the tarball's path; non-zero when none came.
debian_pool_download() {
    local srcpkg=$1 dest=$2 uri key pin version sum file
    shift 2
    read -r uri key < <(debian_archive || true)
    [[ -n ${uri:-} ]] || die "no Debian archive URI found in /etc/apt/sources.list{,.d}"
    mkdir -p "$dest"
    for pin in "$@"; do
        read -r version sum <<< "$pin"
        file=${srcpkg}_${version}.orig.tar.xz
        log "trying $file from the archive's pool"
        if curl -fsL -o "$dest/$file.part" "$uri/pool/main/${srcpkg:0:1}/$srcpkg/$file"; then
            if echo "$sum  $dest/$file.part" | sha256sum -c --status; then
                mv "$dest/$file.part" "$dest/$file"
                echo "$dest/$file"
                return 0
            fi
            log "$file does not have the pinned sha256: not used"
        fi
        rm -f "$dest/$file.part"
    done
    return 1
}
