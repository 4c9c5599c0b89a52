#!/bin/sh
# opencl-startup.sh — how long a process takes from start to its first result
# on kiln's OpenCL backend, with kiln's program cache cold (an empty
# KILN_CACHE_DIR) and warm (filled by an earlier process).
#
#   tools/bench/opencl-startup.sh [RUNS]        run from the build folder
#
# The program is examples/hello (a context, a small graph, one run, one
# read). POCL keeps a kernel cache of its own (POCL_CACHE_DIR); each case is
# measured with that cache warm and cold too, so the line with both cold is
# a first run on a fresh machine and the line with both warm is every run
# after. Wall time of the whole process, median of RUNS (default 5).
set -eu
runs=${1:-5}
hello=./examples/hello
[ -x "$hello" ] || { echo "run from the build folder after make" >&2; exit 2; }
: "${KILN_PLUGIN_PATH:=$(pwd)/backends/cpu/.libs:$(pwd)/backends/opencl/.libs}"
: "${OCL_ICD_VENDORS:=/etc/OpenCL/vendors/pocl.icd}"
KILN_BACKEND=${KILN_BACKEND:-opencl}
export KILN_PLUGIN_PATH OCL_ICD_VENDORS KILN_BACKEND

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Runs hello once with the given caches; prints its wall time in ms.
once() {
    start=$(date +%s%N)
    KILN_CACHE_DIR=$1 POCL_CACHE_DIR=$2 "$hello" >/dev/null
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# case KILN POCL: each "cold" gets a fresh empty folder every run; each
# "warm" one folder, filled by one run before timing.
measure() {
    kw=$tmp/kiln-warm pw=$tmp/pocl-warm
    once "$kw" "$pw" >/dev/null
    i=0
    while [ $i -lt "$runs" ]; do
        i=$((i + 1))
        k=$kw; p=$pw
        [ "$1" = cold ] && k=$tmp/kiln-cold-$2-$i
        [ "$2" = cold ] && p=$tmp/pocl-cold-$1-$i
        once "$k" "$p"
    done | median
}

echo "start to first result on $KILN_BACKEND, median of $runs runs (ms):"
for pocl in warm cold; do
    for kiln in warm cold; do
        printf '  kiln cache %-4s  POCL cache %-4s  %6s\n' "$kiln" "$pocl" \
            "$(measure "$kiln" "$pocl")"
    done
done
