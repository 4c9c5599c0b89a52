#!/bin/sh
# Data-parallel training on Open MPI, as users run it: mpirun -np N.
#  1. comm_runner on 2 and 3 processes: the collectives, and three Adam
#     steps of data-parallel training against one process that trains on
#     the whole batch (to float rounding).
#     Once more over TCP alone, as between machines.
#  2. kiln-train --model linear on 1, 2 and 4 processes, on the cpu backend
#     and on OpenCL (POCL): the same test accuracy, to float rounding; and
#     --model gpt on 1 and 2: the same validation loss.
#  3. A rank killed mid-run: the job ends within seconds with a non-zero
#     status, the checkpoint is whole, and resuming from it reaches the
#     weights of a run never interrupted, bit for bit (and, on another number
#     of processes, the same accuracy).
#  4. A rank that stops answering (SIGSTOP): the others give up after
#     KILN_COMM_TIMEOUT with a message, and the job ends.
#  5. Federated averaging (--local-steps, --shard by-label) runs and sends
#     a fraction of the gradient averaging's bytes.
#  6. Each process of a machine takes its own device of the backend
#     KILN_BACKEND names (a test plugin with two), unless one is named.
# Skipped (77) without mpirun or without Fashion-MNIST (dataset-fashion-mnist).
set -eu
B=$KILN_TEST_BUILDDIR
train=$B/../tools/kiln-train
data=/usr/share/datasets/fashion-mnist
command -v mpirun >/dev/null || { echo "no mpirun (openmpi-bin): skipped"; exit 77; }
[ -f "$data/train-images-idx3-ubyte.gz" ] || { echo "no $data: skipped"; exit 77; }
# As root, Open MPI refuses to start without these; more ranks than cores
# need oversubscription. One compute thread a rank: the ranks share 2 cores.
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 KILN_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM KILN_NUM_THREADS
mpirun() { command mpirun --oversubscribe --mca btl self,vader,tcp "$@"; }
# Under ASan, Open MPI's components (dlopen'd, unloaded at MPI_Finalize, so
# their frames have no module name to suppress) leave allocations at exit:
# leaks are checked where no MPI is loaded (test_comm on the loopback).
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export ASAN_OPTIONS
tmp=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
now() { date +%s; }

echo "== 1. collectives and data-parallel steps"
for n in 2 3; do
    mpirun -np $n "$B/comm_runner" >"$tmp/runner" 2>&1 || { cat "$tmp/runner"; fail "comm_runner -np $n"; }
    [ "$(grep -c 'ok: max |data-parallel' "$tmp/runner")" -eq $((2 * n)) ] || { cat "$tmp/runner"; fail "comm_runner -np $n"; }
done
grep 'ok: max' "$tmp/runner" | head -n 2
# over TCP alone, as between machines (on the loopback interface, which
# Open MPI leaves out unless told)
command mpirun --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo -np 2 "$B/comm_runner" >"$tmp/runner" 2>&1 ||
    { cat "$tmp/runner"; fail "comm_runner over TCP"; }
echo "over TCP: $(grep -c 'ok: max' "$tmp/runner") data-parallel checks passed"

echo "== 2. kiln-train on 1, 2 and 4 processes"
acc() { sed -n 's/^final test accuracy: \([0-9.]*\)%.*/\1/p' "$1"; }
near() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; exit !(d < 0.3 && d > -0.3) }'; }
args="--model linear --epochs 1 --batch 64"
"$train" $args >"$tmp/one" || fail "one process"
one=$(acc "$tmp/one")
# under the sanitizers (make distcheck in CI), 2 processes on the cpu only
backends="cpu opencl" counts="2 4"
[ -z "${KILN_TEST_SANITIZED:-}" ] || { backends=cpu counts=2; echo "(sanitizers: cpu, 2 processes)"; }
for backend in $backends; do
    if [ $backend = opencl ] && ! KILN_BACKEND=opencl "$B/../tools/kiln-info" >/dev/null 2>&1; then
        echo "(no OpenCL device)"; continue
    fi
    for n in $counts; do
        KILN_BACKEND=$backend mpirun -np $n "$train" $args >"$tmp/many" 2>&1 ||
            { cat "$tmp/many"; fail "$n processes on $backend"; }
        grep -q "^data-parallel: $n processes (mpi), $((64 / n)) samples each" "$tmp/many" ||
            { cat "$tmp/many"; fail "the data-parallel line"; }
        many=$(acc "$tmp/many")
        echo "$backend: 1 process $one%, $n processes $many%"
        near "$one" "$many" || fail "accuracy $many% on $n processes, $one% on one"
    done
done
# the GPT: the same validation loss on 1 and 2 processes
gpt="--model gpt --data $KILN_TEST_SRCDIR/../README.md --layers 1 --heads 2 --embd 32 --ctx 32 --batch 8 --steps 30 --eval-every 30"
val() { sed -n 's/^final val \([0-9.]*\) .*/\1/p' "$1"; }
"$train" $gpt >"$tmp/gpt1" 2>&1 || { cat "$tmp/gpt1"; fail "gpt on one process"; }
mpirun -np 2 "$train" $gpt >"$tmp/gpt2" 2>&1 || { cat "$tmp/gpt2"; fail "gpt on 2 processes"; }
echo "gpt: 1 process val $(val "$tmp/gpt1"), 2 processes val $(val "$tmp/gpt2")"
awk -v a="$(val "$tmp/gpt1")" -v b="$(val "$tmp/gpt2")" 'BEGIN { d = a - b; exit !(a > 0 && d < 2e-3 && d > -2e-3) }' ||
    fail "the GPT's validation loss differs"
mpirun -np 3 "$train" $args >"$tmp/three" 2>&1 && fail "--batch 64 on 3 processes ran"
grep -q -- "--batch 64 does not split evenly over 3 processes" "$tmp/three" || { cat "$tmp/three"; fail "message"; }

echo "== 3. a rank killed, a checkpoint, a resumed run"
args="--model mlp --epochs 1 --batch 128 --seed 3"
mpirun -np 2 "$train" $args --save "$tmp/whole.st" >"$tmp/whole" 2>&1 || { cat "$tmp/whole"; fail "the uninterrupted run"; }
ck=$tmp/ck.st
mpirun -np 2 "$train" $args --checkpoint "$ck" --checkpoint-every 100 >"$tmp/killed" 2>&1 &
job=$!
i=0
while [ ! -f "$ck" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
[ -f "$ck" ] || fail "no checkpoint after 60 s"
# a rank, not mpirun: the processes whose command line ends with ours
rank=$(pgrep -f -- "--checkpoint $ck --checkpoint-every 100" | while read -r p; do
    [ "$(cat /proc/$p/comm)" != mpirun ] && echo "$p"; done | tail -n 1)
[ -n "$rank" ] || fail "no rank to kill"
t0=$(now)
kill -9 "$rank"
if wait $job; then fail "the job went on after a rank was killed"; fi
took=$(($(now) - t0))
echo "the job ended $took s after a rank was killed"
[ $took -le 10 ] || fail "the job took $took s to end"
"$train" --model mlp --eval "$ck" >"$tmp/eval" || fail "the checkpoint does not load"
grep test "$tmp/eval"
mpirun -np 2 "$train" $args --resume "$ck" --save "$tmp/resumed.st" >"$tmp/resumed" 2>&1 || { cat "$tmp/resumed"; fail "resuming"; }
grep '^resumed from' "$tmp/resumed"
cmp "$tmp/whole.st" "$tmp/resumed.st" || fail "resumed weights differ from the uninterrupted run's"
echo "resumed on 2 processes: the same weights, bit for bit"
"$train" $args --resume "$ck" >"$tmp/resumed1" 2>&1 || { cat "$tmp/resumed1"; fail "resuming on one process"; }
echo "resumed on 1 process: $(acc "$tmp/resumed1")%, uninterrupted $(acc "$tmp/whole")%"
near "$(acc "$tmp/resumed1")" "$(acc "$tmp/whole")" || fail "accuracy after resuming on one process"
"$train" $args --batch 32 --resume "$ck" >"$tmp/other" 2>&1 && fail "resumed with another --batch"
grep -q "was written by a run with --batch 128, and this one has --batch 32" "$tmp/other" || { cat "$tmp/other"; fail "message"; }

echo "== 4. a rank that stops answering"
rm -f "$ck"
KILN_COMM_TIMEOUT=3 mpirun -np 2 "$train" $args --checkpoint "$ck" --checkpoint-every 50 >"$tmp/hung" 2>&1 &
job=$!
i=0
while [ ! -f "$ck" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
rank=$(pgrep -f -- "--checkpoint $ck --checkpoint-every 50" | while read -r p; do
    [ "$(cat /proc/$p/comm)" != mpirun ] && echo "$p"; done | tail -n 1)
[ -n "$rank" ] || fail "no rank to stop"
t0=$(now)
kill -STOP "$rank"
if wait $job; then fail "the job went on without a rank"; fi
took=$(($(now) - t0))
kill -9 "$rank" 2>/dev/null || true
echo "the job ended $took s after a rank stopped"
grep -m1 "still unfinished after" "$tmp/hung" || { cat "$tmp/hung"; fail "no timeout message"; }
[ $took -le 20 ] || fail "the job took $took s to end"

echo "== 5. federated averaging"
args="--model linear --epochs 1 --batch 64"
mpirun -np 2 "$train" $args >"$tmp/ddp" 2>&1 || fail "gradient averaging"
mpirun -np 2 "$train" $args --local-steps 8 --shard by-label >"$tmp/fed" 2>&1 || { cat "$tmp/fed"; fail "federated averaging"; }
grep '^federated averaging: 2 processes' "$tmp/fed"
mb() { sed -n 's/.*comm \([0-9.]*\) MB$/\1/p' "$1" | tail -n 1; }
echo "bytes per epoch: every step $(mb "$tmp/ddp") MB, every 8 steps $(mb "$tmp/fed") MB; accuracy $(acc "$tmp/fed")%"
awk -v a="$(mb "$tmp/fed")" -v b="$(mb "$tmp/ddp")" 'BEGIN { exit !(a > 0 && a * 6 < b) }' || fail "bytes"
echo "== 6. a device per process"
devices() { KILN_PLUGIN_PATH=$KILN_TEST_PLUGINS/good/.libs KILN_BACKEND=$1 mpirun -np 2 "$B/comm_runner" device >"$tmp/dev" 2>&1 ||
    { cat "$tmp/dev"; fail "comm_runner device"; }; }
devices good
grep -q "^rank 0 of 2, local 0: good:0 " "$tmp/dev" && grep -q "^rank 1 of 2, local 1: good:1 " "$tmp/dev" ||
    { cat "$tmp/dev"; fail "KILN_BACKEND=good: not a device per local rank"; }
sort "$tmp/dev"
devices good:1
[ "$(grep -c ': good:1 ' "$tmp/dev")" -eq 2 ] || { cat "$tmp/dev"; fail "KILN_BACKEND=good:1 named one device for both"; }
echo "all passed"
