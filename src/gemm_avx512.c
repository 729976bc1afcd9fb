/* AVX-512F kernels: 7x32 float (14 zmm accumulators, two B loads and one
 * broadcast per k), 7x16 double.  That uses 17 of the 32 zmm registers in
 * the k loop, so the accumulators never spill.
 *
 * Compiled without -mavx512f: each function carries target("avx512f") so
 * the extension still imports on CPUs without AVX-512, where dispatch never
 * calls these.  GCC does not inline across differing targets, so every
 * helper carries the same attribute.
 *
 * Same shape as gemm_avx2.c (row count as a compile-time constant,
 * instantiated for 7, 4, 2 and 1 rows; a half-width path for a last panel
 * with at most half its columns real), except that ragged column counts use
 * masked loads and stores instead of a stack tile: masked-off lanes are
 * neither read nor written (and cannot fault), so nothing past nc is
 * touched and no copy through memory is needed. */
#include "pw_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f")))
#define INLINE static inline __attribute__((always_inline, target("avx512f")))

/* Row loops must be fully unrolled or the accumulator arrays live on the
 * stack.  GCC needs the pragma (an upper bound on the trip count).  Clang
 * fully unrolls these constant-count loops on its own, while its reading of
 * the same pragma (or of a count-free "unroll") left some instantiations
 * partly rolled with accumulators in memory, so it gets none. */
#if defined(__clang__)
#define UNROLL_ROWS
#else
#define UNROLL_ROWS _Pragma("GCC unroll 7")
#endif

/* Lanes [0, n) of one vector; n may exceed the lane count (all set) or be
 * 0 or negative (none set), which lets the second vector of a panel take
 * ncols - lanes without a separate branch. */
INLINE __mmask16 mask16(ptrdiff_t n)
{
    if (n <= 0) return 0;
    if (n >= 16) return (__mmask16)0xFFFF;
    return (__mmask16)((1u << n) - 1u);
}

INLINE __mmask8 mask8(ptrdiff_t n)
{
    if (n <= 0) return 0;
    if (n >= 8) return (__mmask8)0xFF;
    return (__mmask8)((1u << n) - 1u);
}

/* ---------------------------------------------------------------- float */

/* `half`: only v0 is live (the panel has at most 16 real columns). */
INLINE void epilogue_f32(const int half, float *c, const float *r,
                         __m512 v0, __m512 v1, size_t ncols,
                         const float *row_bias_i, int clamp,
                         __m512 lo, __m512 hi)
{
    if (row_bias_i) {
        const __m512 rb = _mm512_set1_ps(*row_bias_i);
        v0 = _mm512_add_ps(v0, rb);
        if (!half) v1 = _mm512_add_ps(v1, rb);
    }
    if (ncols == (half ? 16u : 32u)) {
        if (r) {
            v0 = _mm512_add_ps(v0, _mm512_loadu_ps(r));
            if (!half) v1 = _mm512_add_ps(v1, _mm512_loadu_ps(r + 16));
        }
        if (clamp) {
            /* min/max return their second operand when one is NaN, so the
             * accumulator goes second to keep a NaN result. */
            v0 = _mm512_max_ps(lo, _mm512_min_ps(hi, v0));
            if (!half) v1 = _mm512_max_ps(lo, _mm512_min_ps(hi, v1));
        }
        _mm512_storeu_ps(c, v0);
        if (!half) _mm512_storeu_ps(c + 16, v1);
        return;
    }
    const __mmask16 m0 = mask16((ptrdiff_t)ncols);
    const __mmask16 m1 = half ? 0 : mask16((ptrdiff_t)ncols - 16);
    if (r) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, r));
        if (!half) v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, r + 16));
    }
    if (clamp) {
        v0 = _mm512_max_ps(lo, _mm512_min_ps(hi, v0));
        if (!half) v1 = _mm512_max_ps(lo, _mm512_min_ps(hi, v1));
    }
    _mm512_mask_storeu_ps(c, m0, v0);
    if (!half) _mm512_mask_storeu_ps(c + 16, m1, v1);
}

/* One panel of up to 32 columns for MRC rows.  `half` selects the
 * 16-column variant used when at most 16 real columns remain: it does half
 * the FMAs instead of computing on 16 columns of zero padding. */
INLINE void panel_f32(const size_t MRC, const int half, size_t mr,
                      const float *const *rows, const float *panel,
                      float *c, const float *r, size_t ncols,
                      const float *row_bias, const pw_gemm_params *p)
{
    __m512 acc0[7], acc1[7];
    /* Direct B (read in place, rows b_ks apart) has no head row. */
    const int direct = p->b_ks != 0;
    const ptrdiff_t bstep = direct ? p->b_ks : 32;
    const __m512 h0 = direct ? _mm512_setzero_ps() : _mm512_loadu_ps(panel);
    const __m512 h1 = half || direct ? _mm512_setzero_ps() : _mm512_loadu_ps(panel + 16);
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) { acc0[i] = h0; acc1[i] = h1; }
    const float *b = direct ? panel : panel + 32;
    const size_t kc = p->kc;
    /* A's k stride: 1 normally, C_out when grad weight reads grad output
     * in place (one pixel's channels are then the broadcast rows). */
    const ptrdiff_t aks = p->a_ks ? p->a_ks : 1;
    ptrdiff_t ak = 0;
    for (size_t k = 0; k < kc; k++, b += bstep, ak += aks) {
        const __m512 b0 = _mm512_loadu_ps(b);
        if (half) {
            UNROLL_ROWS
            for (size_t i = 0; i < MRC; i++)
                acc0[i] = _mm512_fmadd_ps(_mm512_set1_ps(rows[i][ak]), b0, acc0[i]);
        } else {
            const __m512 b1 = _mm512_loadu_ps(b + 16);
            UNROLL_ROWS
            for (size_t i = 0; i < MRC; i++) {
                const __m512 a = _mm512_set1_ps(rows[i][ak]);
                acc0[i] = _mm512_fmadd_ps(a, b0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(a, b1, acc1[i]);
            }
        }
    }
    const __m512 lo = _mm512_set1_ps((float)p->lo), hi = _mm512_set1_ps((float)p->hi);
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr)
            epilogue_f32(half, c + i * p->c_rs, r ? r + i * p->r_rs : NULL,
                         acc0[i], acc1[i], ncols,
                         row_bias ? row_bias + i : NULL, p->clamp, lo, hi);
    }
}

INLINE void tile_f32(const size_t MRC, size_t mr, size_t nc, const float *a,
                     const float *packed, float *c, const float *row_bias,
                     const float *r, const pw_gemm_params *p)
{
    /* Rows past mr alias the last real row: they are computed (the tile
     * shape is fixed) but never stored, and read only valid memory. */
    const float *rows[7];
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++)
        rows[i] = a + (i < mr ? i : mr - 1) * p->a_rs;
    for (size_t j0 = 0; j0 < nc; j0 += 32) {
        const size_t ncols = nc - j0 < 32 ? nc - j0 : 32;
        const float *panel = packed + (j0 / 32) * p->panel_stride;
        const float *rj = r ? r + j0 : NULL;
        if (ncols <= 16)
            panel_f32(MRC, 1, mr, rows, panel, c + j0, rj, ncols, row_bias, p);
        else
            panel_f32(MRC, 0, mr, rows, panel, c + j0, rj, ncols, row_bias, p);
    }
}

TARGET void pw_gemm_f32_avx512(size_t mr, size_t nc, const float *a,
                               const float *packed, float *c,
                               const float *row_bias, const float *r,
                               const pw_gemm_params *p)
{
    if (mr > 4) tile_f32(7, mr, nc, a, packed, c, row_bias, r, p);
    else if (mr > 2) tile_f32(4, mr, nc, a, packed, c, row_bias, r, p);
    else if (mr == 2) tile_f32(2, mr, nc, a, packed, c, row_bias, r, p);
    else tile_f32(1, mr, nc, a, packed, c, row_bias, r, p);
}

/* --------------------------------------------------------------- double */

INLINE void epilogue_f64(const int half, double *c, const double *r,
                         __m512d v0, __m512d v1, size_t ncols,
                         const double *row_bias_i, int clamp,
                         __m512d lo, __m512d hi)
{
    if (row_bias_i) {
        const __m512d rb = _mm512_set1_pd(*row_bias_i);
        v0 = _mm512_add_pd(v0, rb);
        if (!half) v1 = _mm512_add_pd(v1, rb);
    }
    if (ncols == (half ? 8u : 16u)) {
        if (r) {
            v0 = _mm512_add_pd(v0, _mm512_loadu_pd(r));
            if (!half) v1 = _mm512_add_pd(v1, _mm512_loadu_pd(r + 8));
        }
        if (clamp) {
            v0 = _mm512_max_pd(lo, _mm512_min_pd(hi, v0));
            if (!half) v1 = _mm512_max_pd(lo, _mm512_min_pd(hi, v1));
        }
        _mm512_storeu_pd(c, v0);
        if (!half) _mm512_storeu_pd(c + 8, v1);
        return;
    }
    const __mmask8 m0 = mask8((ptrdiff_t)ncols);
    const __mmask8 m1 = half ? 0 : mask8((ptrdiff_t)ncols - 8);
    if (r) {
        v0 = _mm512_add_pd(v0, _mm512_maskz_loadu_pd(m0, r));
        if (!half) v1 = _mm512_add_pd(v1, _mm512_maskz_loadu_pd(m1, r + 8));
    }
    if (clamp) {
        v0 = _mm512_max_pd(lo, _mm512_min_pd(hi, v0));
        if (!half) v1 = _mm512_max_pd(lo, _mm512_min_pd(hi, v1));
    }
    _mm512_mask_storeu_pd(c, m0, v0);
    if (!half) _mm512_mask_storeu_pd(c + 8, m1, v1);
}

INLINE void panel_f64(const size_t MRC, const int half, size_t mr,
                      const double *const *rows, const double *panel,
                      double *c, const double *r, size_t ncols,
                      const double *row_bias, const pw_gemm_params *p)
{
    __m512d acc0[7], acc1[7];
    const int direct = p->b_ks != 0;
    const ptrdiff_t bstep = direct ? p->b_ks : 16;
    const __m512d h0 = direct ? _mm512_setzero_pd() : _mm512_loadu_pd(panel);
    const __m512d h1 = half || direct ? _mm512_setzero_pd() : _mm512_loadu_pd(panel + 8);
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) { acc0[i] = h0; acc1[i] = h1; }
    const double *b = direct ? panel : panel + 16;
    const size_t kc = p->kc;
    const ptrdiff_t aks = p->a_ks ? p->a_ks : 1;
    ptrdiff_t ak = 0;
    for (size_t k = 0; k < kc; k++, b += bstep, ak += aks) {
        const __m512d b0 = _mm512_loadu_pd(b);
        if (half) {
            UNROLL_ROWS
            for (size_t i = 0; i < MRC; i++)
                acc0[i] = _mm512_fmadd_pd(_mm512_set1_pd(rows[i][ak]), b0, acc0[i]);
        } else {
            const __m512d b1 = _mm512_loadu_pd(b + 8);
            UNROLL_ROWS
            for (size_t i = 0; i < MRC; i++) {
                const __m512d a = _mm512_set1_pd(rows[i][ak]);
                acc0[i] = _mm512_fmadd_pd(a, b0, acc0[i]);
                acc1[i] = _mm512_fmadd_pd(a, b1, acc1[i]);
            }
        }
    }
    const __m512d lo = _mm512_set1_pd(p->lo), hi = _mm512_set1_pd(p->hi);
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr)
            epilogue_f64(half, c + i * p->c_rs, r ? r + i * p->r_rs : NULL,
                         acc0[i], acc1[i], ncols,
                         row_bias ? row_bias + i : NULL, p->clamp, lo, hi);
    }
}

INLINE void tile_f64(const size_t MRC, size_t mr, size_t nc, const double *a,
                     const double *packed, double *c, const double *row_bias,
                     const double *r, const pw_gemm_params *p)
{
    const double *rows[7];
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++)
        rows[i] = a + (i < mr ? i : mr - 1) * p->a_rs;
    for (size_t j0 = 0; j0 < nc; j0 += 16) {
        const size_t ncols = nc - j0 < 16 ? nc - j0 : 16;
        const double *panel = packed + (j0 / 16) * p->panel_stride;
        const double *rj = r ? r + j0 : NULL;
        if (ncols <= 8)
            panel_f64(MRC, 1, mr, rows, panel, c + j0, rj, ncols, row_bias, p);
        else
            panel_f64(MRC, 0, mr, rows, panel, c + j0, rj, ncols, row_bias, p);
    }
}

TARGET void pw_gemm_f64_avx512(size_t mr, size_t nc, const double *a,
                               const double *packed, double *c,
                               const double *row_bias, const double *r,
                               const pw_gemm_params *p)
{
    if (mr > 4) tile_f64(7, mr, nc, a, packed, c, row_bias, r, p);
    else if (mr > 2) tile_f64(4, mr, nc, a, packed, c, row_bias, r, p);
    else if (mr == 2) tile_f64(2, mr, nc, a, packed, c, row_bias, r, p);
    else tile_f64(1, mr, nc, a, packed, c, row_bias, r, p);
}

#else
typedef int pw_avx512_unused;
#endif
