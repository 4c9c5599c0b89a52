#!/bin/sh
# Times one training epoch of kiln-train and of PyTorch (tools/bench/torch_epoch.py)
# with the same settings, and prints both times and their ratio.
#
#   tools/bench/compare-epoch.sh [--model mlp|cnn|linear] [--optimizer adam|sgd]
#                          [--schedule cosine|constant] [--lr X] [--seed N]
#                          [--data DIR]
#
# Both run batch 64 and one epoch over the same IDX files; PyTorch uses two
# threads. Run it after `make` from the source tree. PYTHON names the Python
# that has torch (default: the first of python3 and /usr/bin/python3 that
# imports it; Debian's package is python3-torch). Exit status 1 when either
# side fails, 2 on a bad argument.
set -u
cd "$(dirname "$0")/../.."

for arg in "$@"; do
    case $arg in
    --epochs* | --batch* | --save* | --eval*)
        echo "compare-epoch.sh: $arg: the comparison fixes one epoch of batch 64" >&2
        exit 2 ;;
    esac
done

if [ -z "${PYTHON:-}" ]; then
    for p in python3 /usr/bin/python3; do
        if "$p" -c 'import torch' 2>/dev/null; then PYTHON=$p; break; fi
    done
fi
if [ -z "${PYTHON:-}" ]; then
    echo "compare-epoch.sh: no Python with torch: apt-get install python3-torch, or set PYTHON" >&2
    exit 1
fi
if [ ! -x tools/kiln-train ]; then
    echo "compare-epoch.sh: tools/kiln-train is not built: run make first" >&2
    exit 1
fi

# From the source tree, kiln finds the plugins it just built.
if [ -z "${KILN_PLUGIN_PATH:-}" ]; then
    KILN_PLUGIN_PATH=$PWD/backends/cpu/.libs
    export KILN_PLUGIN_PATH
fi

# The figure both print: "epoch 1/1 ... time 12.34 s ...".
epoch_time() {
    sed -n 's/^epoch 1\/1 .* time \([0-9.]*\) s .*/\1/p'
}

echo "== kiln"
kiln_out=$(./tools/kiln-train --epochs 1 --batch 64 "$@") || {
    printf '%s\n' "$kiln_out"; echo "compare-epoch.sh: kiln-train failed" >&2; exit 1; }
printf '%s\n' "$kiln_out"
echo "== PyTorch ($PYTHON)"
torch_out=$("$PYTHON" tools/bench/torch_epoch.py --epochs 1 --batch 64 "$@") || {
    printf '%s\n' "$torch_out"; echo "compare-epoch.sh: torch_epoch.py failed" >&2; exit 1; }
printf '%s\n' "$torch_out"

kiln_s=$(printf '%s\n' "$kiln_out" | epoch_time)
torch_s=$(printf '%s\n' "$torch_out" | epoch_time)
if [ -z "$kiln_s" ] || [ -z "$torch_s" ]; then
    echo "compare-epoch.sh: could not find an epoch time in the output above" >&2
    exit 1
fi
echo
awk -v k="$kiln_s" -v t="$torch_s" 'BEGIN {
    printf "epoch time: kiln %.2f s, PyTorch %.2f s; kiln / PyTorch = %.2f " \
           "(kiln %.2fx as fast)\n", k, t, k / t, t / k }'
