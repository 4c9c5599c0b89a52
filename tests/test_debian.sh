#!/bin/sh
# debian/ against the rest of the tree: the license text in debian/copyright
# is LICENSE's, its copyright line is LICENSE's, the newest version in
# debian/changelog is the one kiln reports (configure.ac's), and the symbols
# file lists what libkiln exports.
set -u
src="$KILN_TEST_SRCDIR/.."
status=0
fail() {
    echo "FAIL: $*" >&2
    status=1
}

# LICENSE's text after its title and copyright line, as DEP-5 folds it.
want=$(sed -n '5,$p' "$src/LICENSE" | sed 's/^$/./; s/^/ /')
have=$(awk '/^License: Expat$/ { n = NR } n && NR > n && /^ / { print; next }
    n && NR > n { n = 0 }' "$src/debian/copyright")
[ -n "$have" ] || fail "debian/copyright has no stand-alone License: Expat paragraph"
[ "$want" = "$have" ] || fail "debian/copyright's Expat text differs from LICENSE"

holder=$(sed -n 's/^Copyright (c) //p' "$src/LICENSE")
grep -qx "Copyright: $holder" "$src/debian/copyright" ||
    fail "debian/copyright does not say \"Copyright: $holder\" as LICENSE does"

version=$(./tools/kiln-info --version | sed 's/^kiln-info //')
changelog=$(sed -n '1s/^kiln (\([^)]*\)).*/\1/p' "$src/debian/changelog")
[ "$changelog" = "$version" ] ||
    fail "debian/changelog's newest version is \"$changelog\", kiln is $version"
# every symbol libkiln exports is in debian/libkiln0.symbols and the other
# way round (the package build fails on a difference; this says so sooner)
if [ -f .libs/libkiln.so ] && command -v nm >/dev/null; then
    have=$(nm -D --defined-only .libs/libkiln.so | awk '$2 ~ /^[TDBRV]$/ { print $3 }' |
        sort)
    listed=$(sed -n 's/^ \([A-Za-z_0-9]*\)@Base .*/\1/p' "$src/debian/libkiln0.symbols" |
        sort)
    [ "$have" = "$listed" ] || fail "debian/libkiln0.symbols and libkiln's exports differ:
$(printf '%s\n' "$have" >"${TMPDIR:-/tmp}/kiln-have.$$"
        printf '%s\n' "$listed" | diff "${TMPDIR:-/tmp}/kiln-have.$$" - | grep '^[<>]'
        rm -f "${TMPDIR:-/tmp}/kiln-have.$$")
(< exported but not listed, > listed but not exported)"
fi
exit $status
