# Shared by tools/regen-nova-series and tools/check-nova-series (sourced,
# not run).  One place says how the series is laid out and formatted, so
# that "regenerate" and "is patches/ stale?" cannot disagree.

NOVA_VERSION=34.0.0
SERIES_DIR="$ROOT/patches/nova-$NOVA_VERSION"
CHECK_DIR="${NOVA_CHECK_DIR:-$ROOT/.nova-check}"
# Commit identity of the pristine sdist commit every work tree starts from.
BASE_IDENT=(-c user.name=nova-sdist -c user.email=nova-sdist@example.org
            -c commit.gpgsign=false)

die() { echo "check-nova-series: $*" >&2; exit 1; }

# fetch_sdist: print the path of the cached nova sdist, downloading it once.
fetch_sdist() {
    local cache="$CHECK_DIR/cache"
    local tarball="$cache/nova-$NOVA_VERSION.tar.gz"
    if [ ! -s "$tarball" ]; then
        mkdir -p "$cache"
        python3 -m pip download --quiet --no-deps --no-binary :all: \
            "nova==$NOVA_VERSION" -d "$cache" >&2 || die "cannot download nova $NOVA_VERSION"
    fi
    echo "$tarball"
}

# unpack_pristine DEST: DEST becomes a git repo holding the unpacked sdist,
# committed once and tagged "base".
unpack_pristine() {
    local dest=$1 tarball
    tarball=$(fetch_sdist)
    rm -rf "$dest"
    mkdir -p "$dest"
    tar -xzf "$tarball" -C "$dest" --strip-components=1 --no-same-owner
    git -C "$dest" init -q
    git -C "$dest" "${BASE_IDENT[@]}" add -A
    git -C "$dest" "${BASE_IDENT[@]}" commit -q -m "nova $NOVA_VERSION sdist"
    git -C "$dest" tag base
}

# format_series REPO OUT: write the commits REPO has on top of "base" to OUT
# as git format-patch files plus a "series" file listing them in order.
# --zero-commit and --no-signature make the output a function of the
# commits' content, author and message only.
format_series() {
    local repo=$1 out=$2
    mkdir -p "$out"
    rm -f "$out"/*.patch "$out/series"
    git -C "$repo" format-patch --quiet --zero-commit --no-signature \
        --no-stat -o "$out" base..HEAD >/dev/null
    (cd "$out" && ls -1 -- *.patch) > "$out/series"
}

# series_patches: the patch files named by the series file, in order.
series_patches() {
    grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$SERIES_DIR/series"
}
