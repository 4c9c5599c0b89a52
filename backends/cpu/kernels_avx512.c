/* kernels_avx512.c — the AVX-512F kernels (built with -mavx512f -mfma, run
 * only where isa.c found AVX-512F and its register state enabled).
 *
 * The GEMM tile is 14 rows x 32 columns: 28 zmm accumulators, two for the B
 * row and one broadcast, 31 of the 32 registers; 28 independent FMAs per k
 * cover the FMA latency on two pipes many times over. */
#define CPU_SIMD_AVX512
#include <stdbool.h>
#include <stddef.h>

#include "cpu-impl.h"
#include "simd.h"

#define CPU_MR        14
#define CPU_NRV       2
#define CPU_MC        168
#define CPU_KC        256
#define CPU_NC        4096
#define CPU_GEMM_NAME cpu_gemm_avx512
#include "gemm-template.h"

#define CPU_SIMD_NAME(name) cpu_##name##_avx512
#include "simd-template.h"
#include "simd-grad-template.h"

void cpu_kernels_avx512(cpu_kernels *k)
{
    k->isa  = "avx512";
    k->gemm = &cpu_gemm_avx512;
    cpu_simd_kernels_avx512(k);
    cpu_simd_grad_kernels_avx512(k);
}
