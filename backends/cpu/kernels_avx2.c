/* kernels_avx2.c — the AVX2+FMA kernels (built with -mavx2 -mfma, run only
 * where isa.c found AVX2, FMA and the AVX register state enabled).
 *
 * The GEMM tile is 6 rows x 16 columns: 12 ymm accumulators, two for the B
 * row and one broadcast, of the 16 registers. */
#define CPU_SIMD_AVX2
#include <stdbool.h>
#include <stddef.h>

#include "cpu-impl.h"
#include "simd.h"

#define CPU_MR        6
#define CPU_NRV       2
#define CPU_MC        144
#define CPU_KC        256
#define CPU_NC        4096
#define CPU_GEMM_NAME cpu_gemm_avx2
#include "gemm-template.h"

#define CPU_SIMD_NAME(name) cpu_##name##_avx2
#include "simd-template.h"
#include "simd-grad-template.h"

void cpu_kernels_avx2(cpu_kernels *k)
{
    k->isa  = "avx2";
    k->gemm = &cpu_gemm_avx2;
    cpu_simd_kernels_avx2(k);
    cpu_simd_grad_kernels_avx2(k);
}
