/* Parts shared by the x86 kernel files (gemm_avx2.c, gemm_avx512.c): the
 * lines asked ahead, the per-row-count entry points and the epilogue
 * instances.  Included inside each file's x86 block after it defines
 * INLINE with its own target attribute, since GCC does not inline across
 * differing targets; every function here is static, so each file gets its
 * own copy, compiled for its instruction set. */
#ifndef PW_TILE_PARTS_H
#define PW_TILE_PARTS_H

/* ------------------------------------------------------ lines asked ahead
 *
 * p->ahead (see pw_kernels.h): a call's lines are split evenly over its
 * panels, each panel asking for its share just before its k loop, so the
 * requests overlap that loop's arithmetic.  Slicing the k loop to ask for
 * one line at a time cost more than it hid on short depths. */
typedef struct {
    const char *row;    /* the row the next line lies in */
    size_t col, row_bytes, left, per_panel;
    ptrdiff_t rs;
} ahead_lines;

INLINE ahead_lines ahead_begin(const pw_gemm_params *p, size_t npanels)
{
    ahead_lines s;
    s.row = (const char *)p->ahead;
    s.col = 0;
    s.row_bytes = (p->ahead_row_bytes + 63) / 64 * 64;
    s.left = s.row_bytes / 64 * p->ahead_rows;
    s.per_panel = (s.left + npanels - 1) / npanels;
    s.rs = p->ahead_rs;
    return s;
}

INLINE void ahead_panel(ahead_lines *s)
{
    for (size_t n = s->per_panel < s->left ? s->per_panel : s->left; n; n--) {
        __builtin_prefetch(s->row + s->col, 0, 2);
        s->left--;
        s->col += 64;
        if (s->col == s->row_bytes) {
            s->col = 0;
            s->row += s->rs;
        }
    }
}

/* One entry's dispatch on the row count, each count a tile of its own.
 * Calls that ask ahead get an entry of their own, never inlined: beside the
 * plain tiles, its extra state made GCC spill row pointers inside their k
 * loop (11% more instructions in a 96->576 forward pass). */
#define GEMM_ENTRY(QUALIFIERS, NAME, T, TILE, AHEAD, MR_MAX)                    \
    QUALIFIERS void NAME(                                                      \
        size_t mr, size_t nc, const T *a, const T *packed, T *c,               \
        const T *row_bias, const T *r, const pw_gemm_params *p)                \
    {                                                                         \
        if (mr > 4) TILE(MR_MAX, AHEAD, mr, nc, a, packed, c, row_bias, r, p);      \
        else if (mr > 2) TILE(4, AHEAD, mr, nc, a, packed, c, row_bias, r, p); \
        else if (mr == 2) TILE(2, AHEAD, mr, nc, a, packed, c, row_bias, r, p); \
        else TILE(1, AHEAD, mr, nc, a, packed, c, row_bias, r, p);             \
    }

/* What a full panel's epilogue knows at compile time.  EPI_ANY: nothing,
 * every operand is tested at run time (streamed stores take this one);
 * otherwise stores are plain and EPI_R / EPI_RB say whether a residual / a
 * row bias is added (NHWC: bias in the panel head, so none or EPI_R; NCHW
 * forward: EPI_RB, or both with a residual).  Each combination is its own
 * instance: with the tests for absent operands left in, a relu6 + residual
 * float forward pass was 3-11% slower on 16->96 to 64->384 layers, and a
 * plain double one 4-6% slower over MobileNetV2-shaped layers. */
enum { EPI_R = 1, EPI_RB = 2, EPI_ANY = 4 };

/* The instance a call's operands select. */
#define EPI_OF(p, r, row_bias)                                                 \
    ((p)->stream ? EPI_ANY : ((r) ? EPI_R : 0) | ((row_bias) ? EPI_RB : 0))

/* Runs CALL with EPI_NOW the compile-time constant equal to epi. */
#define WITH_EPI_INSTANCE(epi, CALL)                                           \
    do {                                                                       \
        if ((epi) == 0) { enum { EPI_NOW = 0 }; CALL; }                        \
        else if ((epi) == EPI_R) { enum { EPI_NOW = EPI_R }; CALL; }           \
        else if ((epi) == EPI_RB) { enum { EPI_NOW = EPI_RB }; CALL; }         \
        else if ((epi) == (EPI_R | EPI_RB)) {                                  \
            enum { EPI_NOW = EPI_R | EPI_RB };                                 \
            CALL;                                                              \
        } else { enum { EPI_NOW = EPI_ANY }; CALL; }                           \
    } while (0)

/* The operands a panel's epilogue instance rules out, and whether it may
 * stream (declares `stream`). */
#define EPI_OPERANDS(epi)                                                      \
    if (!((epi) & EPI_ANY)) {                                                  \
        if (!((epi) & EPI_R)) r = NULL;                                        \
        if (!((epi) & EPI_RB)) row_bias = NULL;                                \
    }                                                                          \
    const int stream = (epi) & EPI_ANY ? p->stream : 0

#endif
