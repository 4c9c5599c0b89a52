/* isa.c — which kernels this machine runs, and how many threads.
 *
 * An ISA is usable when the CPU has it (cpuid) and the OS saves its registers
 * on a context switch (XCR0, read with xgetbv): a kernel that touches zmm16 on
 * an OS that does not enable the AVX-512 state faults, whatever cpuid says.
 * KILN_CPU_ISA caps the choice; it never raises it above what is usable.
 * Both environment variables are read when the device is described and when it
 * is opened, so kiln-info shows what a context would get.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu-impl.h"

/* The AVX kernels are built for x86-64 only (configure.ac). */
#if defined(__x86_64__)
#include <cpuid.h>

/* XCR0 bits: SSE and AVX state (1, 2); opmask, ZMM0-15 upper, ZMM16-31 (5-7). */
#define CPU_XCR0_AVX    0x06u
#define CPU_XCR0_AVX512 0xe6u

static uint64_t cpu_xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* Whether the CPU and the OS support isa; if not, *why says which lacks it. */
static bool cpu_isa_probe(cpu_isa isa, const char **why)
{
    unsigned a, b, c, d;
    *why = NULL;
    if (isa == CPU_ISA_SCALAR)
        return true;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX) ||
        !(c & bit_FMA)) {
        *why = "the CPU lacks AVX, FMA or OSXSAVE";
        return false;
    }
    uint64_t xcr0 = cpu_xgetbv0();
    if ((xcr0 & CPU_XCR0_AVX) != CPU_XCR0_AVX) {
        *why = "the OS does not enable the AVX register state (XCR0)";
        return false;
    }
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & bit_AVX2)) {
        *why = "the CPU lacks AVX2";
        return false;
    }
    if (isa == CPU_ISA_AVX2)
        return true;
    if (!(b & bit_AVX512F)) {
        *why = "the CPU lacks AVX-512F";
        return false;
    }
    if ((xcr0 & CPU_XCR0_AVX512) != CPU_XCR0_AVX512) {
        *why = "the OS does not enable the AVX-512 register state (XCR0)";
        return false;
    }
    return true;
}
#else
static bool cpu_isa_probe(cpu_isa isa, const char **why)
{
    *why = isa == CPU_ISA_SCALAR ? NULL : "not an x86-64 build";
    return isa == CPU_ISA_SCALAR;
}
#endif

static const char *const cpu_isa_names[CPU_ISA_COUNT]  = {"scalar", "avx2", "avx512"};
static const char *const cpu_isa_labels[CPU_ISA_COUNT] = {
    "portable C",
    "AVX2+FMA",
    "AVX-512",
};

const char *cpu_isa_name(cpu_isa isa)
{
    return cpu_isa_names[isa];
}

const char *cpu_isa_label(cpu_isa isa)
{
    return cpu_isa_labels[isa];
}

bool cpu_isa_supported(cpu_isa isa)
{
    const char *why;
    return cpu_isa_probe(isa, &why);
}

/* The best usable ISA, and why the next one up is not usable. */
static cpu_isa cpu_isa_best(const char **why_not_higher)
{
    cpu_isa best    = CPU_ISA_SCALAR;
    *why_not_higher = NULL;
    for (int i = CPU_ISA_SCALAR + 1; i < CPU_ISA_COUNT; i++) {
        if (!cpu_isa_probe((cpu_isa)i, why_not_higher))
            break;
        best = (cpu_isa)i;
    }
    return best;
}

void cpu_isa_choose(cpu_isa_choice *ch)
{
    const char *env = getenv("KILN_CPU_ISA");
    const char *why_not;
    memset(ch, 0, sizeof *ch);
    ch->best = cpu_isa_best(&why_not);
    ch->isa  = ch->best;
    snprintf(ch->why, sizeof ch->why, "the best this machine supports%s%s",
             why_not ? "; higher: " : "", why_not ? why_not : "");
    if (!env || !*env)
        return;
    int want = -1;
    for (int i = 0; i < CPU_ISA_COUNT; i++)
        if (strcmp(env, cpu_isa_names[i]) == 0)
            want = i;
    if (want < 0) {
        ch->bad_env = true;
        snprintf(ch->why, sizeof ch->why,
                 "KILN_CPU_ISA='%.24s' is not scalar, avx2 or avx512: ignored", env);
    } else if ((cpu_isa)want < ch->best) {
        ch->isa = (cpu_isa)want;
        snprintf(ch->why, sizeof ch->why, "capped by KILN_CPU_ISA=%s; the machine has %s",
                 env, cpu_isa_names[ch->best]);
    } else if ((cpu_isa)want > ch->best) {
        cpu_isa_probe((cpu_isa)want, &why_not);
        snprintf(ch->why, sizeof ch->why,
                 "KILN_CPU_ISA=%s asks for more than this "
                 "machine has (%s): using %s",
                 env, why_not ? why_not : "?", cpu_isa_names[ch->best]);
    } else {
        snprintf(ch->why, sizeof ch->why,
                 "KILN_CPU_ISA=%s, the best this machine "
                 "supports",
                 env);
    }
}

/* ---- threads --------------------------------------------------------------- */

/* The CPUs this process may run on (its affinity mask), at least 1. */
static int cpu_core_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 && n < CPU_MAX_THREADS ? (int)n : 1;
}

void cpu_threads_choose(cpu_threads_choice *ch)
{
    const char *env   = getenv("KILN_NUM_THREADS");
    int         cores = cpu_core_count();
    memset(ch, 0, sizeof *ch);
    ch->n = cores < CPU_MAX_THREADS ? cores : CPU_MAX_THREADS;
    snprintf(ch->why, sizeof ch->why, "%d core%s", cores, cores == 1 ? "" : "s");
    if (!env || !*env)
        return;
    char *end;
    errno  = 0;
    long v = strtol(env, &end, 10);
    while (*end && isspace((unsigned char)*end))
        end++;
    if (errno || end == env || *end || v < 1 || v > CPU_MAX_THREADS) {
        ch->bad_env = true;
        snprintf(ch->why, sizeof ch->why,
                 "KILN_NUM_THREADS='%.16s' is not in "
                 "[1, %d]: ignored, %d core%s",
                 env, CPU_MAX_THREADS, cores, cores == 1 ? "" : "s");
        return;
    }
    ch->n = (int)v;
    snprintf(ch->why, sizeof ch->why, "KILN_NUM_THREADS=%ld; %d core%s", v, cores,
             cores == 1 ? "" : "s");
}
