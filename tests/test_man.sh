#!/bin/sh
# The manual pages against what they document:
#  - every long option in a tool's getopt table is in its --help, and every
#    option --help names is in its man page (as \-\-name);
#  - every KILN_ variable the sources read with getenv is in kiln(7);
#  - every page renders with groff's warnings on and says nothing
#    (man -l as well, where man-db is installed).
# Run by make check from the build tree; KILN_TEST_SRCDIR is the source's
# tests/ folder.
set -u
src="$KILN_TEST_SRCDIR/.."
man=man
status=0
fail() {
    echo "FAIL: $*" >&2
    status=1
}

check_tool() { # TOOL SOURCE
    tool=$1
    help=$("./tools/$tool" --help) || fail "$tool --help exited $?"
    table=$(sed -n 's/^ *{"\([a-z][a-z0-9-]*\)", *\(no\|required\|optional\)_argument.*/\1/p' \
        "$src/$2")
    [ -n "$table" ] || fail "$2: no getopt table found"
    for opt in $table; do
        printf '%s\n' "$help" | grep -q -- "--$opt\b" ||
            fail "$tool: --$opt is in its getopt table but not in --help"
    done
    opts=$(printf '%s\n' "$help" | grep -o -- '--[a-z][a-z0-9-]*' | sort -u)
    [ -n "$opts" ] || fail "$tool --help names no option"
    for opt in $opts; do
        # roff writes each hyphen of an option as \-
        name=$(printf '%s' "${opt#--}" | sed 's/-/\\\\-/g')
        grep -q -- "\\\\-\\\\-$name\\b" "$man/$tool.1" ||
            fail "$man/$tool.1 lacks $opt, which $tool --help names"
    done
}

check_tool kiln-info tools/info/main.c
check_tool kiln-bench tools/bench/main.c
check_tool kiln-train tools/train/main.c
check_tool kiln-generate tools/generate/main.c

vars=$(cd "$src" && grep -rhoE 'getenv\("KILN_[A-Z0-9_]+"\)' core backends tools |
    sed 's/getenv("\(.*\)")/\1/' | sort -u)
[ -n "$vars" ] || fail "no getenv(\"KILN_...\") found under $src"
for v in $vars; do
    grep -q "^\.B $v\$" "$man/kiln.7" || fail "kiln(7) does not describe $v, which kiln reads"
done

for page in "$man"/kiln-info.1 "$man"/kiln-bench.1 "$man"/kiln-train.1 \
    "$man"/kiln-generate.1 "$man"/kiln.7; do
    out=$(groff -ww -z -t -man -Tutf8 "$page" 2>&1) || fail "groff failed on $page"
    [ -z "$out" ] || fail "groff warns on $page: $out"
    if command -v man >/dev/null; then
        out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
        [ -z "$out" ] || fail "man -l warns on $page: $out"
    fi
done
exit $status
