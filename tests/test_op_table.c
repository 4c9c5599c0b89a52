/* test_op_table.c — the op table (backends/common/op-table.c), compiled into
 * this test as it is into libkiln and the in-tree plugins: every op has one
 * well-formed row, the public kiln_op_name reads the same table, and the
 * checks every backend shares accept good nodes and refuse bad ones in the
 * words the backends report. */
#include <criterion/criterion.h>

#include <kiln/backend.h>
#include <kiln/kiln.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "backends/common/op-table.h"

Test(op_table, every_op_has_one_row_with_a_unique_lowercase_name)
{
    for (int op = 0; op < KILN_OP_COUNT; op++) {
        const kiln__op_def *d = kiln__op_def_of((kiln_op)op);
        cr_assert_not_null(d, "op %d has no row", op);
        cr_assert(d->name && *d->name, "op %d has no name", op);
        for (const char *c = d->name; *c; c++)
            cr_assert(islower((unsigned char)*c) || isdigit((unsigned char)*c) ||
                          *c == '_',
                      "op %d's name \"%s\" is not lowercase snake_case", op, d->name);
        for (int other = 0; other < op; other++)
            cr_assert_str_neq(kiln__op_def_of((kiln_op)other)->name, d->name,
                              "ops %d and %d are both named \"%s\"", other, op, d->name);
    }
    cr_assert_null(kiln__op_def_of(KILN_OP_COUNT));
    cr_assert_null(kiln__op_def_of((kiln_op)-1));
}

Test(op_table, public_op_names_come_from_the_table)
{
    for (int op = 0; op < KILN_OP_COUNT; op++)
        cr_assert_str_eq(kiln_op_name((kiln_op)op), kiln__op_def_of((kiln_op)op)->name);
    cr_assert_str_eq(kiln_op_name(KILN_OP_MATMUL), "matmul");
    cr_assert_str_eq(kiln_op_name(KILN_OP_CONV2D_GRAD_INPUT), "conv2d_grad_input");
    cr_assert_str_eq(kiln_op_name(KILN_OP_COUNT), "unknown op");
    cr_assert_str_eq(kiln_op_name((kiln_op)-3), "unknown op");
}

Test(op_table, rows_are_consistent)
{
    for (int op = 0; op < KILN_OP_COUNT; op++) {
        const kiln__op_def *d          = kiln__op_def_of((kiln_op)op);
        bool                dispatched = d->flags & KILN__OP_DISPATCHED;
        cr_assert(d->n_src >= 0 && d->n_opt >= 0 && d->n_src + d->n_opt <= KILN_MAX_SRC,
                  "%s: %d + %d sources", d->name, d->n_src, d->n_opt);
        cr_assert_eq(dispatched, d->rule != NULL,
                     "%s: a dispatched op needs a shape "
                     "rule, and only those have one",
                     d->name);
        for (int s = 0; s < d->n_src + d->n_opt; s++)
            cr_assert(d->src_name[s] && *d->src_name[s], "%s: source %d has no name",
                      d->name, s);
        if (d->flags & KILN__OP_IN_PLACE)
            cr_assert(d->n_src >= 1, "%s is in place but has no src[0]", d->name);
        cr_assert_eq(d->writes >> (d->n_src + d->n_opt), 0u,
                     "%s writes a source it does not have", d->name);
        if (d->writes)
            cr_assert(d->flags & KILN__OP_IN_PLACE,
                      "%s writes sources in place but "
                      "is not marked in place",
                      d->name);
    }
    cr_assert_eq(kiln__op_def_of(KILN_OP_LEAF)->flags & KILN__OP_DISPATCHED, 0u);
    cr_assert_eq(kiln__op_def_of(KILN_OP_RESHAPE)->flags & KILN__OP_DISPATCHED, 0u);
    cr_assert(kiln__op_def_of(KILN_OP_MATMUL)->flags & KILN__OP_DIFFERENTIABLE);
    cr_assert_eq(kiln__op_def_of(KILN_OP_ARGMAX)->flags & KILN__OP_DIFFERENTIABLE, 0u);
    cr_assert_eq(kiln__op_def_of(KILN_OP_ADAM_STEP)->writes, 1u << 2 | 1u << 3);
}

/* ---- the shared checks ------------------------------------------------------- */

static kiln_node tensor(kiln_dtype dtype, int ndim, const int64_t *dims)
{
    kiln_node t = {.op = KILN_OP_LEAF, .dtype = dtype, .ndim = ndim, .numel = 1};
    for (int d = 0; d < ndim; d++) {
        t.dims[d] = dims[d];
        t.numel *= dims[d];
    }
    return t;
}

Test(op_table, check_accepts_a_node_that_keeps_its_rule)
{
    kiln_node a  = tensor(KILN_F32, 2, (int64_t[]){3, 4});
    kiln_node b  = tensor(KILN_F32, 2, (int64_t[]){4, 5});
    kiln_node mm = tensor(KILN_F32, 2, (int64_t[]){3, 5});
    mm.op        = KILN_OP_MATMUL;
    mm.src[0]    = &a;
    mm.src[1]    = &b;
    cr_assert_null(kiln__op_check(&mm), "%s", kiln__op_check(&mm));
    mm.iparam[1] = 1; /* b read transposed: [5, 4] would be needed */
    cr_assert_str_eq(kiln__op_check(&mm), "the inner dimensions of a and b differ");
}

Test(op_table, check_refuses_dtypes_missing_sources_and_bad_extents)
{
    kiln_node x      = tensor(KILN_F32, 1, (int64_t[]){4});
    kiln_node labels = tensor(KILN_F32, 1, (int64_t[]){4});
    kiln_node relu   = tensor(KILN_F32, 1, (int64_t[]){4});
    relu.op          = KILN_OP_RELU;
    cr_assert_str_eq(kiln__op_check(&relu), "a source is missing");
    relu.src[0] = &x;
    cr_assert_null(kiln__op_check(&relu));
    x.numel = 5; /* dims say 4 */
    cr_assert_str_eq(kiln__op_check(&relu), "a tensor's ndim, dims and numel disagree");
    x.numel    = 4;
    relu.dtype = KILN_I32;
    cr_assert_str_eq(kiln__op_check(&relu), "a tensor is not f32, f16 or bf16");
    /* one float type: an f16 relu of an f32 tensor is refused, of f16 runs */
    relu.dtype = KILN_F16;
    cr_assert_str_eq(kiln__op_check(&relu),
                     "the float tensors differ in dtype (the op takes one float type: "
                     "cast one of them with kiln_cast)");
    x.dtype = KILN_F16;
    cr_assert_null(kiln__op_check(&relu));
    /* the optimiser's steps are f32 only */
    kiln_node p = tensor(KILN_F16, 1, (int64_t[]){4}), gr = tensor(KILN_F32, 1, (int64_t[]){4});
    kiln_node m = tensor(KILN_F32, 1, (int64_t[]){4}), h = tensor(KILN_F32, 1, (int64_t[]){8});
    kiln_node step = tensor(KILN_F16, 1, (int64_t[]){4});
    step.op        = KILN_OP_SGD_STEP;
    step.src[0]    = &p;
    step.src[1]    = &gr;
    step.src[2]    = &m;
    step.src[3]    = &h;
    cr_assert_str_eq(kiln__op_check(&step), "a tensor is not f32 (the op runs in f32 only)");
    /* CAST: any float type to any */
    kiln_node cast = tensor(KILN_BF16, 1, (int64_t[]){4});
    cast.op        = KILN_OP_CAST;
    cast.src[0]    = &x;
    cr_assert_null(kiln__op_check(&cast));
    x.dtype = KILN_I32;
    cr_assert_str_eq(kiln__op_check(&cast), "a tensor is not f32, f16 or bf16");
    x.dtype = KILN_F32;

    kiln_node logits = tensor(KILN_F32, 2, (int64_t[]){4, 3});
    kiln_node ce     = tensor(KILN_F32, 0, NULL);
    ce.op            = KILN_OP_CROSS_ENTROPY;
    ce.src[0]        = &logits;
    ce.src[1]        = &labels;
    cr_assert_str_eq(kiln__op_check(&ce), "a tensor is not i32");
    labels.dtype = KILN_I32;
    cr_assert_null(kiln__op_check(&ce));

    kiln_node leaf = tensor(KILN_F32, 0, NULL);
    cr_assert_str_eq(kiln__op_check(&leaf), "the op is never dispatched to a backend");
}

static bool inside(const kiln_node *t)
{
    return t->offset + (size_t)t->numel * 4 <= 64; /* a 64-byte buffer */
}

Test(op_table, storage_check_finds_data_outside_and_a_moved_in_place_output)
{
    static int buffer;
    kiln_node  p    = tensor(KILN_F32, 1, (int64_t[]){2});
    kiln_node  hp   = tensor(KILN_F32, 1, (int64_t[]){8});
    kiln_node  step = p;
    step.op         = KILN_OP_SGD_STEP;
    step.src[0] = step.src[1] = step.src[2] = &p;
    step.src[3]                             = &hp;
    p.buffer = hp.buffer = step.buffer = &buffer;
    cr_assert_null(kiln__op_check(&step), "%s", kiln__op_check(&step));
    cr_assert_null(kiln__op_check_storage(&step, inside));
    step.offset = 8;
    cr_assert_str_eq(kiln__op_check_storage(&step, inside),
                     "the output is not the storage of src[0]: the op updates it in "
                     "place");
    step.offset = 0;
    hp.offset   = 56;
    cr_assert_str_eq(kiln__op_check_storage(&step, inside),
                     "a tensor's data lies outside its buffer");
}

Test(op_table, messages_format_shapes_one_way)
{
    char s[KILN__SHAPE_STR];
    cr_assert_str_eq(kiln__shape_str(s, 2, (int64_t[]){3, 4}), "[3, 4]");
    cr_assert_str_eq(kiln__shape_str(s, 0, NULL), "[]");
    int64_t big[KILN_MAX_DIMS];
    for (int d = 0; d < KILN_MAX_DIMS; d++)
        big[d] = INT64_MAX;
    kiln__shape_str(s, KILN_MAX_DIMS, big);
    cr_assert_lt(strlen(s), sizeof s);
    cr_assert_eq(s[strlen(s) - 1], ']');

    kiln_node a = tensor(KILN_F32, 1, (int64_t[]){4});
    kiln_node b = tensor(KILN_F32, 1, (int64_t[]){5});
    kiln_node g = tensor(KILN_F32, 1, (int64_t[]){4});
    g.op        = KILN_OP_RELU_GRAD;
    g.name      = "h";
    g.src[0]    = &a;
    g.src[1]    = &b;
    char msg[512];
    cr_assert_eq(kiln__refusal(msg, sizeof msg, "cpu", 7, &g, kiln__op_check(&g)),
                 KILN_ERR_SHAPE);
    cr_assert_str_eq(msg, "cpu: node 7 (relu_grad 'h') cannot run: a source and the "
                          "output differ in number of elements (output [4], sources "
                          "[4] [5])");
    kiln_node leaf = tensor(KILN_F32, 0, NULL);
    cr_assert_eq(kiln__refusal(msg, sizeof msg, "opencl", 0, &leaf, "x"),
                 KILN_ERR_INVALID_ARG);
}

Test(op_table, layer_norm_takes_eps_from_fparam_and_refuses_a_negative_or_nan_one)
{
    kiln_node x  = tensor(KILN_F32, 2, (int64_t[]){3, 4});
    kiln_node w  = tensor(KILN_F32, 1, (int64_t[]){4});
    kiln_node ln = tensor(KILN_F32, 2, (int64_t[]){3, 4});
    ln.op        = KILN_OP_LAYER_NORM;
    ln.src[0]    = &x;
    ln.src[1]    = &w; /* no bias: it is optional */
    cr_assert_null(kiln__op_check(&ln), "%s", kiln__op_check(&ln));
    ln.fparam[0] = 1e-5f;
    cr_assert_null(kiln__op_check(&ln), "%s", kiln__op_check(&ln));
    ln.fparam[0] = -1e-5f;
    cr_assert_str_eq(kiln__op_check(&ln), "eps (fparam[0]) is negative, infinite or NaN");
    ln.fparam[0] = __builtin_nanf("");
    cr_assert_str_eq(kiln__op_check(&ln), "eps (fparam[0]) is negative, infinite or NaN");
    ln.fparam[0] = __builtin_inff();
    cr_assert_str_eq(kiln__op_check(&ln), "eps (fparam[0]) is negative, infinite or NaN");
}
