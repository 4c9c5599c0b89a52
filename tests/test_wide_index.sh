#!/bin/sh
# Kernels that divide element indices (broadcast.cl, conv.cl) are built with
# 32-bit and with 64-bit indices, and the host takes the 64-bit ones only for
# tensors past 2^31 elements, which no test machine holds.
# KILN_OPENCL_WIDE_ABOVE=0 sends every launch to them, and the ops they serve
# must still match their references: binary ops, EXPAND (the gradient of a
# sum), CONV2D and MAX_POOL2D with their gradients. Only the OpenCL devices:
# the cpu backend has no such kernels.
# Sanitizer builds skip it (CI's time): its host code is test_ops', and the
# kernels it adds are the device's, which the sanitizers do not see.
if [ "${KILN_TEST_SANITIZED:-}" = yes ]; then
    echo "sanitizer build: the 64-bit kernels run in the plain build's suite"
    exit 77
fi
KILN_OPENCL_WIDE_ABOVE=0
KILN_TEST_BACKENDS=opencl
export KILN_OPENCL_WIDE_ABOVE KILN_TEST_BACKENDS
if ! KILN_BACKEND=opencl "$KILN_TEST_BUILDDIR/../tools/kiln-info" >/dev/null 2>&1; then
    echo "no usable OpenCL device: no kernels to run"
    exit 77
fi
CRITERION_TEST_PATTERN='@(binary|conv2d|max_pool2d)/*' "$KILN_TEST_BUILDDIR/test_ops" "$@" &&
    CRITERION_TEST_PATTERN='grad_ops/@(expand|conv2d|max_pool2d|sum_to)*' \
        exec "$KILN_TEST_BUILDDIR/test_grad_ops" "$@"
