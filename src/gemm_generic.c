/* Portable kernel: plain C that any compiler vectorises a little.  It is the
 * fallback on unknown CPUs and the path PWCONV_ISA=generic forces, so it
 * follows the contract of pw_kernels.h exactly, remainders included. */
#include "pw_kernels.h"

#define MR PW_MR_GENERIC
#define NR PW_NR_GENERIC

#define DEFINE_GENERIC_GEMM(NAME, T)                                           \
void NAME(size_t mr, size_t nc, const T *a, const T *packed, T *c,             \
          const T *row_bias, const T *r, const pw_gemm_params *p)              \
{                                                                              \
    const size_t kc = p->kc;                                                   \
    const ptrdiff_t aks = p->a_ks ? p->a_ks : 1;                               \
    const T lo = (T)p->lo, hi = (T)p->hi;                                      \
    const T *rows[MR];                                                         \
    /* Rows past mr alias the last real row so the k loop has no branches. */ \
    for (size_t i = 0; i < MR; i++)                                            \
        rows[i] = a + (i < mr ? i : mr - 1) * p->a_rs;                         \
    for (size_t j0 = 0; j0 < nc; j0 += NR) {                                   \
        const T *panel = packed + (j0 / NR) * p->panel_stride;                 \
        /* Direct B has no head row: start from zero, rows b_ks apart. */    \
        const int direct = p->b_ks != 0;                                       \
        const ptrdiff_t bstep = direct ? p->b_ks : NR;                         \
        T acc[MR][NR];                                                         \
        for (size_t i = 0; i < MR; i++)                                        \
            for (size_t j = 0; j < NR; j++)                                    \
                acc[i][j] = direct ? (T)0 : panel[j];                          \
        const T *b = direct ? panel : panel + NR;                              \
        for (size_t k = 0; k < kc; k++, b += bstep)                            \
            for (size_t i = 0; i < MR; i++) {                                  \
                const T av = rows[i][(ptrdiff_t)k * aks];                      \
                for (size_t j = 0; j < NR; j++)                                \
                    acc[i][j] += av * b[j];                                    \
            }                                                                  \
        const size_t ncols = nc - j0 < NR ? nc - j0 : NR;                      \
        for (size_t i = 0; i < mr; i++) {                                      \
            T *crow = c + i * p->c_rs + j0;                                    \
            const T *rrow = r ? r + i * p->r_rs + j0 : NULL;                   \
            for (size_t j = 0; j < ncols; j++) {                               \
                T v = acc[i][j];                                               \
                if (row_bias) v += row_bias[i];                                \
                if (rrow) v += rrow[j];                                        \
                if (p->clamp) {                                                \
                    v = v < lo ? lo : v;                                       \
                    v = v > hi ? hi : v;                                       \
                }                                                              \
                crow[j] = v;                                                   \
            }                                                                  \
        }                                                                      \
    }                                                                          \
}

DEFINE_GENERIC_GEMM(pw_gemm_f32_generic, float)
DEFINE_GENERIC_GEMM(pw_gemm_f64_generic, double)
