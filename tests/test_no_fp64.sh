#!/bin/sh
# The op suites with the OpenCL kernels built as for a device without double
# precision: their sums then run in compensated float. Every device POCL
# offers has fp64, so without this that path would go untested.
# Only the OpenCL devices: the cpu backend does not read KILN_OPENCL_FP64, and
# the plain run of the same suites covers it.
KILN_OPENCL_FP64=off
KILN_TEST_BACKENDS=opencl
export KILN_OPENCL_FP64 KILN_TEST_BACKENDS
if ! KILN_BACKEND=opencl "$KILN_TEST_BUILDDIR/../tools/kiln-info" >/dev/null 2>&1; then
    echo "no usable OpenCL device: nothing to run without fp64"
    exit 77
fi
"$KILN_TEST_BUILDDIR/test_ops" "$@" && exec "$KILN_TEST_BUILDDIR/test_grad_ops" "$@"
