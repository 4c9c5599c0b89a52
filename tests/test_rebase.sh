#!/bin/sh
# CLBlast indexes with int: a matrix product's operand that starts past
# INT_MAX elements into its buffer (a graph of more than 8 GiB) goes to it as
# a sub-buffer that starts near it (backends/opencl/gemm.c). No test machine
# has such a graph, so KILN_OPENCL_REBASE_ABOVE=0 sends every operand that
# way, and the products and convolutions of the op suite must still match
# their references. Only the OpenCL devices: the cpu backend has no CLBlast.
KILN_OPENCL_REBASE_ABOVE=0
KILN_TEST_BACKENDS=opencl
export KILN_OPENCL_REBASE_ABOVE KILN_TEST_BACKENDS
if ! KILN_BACKEND=opencl "$KILN_TEST_BUILDDIR/../tools/kiln-info" >/dev/null 2>&1; then
    echo "no usable OpenCL device: no CLBlast to give sub-buffers"
    exit 77
fi
CRITERION_TEST_PATTERN='*matmul*' "$KILN_TEST_BUILDDIR/test_ops" "$@" &&
    CRITERION_TEST_PATTERN='conv2d*' exec "$KILN_TEST_BUILDDIR/test_ops" "$@"
