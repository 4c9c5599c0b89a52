/* kernels_portable.c — the packed GEMM's kernels in portable C, for any CPU.
 *
 * GCC's vector extensions (four floats) map to SSE2 on x86-64 and to NEON on
 * aarch64, with no -m flag: this is the baseline every machine runs, and the
 * one KILN_CPU_ISA=scalar selects. */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "cpu-impl.h"

typedef float cpu_v4 __attribute__((vector_size(16)));

static inline cpu_v4 cpu_v4_load(const float *p)
{
    cpu_v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void cpu_v4_store(float *p, cpu_v4 v)
{
    memcpy(p, &v, sizeof v);
}

#define CPU_VL            4
#define CPU_V             cpu_v4
#define CPU_VZERO()       ((cpu_v4){0.0f, 0.0f, 0.0f, 0.0f})
#define CPU_VLOADU(p)     cpu_v4_load(p)
#define CPU_VSTOREU(p, v) cpu_v4_store(p, v)
#define CPU_VBCAST(x)     ((cpu_v4){(x), (x), (x), (x)})
#define CPU_VFMA(a, b, c) ((a) * (b) + (c))
#define CPU_VADD(a, b)    ((a) + (b))

#define CPU_MR        4
#define CPU_NRV       2
#define CPU_MC        128
#define CPU_KC        256
#define CPU_NC        2048
#define CPU_GEMM_NAME cpu_gemm_portable
#include "gemm-template.h"
