/* errors.c — OpenCL and CLBlast statuses as names, and the messages that
 * carry them. Every failing cl* or CLBlast call becomes
 *   "opencl: clEnqueueNDRangeKernel failed: CL_OUT_OF_RESOURCES (-5): ..."
 * so a user can search for the name, and the call says where it happened. */
#include <stdio.h>

#include "ocl-impl.h"

#include <clblast_c.h>

const char *ocl_cl_name(cl_int err)
{
    switch (err) {
#define OCL_NAME(code) \
    case code: return #code;
        OCL_NAME(CL_SUCCESS)
        OCL_NAME(CL_DEVICE_NOT_FOUND)
        OCL_NAME(CL_DEVICE_NOT_AVAILABLE)
        OCL_NAME(CL_COMPILER_NOT_AVAILABLE)
        OCL_NAME(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        OCL_NAME(CL_OUT_OF_RESOURCES)
        OCL_NAME(CL_OUT_OF_HOST_MEMORY)
        OCL_NAME(CL_PROFILING_INFO_NOT_AVAILABLE)
        OCL_NAME(CL_MEM_COPY_OVERLAP)
        OCL_NAME(CL_IMAGE_FORMAT_MISMATCH)
        OCL_NAME(CL_IMAGE_FORMAT_NOT_SUPPORTED)
        OCL_NAME(CL_BUILD_PROGRAM_FAILURE)
        OCL_NAME(CL_MAP_FAILURE)
        OCL_NAME(CL_MISALIGNED_SUB_BUFFER_OFFSET)
        OCL_NAME(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        OCL_NAME(CL_COMPILE_PROGRAM_FAILURE)
        OCL_NAME(CL_LINKER_NOT_AVAILABLE)
        OCL_NAME(CL_LINK_PROGRAM_FAILURE)
        OCL_NAME(CL_DEVICE_PARTITION_FAILED)
        OCL_NAME(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
        OCL_NAME(CL_INVALID_VALUE)
        OCL_NAME(CL_INVALID_DEVICE_TYPE)
        OCL_NAME(CL_INVALID_PLATFORM)
        OCL_NAME(CL_INVALID_DEVICE)
        OCL_NAME(CL_INVALID_CONTEXT)
        OCL_NAME(CL_INVALID_QUEUE_PROPERTIES)
        OCL_NAME(CL_INVALID_COMMAND_QUEUE)
        OCL_NAME(CL_INVALID_HOST_PTR)
        OCL_NAME(CL_INVALID_MEM_OBJECT)
        OCL_NAME(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
        OCL_NAME(CL_INVALID_IMAGE_SIZE)
        OCL_NAME(CL_INVALID_SAMPLER)
        OCL_NAME(CL_INVALID_BINARY)
        OCL_NAME(CL_INVALID_BUILD_OPTIONS)
        OCL_NAME(CL_INVALID_PROGRAM)
        OCL_NAME(CL_INVALID_PROGRAM_EXECUTABLE)
        OCL_NAME(CL_INVALID_KERNEL_NAME)
        OCL_NAME(CL_INVALID_KERNEL_DEFINITION)
        OCL_NAME(CL_INVALID_KERNEL)
        OCL_NAME(CL_INVALID_ARG_INDEX)
        OCL_NAME(CL_INVALID_ARG_VALUE)
        OCL_NAME(CL_INVALID_ARG_SIZE)
        OCL_NAME(CL_INVALID_KERNEL_ARGS)
        OCL_NAME(CL_INVALID_WORK_DIMENSION)
        OCL_NAME(CL_INVALID_WORK_GROUP_SIZE)
        OCL_NAME(CL_INVALID_WORK_ITEM_SIZE)
        OCL_NAME(CL_INVALID_GLOBAL_OFFSET)
        OCL_NAME(CL_INVALID_EVENT_WAIT_LIST)
        OCL_NAME(CL_INVALID_EVENT)
        OCL_NAME(CL_INVALID_OPERATION)
        OCL_NAME(CL_INVALID_GL_OBJECT)
        OCL_NAME(CL_INVALID_BUFFER_SIZE)
        OCL_NAME(CL_INVALID_MIP_LEVEL)
        OCL_NAME(CL_INVALID_GLOBAL_WORK_SIZE)
        OCL_NAME(CL_INVALID_PROPERTY)
        OCL_NAME(CL_INVALID_IMAGE_DESCRIPTOR)
        OCL_NAME(CL_INVALID_COMPILER_OPTIONS)
        OCL_NAME(CL_INVALID_LINKER_OPTIONS)
        OCL_NAME(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef OCL_NAME
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    }
    return "an unknown OpenCL status";
}

const char *ocl_clblast_name(int status)
{
    switch ((CLBlastStatusCode)status) {
#define OCL_NAME(code) \
    case code: return #code;
        OCL_NAME(CLBlastNotImplemented)
        OCL_NAME(CLBlastInvalidMatrixA)
        OCL_NAME(CLBlastInvalidMatrixB)
        OCL_NAME(CLBlastInvalidMatrixC)
        OCL_NAME(CLBlastInvalidVectorX)
        OCL_NAME(CLBlastInvalidVectorY)
        OCL_NAME(CLBlastInvalidDimension)
        OCL_NAME(CLBlastInvalidLeadDimA)
        OCL_NAME(CLBlastInvalidLeadDimB)
        OCL_NAME(CLBlastInvalidLeadDimC)
        OCL_NAME(CLBlastInvalidIncrementX)
        OCL_NAME(CLBlastInvalidIncrementY)
        OCL_NAME(CLBlastInsufficientMemoryA)
        OCL_NAME(CLBlastInsufficientMemoryB)
        OCL_NAME(CLBlastInsufficientMemoryC)
        OCL_NAME(CLBlastInsufficientMemoryX)
        OCL_NAME(CLBlastInsufficientMemoryY)
        OCL_NAME(CLBlastInsufficientMemoryTemp)
        OCL_NAME(CLBlastInvalidBatchCount)
        OCL_NAME(CLBlastInvalidOverrideKernel)
        OCL_NAME(CLBlastMissingOverrideParameter)
        OCL_NAME(CLBlastInvalidLocalMemUsage)
        OCL_NAME(CLBlastNoHalfPrecision)
        OCL_NAME(CLBlastNoDoublePrecision)
        OCL_NAME(CLBlastInvalidVectorScalar)
        OCL_NAME(CLBlastInsufficientMemoryScalar)
        OCL_NAME(CLBlastDatabaseError)
        OCL_NAME(CLBlastUnknownError)
        OCL_NAME(CLBlastUnexpectedError)
#undef OCL_NAME
    default: break;
    }
    /* The others are OpenCL's own codes. */
    return ocl_cl_name((cl_int)status);
}

bool ocl_is_alloc_failure(cl_int err)
{
    return err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ||
           err == CL_OUT_OF_HOST_MEMORY;
}

static kiln_status ocl_vfail(const kiln_host *host, kiln_status status, const char *call,
                             const char *name, int code, const char *fmt, va_list ap)
{
    char what[512] = "";
    if (fmt && *fmt)
        vsnprintf(what, sizeof what, fmt, ap);
    return host->error(status, "opencl: %s failed: %s (%d)%s%s", call, name, code,
                       what[0] ? ": " : "", what);
}

kiln_status ocl_cl_fail(const kiln_host *host, const char *call, cl_int err,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln_status st = ocl_vfail(host,
                               ocl_is_alloc_failure(err) ? KILN_ERR_NO_MEMORY
                                                         : KILN_ERR_BACKEND,
                               call, ocl_cl_name(err), err, fmt, ap);
    va_end(ap);
    return st;
}

kiln_status ocl_clblast_fail(const kiln_host *host, const char *call, int status,
                             const char *fmt, ...)
{
    /* CLBlastTempBufferAllocFailure is CL_MEM_OBJECT_ALLOCATION_FAILURE */
    bool    no_memory = ocl_is_alloc_failure((cl_int)status);
    va_list ap;
    va_start(ap, fmt);
    kiln_status st = ocl_vfail(host, no_memory ? KILN_ERR_NO_MEMORY : KILN_ERR_BACKEND,
                               call, ocl_clblast_name(status), status, fmt, ap);
    va_end(ap);
    return st;
}
