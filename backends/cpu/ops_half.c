/* ops_half.c — f16 and bf16 on the cpu: the conversions (CAST, and every
 * kernel that reads or writes 16 bits), and the widening that runs any op
 * whose float type is f16 or bf16 with its f32 kernel.
 *
 * Conversions: F16C converts 8 f16 per instruction (vcvtph2ps, vcvtps2ph
 * with round to nearest even); bf16 is f32's upper half, so widening is a
 * shift and narrowing adds 0x7fff plus the kept lowest bit before the shift
 * (ties to even), a NaN being quieted rather than rounded. Both give the bits
 * of backends/common/half.h, which the scalar path uses.
 *
 * Widening (cpu_run_widened): each 16-bit float source is converted into an
 * f32 scratch buffer, the op's f32 kernel runs on a copy of the node that
 * points at them, and its f32 output is rounded into the node's storage: the
 * op computes in f32 as the 16-bit contract says, at the price of the copies.
 * MATMUL widens as it packs instead (gemm.c), and the elementwise ops run
 * chunk by chunk (cpu_run_chunked): each thread widens a few thousand
 * elements of each source into buffers on its stack, runs the f32 kernel on
 * them and narrows the result, so that the data makes one pass through
 * memory in 16 bits and nothing is allocated.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/half.h"
#include "cpu-impl.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

/* ---- conversions ------------------------------------------------------------ */

static void cpu_widen_scalar(float *out, const uint16_t *x, size_t n, kiln_dtype dtype)
{
    if (dtype == KILN_BF16)
        for (size_t i = 0; i < n; i++)
            out[i] = kiln__bf16_to_f32(x[i]);
    else
        for (size_t i = 0; i < n; i++)
            out[i] = kiln__f16_to_f32(x[i]);
}

static void cpu_narrow_scalar(uint16_t *out, const float *x, size_t n, kiln_dtype dtype)
{
    if (dtype == KILN_BF16)
        for (size_t i = 0; i < n; i++)
            out[i] = kiln__f32_to_bf16(x[i]);
    else
        for (size_t i = 0; i < n; i++)
            out[i] = kiln__f32_to_f16(x[i]);
}

#if defined(__x86_64__)
#define CPU_F16C __attribute__((target("avx2,f16c")))

CPU_F16C static void cpu_widen_f16c(float *out, const uint16_t *x, size_t n,
                                    kiln_dtype dtype)
{
    size_t i = 0;
    if (dtype == KILN_BF16)
        for (; i + 8 <= n; i += 8) {
            __m128i h = _mm_loadu_si128((const __m128i *)(x + i));
            __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
            _mm256_storeu_ps(out + i, _mm256_castsi256_ps(w));
        }
    else
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i,
                             _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    cpu_widen_scalar(out + i, x + i, n - i, dtype);
}

CPU_F16C static void cpu_narrow_f16c(uint16_t *out, const float *x, size_t n,
                                     kiln_dtype dtype)
{
    size_t i = 0;
    if (dtype == KILN_BF16) {
        const __m256i lsb = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
        const __m256i quiet = _mm256_set1_epi32(0x00400000);
        for (; i + 8 <= n; i += 8) {
            __m256  v = _mm256_loadu_ps(x + i);
            __m256i u = _mm256_castps_si256(v);
            __m256i r = _mm256_add_epi32(
                u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), lsb)));
            /* NaN: quiet it and keep its upper half, unrounded */
            __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            r = _mm256_blendv_epi8(r, _mm256_or_si256(u, quiet), nan);
            r = _mm256_srli_epi32(r, 16);
            /* 8 x 32 bits -> 8 x 16: pack within lanes, then gather the lanes */
            __m256i p = _mm256_packus_epi32(r, r);
            p         = _mm256_permute4x64_epi64(p, 0x08);
            _mm_storeu_si128((__m128i *)(out + i), _mm256_castsi256_si128(p));
        }
    } else {
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(out + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    cpu_narrow_scalar(out + i, x + i, n - i, dtype);
}
#endif

void cpu_half_kernels(cpu_kernels *k, bool vector)
{
    k->widen  = cpu_widen_scalar;
    k->narrow = cpu_narrow_scalar;
#if defined(__x86_64__)
    /* `vector`: the chosen kernels are AVX2's or AVX-512's, so AVX2 and its
     * register state are there (isa.c); F16C is cpuid 1, ecx bit 29 (clang
     * has no __builtin_cpu_supports("f16c")) */
    unsigned a, b, c, d;
    if (vector && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C)) {
        k->widen  = cpu_widen_f16c;
        k->narrow = cpu_narrow_f16c;
    }
#else
    (void)vector;
#endif
}

/* ---- converting on the device's threads -------------------------------------------- */

typedef struct cpu_convert_job {
    const cpu_kernels *k;
    void              *dst;
    kiln_dtype         dst_dtype;
    const void        *src;
    kiln_dtype         src_dtype;
} cpu_convert_job;

static void cpu_convert_range(void *arg, size_t lo, size_t hi)
{
    const cpu_convert_job *j = arg;
    size_t                 n = hi - lo;
    if (j->src_dtype == KILN_F32 && j->dst_dtype == KILN_F32)
        memcpy((float *)j->dst + lo, (const float *)j->src + lo, n * sizeof(float));
    else if (j->src_dtype == KILN_F32)
        j->k->narrow((uint16_t *)j->dst + lo, (const float *)j->src + lo, n, j->dst_dtype);
    else if (j->dst_dtype == KILN_F32)
        j->k->widen((float *)j->dst + lo, (const uint16_t *)j->src + lo, n, j->src_dtype);
    else if (j->src_dtype == j->dst_dtype)
        memcpy((uint16_t *)j->dst + lo, (const uint16_t *)j->src + lo, n * 2);
    else {
        /* f16 <-> bf16 through f32, a block at a time */
        float buf[256];
        for (size_t i = lo; i < hi; i += 256) {
            size_t m = hi - i < 256 ? hi - i : 256;
            j->k->widen(buf, (const uint16_t *)j->src + i, m, j->src_dtype);
            j->k->narrow((uint16_t *)j->dst + i, buf, m, j->dst_dtype);
        }
    }
}

void cpu_convert(const cpu_device *dev, void *dst, kiln_dtype dst_dtype, const void *src,
                 kiln_dtype src_dtype, size_t n)
{
    cpu_convert_job job = {&dev->k, dst, dst_dtype, src, src_dtype};
    if (n < 65536)
        cpu_convert_range(&job, 0, n);
    else
        cpu_parallel_for(dev, n, 64, 32768, cpu_convert_range, &job);
}

kiln_status cpu_op_cast(const cpu_device *dev, const kiln_node *node)
{
    cpu_convert(dev, cpu_data(node), node->dtype, cpu_data(node->src[0]),
                node->src[0]->dtype, (size_t)node->numel);
    return KILN_OK;
}

/* ---- widening ------------------------------------------------------------------------ */

/* An f32 twin of a 16-bit tensor, in its own buffer; `fill` copies its data. */
static kiln_status cpu_twin(const cpu_device *dev, const kiln_node *t, bool fill,
                            kiln_node *twin, cpu_buffer *buf)
{
    *twin        = *t;
    twin->dtype  = KILN_F32;
    twin->offset = 0;
    buf->size    = (size_t)t->numel * sizeof(float);
    buf->data    = NULL;
    if (posix_memalign(&buf->data, 64, buf->size ? buf->size : 64) != 0)
        return dev->host->error(KILN_ERR_NO_MEMORY,
                                "cpu: out of memory for the f32 copy (%zu bytes) of a "
                                "%s tensor",
                                buf->size, t->dtype == KILN_F16 ? "f16" : "bf16");
    twin->buffer = buf;
    if (fill)
        cpu_convert(dev, buf->data, KILN_F32, cpu_data(t), t->dtype, (size_t)t->numel);
    return KILN_OK;
}

kiln_status cpu_run_widened(const cpu_device *dev, const kiln_node *node,
                            cpu_op_fn kernel)
{
    kiln_node   src[KILN_MAX_SRC], out;
    cpu_buffer  buf[KILN_MAX_SRC + 1];
    int         made = 0;
    kiln_status st   = KILN_OK;
    out              = *node;
    for (int s = 0; s < KILN_MAX_SRC && node->src[s] && st == KILN_OK; s++) {
        if (!kiln__is_half(node->src[s]->dtype))
            continue;
        st = cpu_twin(dev, node->src[s], true, &src[s], &buf[made]);
        if (st == KILN_OK) {
            made++;
            out.src[s] = &src[s];
        }
    }
    bool in_place = kiln__is_half(node->dtype) && node->src[0] &&
                    node->buffer == node->src[0]->buffer &&
                    node->offset == node->src[0]->offset && out.src[0] != node->src[0];
    if (st == KILN_OK && kiln__is_half(node->dtype)) {
        if (in_place) { /* STORE_SLICE: the output is src[0]'s twin */
            out.dtype  = KILN_F32;
            out.buffer = out.src[0]->buffer;
            out.offset = 0;
        } else {
            kiln_node tw; /* the output's twin, whose sources are out's */
            if ((st = cpu_twin(dev, node, false, &tw, &buf[made])) == KILN_OK) {
                made++;
                out.dtype  = KILN_F32;
                out.buffer = tw.buffer;
                out.offset = 0;
            }
        }
    }
    if (st == KILN_OK)
        st = kernel(dev, &out);
    if (st == KILN_OK && kiln__is_half(node->dtype))
        cpu_convert(dev, cpu_data(node), node->dtype, cpu_data(&out), KILN_F32,
                    (size_t)node->numel);
    while (made > 0)
        free(buf[--made].data);
    return st;
}

/* ---- elementwise ops, chunk by chunk ------------------------------------------------- */

/* The most elements a chunk holds: four f32 buffers of it on the stack. */
#define CPU_CHUNK 2048

typedef struct cpu_chunk_job {
    const cpu_device *dev;
    const kiln_node  *node;
    cpu_op_fn         kernel;
    size_t            chunk;                /* elements, a multiple of small */
    const float      *small[KILN_MAX_SRC];  /* a broadcast source, widened */
    size_t            small_n[KILN_MAX_SRC];
} cpu_chunk_job;

/* Elements [at, at + len) of the node: each source widened (a broadcast
 * source read from its widened copy), the f32 kernel on 1-D views of them,
 * and the output narrowed into place. A broadcast source repeats within
 * the piece as it does within the node: the piece starts at a multiple of
 * its size m, or (m wider than half a chunk) lies within one repeat, where
 * the source's view is the part of that repeat it covers. */
static void cpu_chunk_piece(const cpu_chunk_job *j, size_t at, size_t len, float *buf,
                            float *out)
{
    const kiln_node *node = j->node;
    kiln_node        src[3], view = *node;
    cpu_buffer       sb[3], ob = {out, len * sizeof *out};
    for (int s = 0; s < 3 && node->src[s]; s++) {
        src[s]        = *node->src[s];
        src[s].dtype  = KILN_F32;
        src[s].ndim   = 1;
        src[s].offset = 0;
        size_t m      = j->small_n[s];
        if (j->small[s] && m <= CPU_CHUNK / 2) { /* whole, repeating */
            src[s].dims[0] = src[s].numel = (int64_t)m;
            sb[s]          = (cpu_buffer){(void *)j->small[s], m * sizeof(float)};
        } else if (j->small[s]) { /* the part of one repeat the piece covers */
            src[s].dims[0] = src[s].numel = (int64_t)len;
            sb[s] = (cpu_buffer){(void *)(j->small[s] + at % m), len * sizeof(float)};
        } else {
            src[s].dims[0] = src[s].numel = (int64_t)len;
            float *b                      = buf + (size_t)s * CPU_CHUNK;
            j->dev->k.widen(b, (const uint16_t *)cpu_data(node->src[s]) + at, len,
                            node->src[s]->dtype);
            sb[s] = (cpu_buffer){b, len * sizeof(float)};
        }
        src[s].buffer = &sb[s];
        view.src[s]   = &src[s];
    }
    view.dtype   = KILN_F32;
    view.ndim    = 1;
    view.dims[0] = view.numel = (int64_t)len;
    view.buffer  = &ob;
    view.offset  = 0;
    j->kernel(j->dev, &view); /* under the grain: on this thread */
    j->dev->k.narrow((uint16_t *)cpu_data(node) + at, out, len, node->dtype);
}

/* Chunks [lo, hi), each cut where a wide broadcast source repeats. */
static void cpu_chunk_range(void *arg, size_t lo, size_t hi)
{
    const cpu_chunk_job *j = arg;
    size_t               n = (size_t)j->node->numel;
    float                buf[3 * CPU_CHUNK], out[CPU_CHUNK];
    for (size_t c = lo; c < hi; c++) {
        size_t at = c * j->chunk, end = n - at < j->chunk ? n : at + j->chunk;
        while (at < end) {
            size_t len = end - at;
            for (int s = 0; s < 3; s++) {
                size_t m = j->small_n[s];
                if (j->small[s] && m > CPU_CHUNK / 2 && m - at % m < len)
                    len = m - at % m;
            }
            cpu_chunk_piece(j, at, len, buf, out);
            at += len;
        }
    }
}

bool cpu_chunkable(const kiln_node *node)
{
    switch (node->op) {
    case KILN_OP_ADD: case KILN_OP_SUB: case KILN_OP_MUL: case KILN_OP_DIV:
    case KILN_OP_NEG: case KILN_OP_EXP: case KILN_OP_LOG: case KILN_OP_SQRT:
    case KILN_OP_RELU: case KILN_OP_SIGMOID: case KILN_OP_TANH: case KILN_OP_SCALE:
    case KILN_OP_RELU_GRAD: case KILN_OP_GELU: case KILN_OP_GELU_GRAD:
        break;
    default:
        return false;
    }
    /* one float type throughout (the op table's rule), 16-bit, at most
     * three sources */
    if (!kiln__is_half(node->dtype))
        return false;
    for (int s = 3; s < KILN_MAX_SRC; s++)
        if (node->src[s])
            return false;
    return true;
}

kiln_status cpu_run_chunked(const cpu_device *dev, const kiln_node *node, cpu_op_fn kernel)
{
    size_t        n     = (size_t)node->numel;
    size_t        small = 1;
    cpu_chunk_job job   = {.dev = dev, .node = node, .kernel = kernel};
    kiln_status   st    = KILN_OK;
    if (n == 0)
        return KILN_OK;
    for (int s = 0; s < KILN_MAX_SRC && node->src[s] && st == KILN_OK; s++) {
        const kiln_node *src = node->src[s];
        if ((size_t)src->numel == n)
            continue;
        size_t m       = (size_t)src->numel;
        float *w       = malloc(m * sizeof *w);
        job.small[s]   = w;
        job.small_n[s] = m;
        small          = m;
        if (!w)
            st = dev->host->error(KILN_ERR_NO_MEMORY, "cpu: out of memory widening a "
                                                      "broadcast operand");
        else
            dev->k.widen(w, cpu_data(src), m, src->dtype);
    }
    /* a chunk starts at a multiple of a narrow broadcast source's size; a
     * wide one is cut where it repeats (cpu_chunk_range) */
    job.chunk = small <= CPU_CHUNK / 2 ? CPU_CHUNK / small * small : CPU_CHUNK;
    if (st == KILN_OK) {
        size_t chunks = (n + job.chunk - 1) / job.chunk;
        size_t grain  = CPU_ELEMENTWISE_GRAIN / job.chunk;
        cpu_parallel_for(dev, chunks, 1, grain ? grain : 1, cpu_chunk_range, &job);
    }
    for (int s = 0; s < KILN_MAX_SRC; s++)
        free((void *)job.small[s]);
    return st;
}
