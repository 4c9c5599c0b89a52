/* embedding.cl — EMBEDDING and EMBEDDING_GRAD.
 *
 * An id outside [0, vocab) cannot stop a kernel: it is never used as an
 * index, the lowest position holding one goes to err[slot] (the host turns
 * it into an error at synchronize, as for cross-entropy's labels), and the
 * forward writes NaN to that position's row. */

/* One work-item per output element: out[p, c] = table[ids[p], c]. */
__kernel void kiln_embedding(GF *out, ulong oo, GCF *table, ulong to, GCI *ids,
                             ulong io, ulong vocab, ulong cols, ulong n,
                             __global int *err, uint slot)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ulong p = i / cols, c = i % cols;
    int id = ids[io + p];
    if (id < 0 || (ulong)id >= vocab) {
        if (c == 0)
            atomic_min(err + slot, (int)min(p, (ulong)0x7ffffffe));
        out[oo + i] = NAN;
        return;
    }
    out[oo + i] = table[to + (ulong)id * cols + c];
}

/* One work-item per output element (v, c), which sums g[p, c] over the
 * positions p whose id is v, in order: no two work-items write one element,
 * so no float atomics are needed. Every work-item reads every id; the first
 * one reports the lowest bad position. */
__kernel void kiln_embedding_grad(GF *out, ulong oo, GCF *g, ulong go, GCI *ids,
                                  ulong io, ulong positions, ulong cols, ulong n,
                                  __global int *err, uint slot)
{
    ulong i = get_global_id(0);
    if (i >= n)
        return;
    ulong v = i / cols, c = i % cols, vocab = n / cols, bad = positions;
    kiln_sum s = sum_zero();
    for (ulong p = 0; p < positions; p++) {
        int id = ids[io + p];
        if ((ulong)id == v && id >= 0)
            s = sum_add(s, (acc_t)g[go + p * cols + c]);
        else if (i == 0 && bad == positions && (id < 0 || (ulong)id >= vocab))
            bad = p;
    }
    if (bad < positions)
        atomic_min(err + slot, (int)min(bad, (ulong)0x7ffffffe));
    out[oo + i] = (float)s.s;
}
