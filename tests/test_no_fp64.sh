#!/bin/sh
# The op suites with the OpenCL kernels built as for a device without double
# precision: their sums then run in compensated float. Every device POCL
# offers has fp64, so without this that path would go untested.
KILN_OPENCL_FP64=off
export KILN_OPENCL_FP64
"$KILN_TEST_BUILDDIR/test_ops" "$@" && exec "$KILN_TEST_BUILDDIR/test_grad_ops" "$@"
