#!/bin/sh
# fuzz/run.sh SECONDS TARGET... — runs each libFuzzer target over its seed
# corpus (fuzz/corpus/<name>) for SECONDS, one after the other, and fails on
# the first crash, leak, timeout or out-of-memory. New inputs go to a
# temporary folder, never into the seeds; a finding is kept as
# fuzz-findings/<name>/crash-... (or leak-, timeout-, oom-) in the current
# folder and its path printed. Run from the build tree, as `make fuzz-smoke`
# does.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 SECONDS TARGET..." >&2; exit 2; }
seconds=$1
shift
src=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
status=0
for target in "$@"; do
    name=$(basename "$target")
    dict=
    [ -f "$src/$name.dict" ] && dict="-dict=$src/$name.dict"
    mkdir -p "$work/$name" "fuzz-findings/$name"
    echo "fuzz: $name for ${seconds}s over $src/corpus/$name"
    # shellcheck disable=SC2086 # $dict is one word or none
    if ! "$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=2048 -print_final_stats=1 $dict \
        -artifact_prefix="fuzz-findings/$name/" "$work/$name" "$src/corpus/$name" \
        >"$work/$name.log" 2>&1; then
        tail -n 60 "$work/$name.log" >&2
        for f in "fuzz-findings/$name"/*; do
            [ -f "$f" ] || continue
            echo "fuzz: $f, $(wc -c <"$f") bytes:" >&2
            od -An -tx1 "$f" | head -n 32 >&2
        done
        echo "fuzz: $name FAILED; the input is in fuzz-findings/$name/" >&2
        status=1
        continue
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$name.log")
    echo "fuzz: $name: ${execs:-?} executions, no finding"
    rmdir "fuzz-findings/$name" 2>/dev/null || true
done
rmdir fuzz-findings 2>/dev/null || true
exit $status
