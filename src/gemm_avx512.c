/* AVX-512F kernels: 7x32 float (14 zmm accumulators, two B loads and one
 * broadcast per k), 7x16 double.  That uses 17 of the 32 zmm registers in
 * the k loop, so the accumulators never spill.
 *
 * Compiled without -mavx512f: each function carries target("avx512f,fma")
 * so the extension still imports on CPUs without AVX-512, where dispatch
 * never calls these.  GCC does not inline across differing targets, so
 * every helper carries the same attribute.
 *
 * Same shape as gemm_avx2.c (row count as a compile-time constant,
 * instantiated for 7, 4, 2 and 1 rows; epilogue instances; C and residual
 * lines asked for at each panel's start; lines asked ahead; streamed
 * stores), with narrower classes for a last panel (see PANEL_CLASS), and
 * masked loads and stores for ragged column counts: masked-off lanes are
 * neither read nor written (and cannot fault), so nothing past nc is
 * touched and no copy through memory is needed. */
#include "pw_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,fma")))
#define INLINE static inline __attribute__((always_inline, target("avx512f,fma")))
#define NOINLINE static __attribute__((noinline, target("avx512f,fma")))

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

#include "pw_tile_parts.h"

/* ---------------------------------------------------------------- float */

/* A panel's width class, fixed at compile time: 32 columns in two zmm
 * vectors, 24 in a zmm and a ymm, 16 in one zmm, 8 in one ymm.  A last
 * panel takes the narrowest class that holds its columns, so C_out % 32 ==
 * 24 (MobileNet's 24-channel layers, a quarter of their FMAs on padding at
 * full width) and NCHW planes' short tails (14x14 leaves 4 pixels, 7x7
 * leaves 17) do not pay for padding.  The arithmetic per element is the same FMA
 * chain in every class, so results do not depend on it. */
#define PANEL_CLASS(ncols) ((ncols) > 24 ? 32 : (ncols) > 16 ? 24 : (ncols) > 8 ? 16 : 8)

/* The first n (n <= 8) floats at p in a ymm, the rest zero, through a zmm
 * mask (AVX-512F alone has no ymm masked load). */
INLINE __m256 load_upto8_f32(const float *p, ptrdiff_t n)
{
    return _mm512_castps512_ps256(_mm512_maskz_loadu_ps(mask16(n), p));
}

INLINE void store_upto8_f32(float *p, __m256 v, ptrdiff_t n)
{
    _mm512_mask_storeu_ps(p, mask16(n), _mm512_castps256_ps512(v));
}

/* One row's epilogue.  z0 holds columns 0-15 (W >= 16), z1 16-31 (W == 32),
 * y 16-23 (W == 24) or 0-7 (W == 8). */
INLINE void epilogue_f32(const int W, float *c, const float *r, __m512 z0, __m512 z1,
                         __m256 y, size_t ncols, const float *row_bias_i, int clamp,
                         __m512 lo, __m512 hi, int stream)
{
    const __m256 ylo = _mm512_castps512_ps256(lo), yhi = _mm512_castps512_ps256(hi);
    if (row_bias_i) {
        const __m512 rb = _mm512_set1_ps(*row_bias_i);
        z0 = _mm512_add_ps(z0, rb);
        z1 = _mm512_add_ps(z1, rb);
        y = _mm256_add_ps(y, _mm512_castps512_ps256(rb));
    }
    const ptrdiff_t n = (ptrdiff_t)ncols;
    const int whole = ncols == (size_t)W;
    if (r) {
        if (W == 8) {
            y = _mm256_add_ps(y, whole ? _mm256_loadu_ps(r) : load_upto8_f32(r, n));
        } else {
            z0 = _mm512_add_ps(z0, W > 16 || whole ? _mm512_loadu_ps(r)
                                                   : _mm512_maskz_loadu_ps(mask16(n), r));
            if (W == 32)
                z1 = _mm512_add_ps(z1, whole ? _mm512_loadu_ps(r + 16)
                                             : _mm512_maskz_loadu_ps(mask16(n - 16), r + 16));
            if (W == 24)
                y = _mm256_add_ps(y, whole ? _mm256_loadu_ps(r + 16)
                                           : load_upto8_f32(r + 16, n - 16));
        }
    }
    if (clamp) {
        /* min/max return their second operand when one is NaN, so the
         * accumulator goes second to keep a NaN result. */
        z0 = _mm512_max_ps(lo, _mm512_min_ps(hi, z0));
        z1 = _mm512_max_ps(lo, _mm512_min_ps(hi, z1));
        y = _mm256_max_ps(ylo, _mm256_min_ps(yhi, y));
    }
    if (W == 8) {
        if (whole) _mm256_storeu_ps(c, y);
        else store_upto8_f32(c, y, n);
        return;
    }
    if (W == 32 && whole && stream && !((size_t)c & 63)) {
        _mm512_stream_ps(c, z0);
        _mm512_stream_ps(c + 16, z1);
        return;
    }
    if (W > 16 || whole) _mm512_storeu_ps(c, z0);
    else _mm512_mask_storeu_ps(c, mask16(n), z0);
    if (W == 32) {
        if (whole) _mm512_storeu_ps(c + 16, z1);
        else _mm512_mask_storeu_ps(c + 16, mask16(n - 16), z1);
    }
    if (W == 24) {
        if (whole) _mm256_storeu_ps(c + 16, y);
        else store_upto8_f32(c + 16, y, n - 16);
    }
}

/* One panel of W-class width (see PANEL_CLASS) for MRC rows. */
INLINE void panel_f32(const size_t MRC, const int W, const int epi, size_t mr,
                      const float *const *rows, const float *panel,
                      float *c, const float *r, size_t ncols,
                      const float *row_bias, const pw_gemm_params *p)
{
    /* epi (see EPI_ANY): unless EPI_ANY, known at compile time, so the
     * epilogue carries no tests for what it rules out. */
    EPI_OPERANDS(epi);
    __m512 z0[7], z1[7];
    __m256 y[7];
    /* Direct B (read in place, rows b_ks apart) has no head row. */
    const int direct = p->b_ks != 0;
    const ptrdiff_t bstep = direct ? p->b_ks : 32;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 h0 = direct || W == 8 ? zero : _mm512_loadu_ps(panel);
    const __m512 h1 = direct || W != 32 ? zero : _mm512_loadu_ps(panel + 16);
    const __m256 hy = direct || (W != 24 && W != 8) ? _mm256_setzero_ps()
                      : _mm256_loadu_ps(panel + (W == 24 ? 16 : 0));
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) { z0[i] = h0; z1[i] = h1; y[i] = hy; }
    const float *b = direct ? panel : panel + 32;
    const size_t kc = p->kc;
    /* Ask for the C (and residual) lines now so the epilogue at the end of
     * this panel rarely waits on a fill; not when C is streamed, which
     * never reads its lines. */
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr) {
            if (!stream) __builtin_prefetch(c + i * p->c_rs, 1, 3);
            if (r && r != c) __builtin_prefetch(r + i * p->r_rs, 0, 3);
        }
    }
    const ptrdiff_t aks = p->a_ks ? p->a_ks : 1;
    /* The k loops run four steps per iteration and the unit A stride keeps
     * one shared index (see gemm_avx2.c for the measurements behind both). */
#define K_STEP_m512(A_AT)                                                     \
    do {                                                                      \
        const __m512 b0 = W >= 16 ? _mm512_loadu_ps(b) : zero;                \
        const __m512 b1 = W == 32 ? _mm512_loadu_ps(b + 16) : zero;           \
        const __m256 by = W == 24 ? _mm256_loadu_ps(b + 16)                   \
                          : W == 8 ? _mm256_loadu_ps(b) : _mm256_setzero_ps(); \
        UNROLL_ROWS                                                           \
        for (size_t i = 0; i < MRC; i++) {                                    \
            if (W == 8) {                                                     \
                y[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(A_AT), by, y[i]);  \
            } else {                                                          \
                const __m512 a = _mm512_set1_ps(*(A_AT));                     \
                z0[i] = _mm512_fmadd_ps(a, b0, z0[i]);                        \
                if (W == 32) z1[i] = _mm512_fmadd_ps(a, b1, z1[i]);           \
                if (W == 24)                                                  \
                    y[i] = _mm256_fmadd_ps(_mm512_castps512_ps256(a), by, y[i]); \
            }                                                                 \
        }                                                                     \
    } while (0)
    if (aks == 1) {
        _Pragma("GCC unroll 4")
        for (size_t k = 0; k < kc; k++, b += bstep)
            K_STEP_m512(rows[i] + k);
    } else if (p->a_rs == 1 && mr == MRC) {
        /* Grad weight's A: a tile's rows are adjacent channels of one
         * pixel and k steps to the next pixel, so one pointer serves every
         * row at a constant offset. */
        const float *ap = rows[0];
        _Pragma("GCC unroll 4")
        for (size_t k = 0; k < kc; k++, b += bstep, ap += aks)
            K_STEP_m512(ap + i);
    } else {
        for (size_t k = 0, ak = 0; k < kc; k++, b += bstep, ak += (size_t)aks)
            K_STEP_m512(rows[i] + ak);
    }
#undef K_STEP_m512
    const __m512 lo = _mm512_set1_ps((float)p->lo), hi = _mm512_set1_ps((float)p->hi);
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr)
            epilogue_f32(W, c + i * p->c_rs, r ? r + i * p->r_rs : NULL, z0[i], z1[i],
                         y[i], ncols, row_bias ? row_bias + i : NULL, p->clamp, lo, hi,
                         stream);
    }
}

INLINE void tile_f32(const size_t MRC, const int AHEAD, size_t mr, size_t nc,
                     const float *a, const float *packed, float *c,
                     const float *row_bias, const float *r, const pw_gemm_params *p)
{
    /* Rows past mr alias the last real row: they are computed (the tile
     * shape is fixed) but never stored, and read only valid memory. */
    const float *rows[7];
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++)
        rows[i] = a + (i < mr ? i : mr - 1) * p->a_rs;
    const int epi = EPI_OF(p, r, row_bias);
    ahead_lines ah;
    if (AHEAD) ah = ahead_begin(p, (nc + 31) / 32);
    for (size_t j0 = 0; j0 < nc; j0 += 32) {
        const size_t ncols = nc - j0 < 32 ? nc - j0 : 32;
        if (AHEAD) ahead_panel(&ah);
        const float *panel = packed + (j0 / 32) * p->panel_stride;
        const float *rj = r ? r + j0 : NULL;
        switch (PANEL_CLASS(ncols)) {
        case 32:
            WITH_EPI_INSTANCE(epi, panel_f32(MRC, 32, EPI_NOW, mr, rows, panel, c + j0,
                                             rj, ncols, row_bias, p));
            break;
        case 24:
            WITH_EPI_INSTANCE(epi, panel_f32(MRC, 24, EPI_NOW, mr, rows, panel, c + j0,
                                             rj, ncols, row_bias, p));
            break;
        case 16:
            WITH_EPI_INSTANCE(epi, panel_f32(MRC, 16, EPI_NOW, mr, rows, panel, c + j0,
                                             rj, ncols, row_bias, p));
            break;
        default:
            panel_f32(MRC, 8, EPI_ANY, mr, rows, panel, c + j0, rj, ncols, row_bias, p);
        }
    }
}

GEMM_ENTRY(NOINLINE, gemm_f32_ahead, float, tile_f32, 1, 7)
GEMM_ENTRY(INLINE, gemm_f32_plain, float, tile_f32, 0, 7)

TARGET void pw_gemm_f32_avx512(size_t mr, size_t nc, const float *a,
                               const float *packed, float *c,
                               const float *row_bias, const float *r,
                               const pw_gemm_params *p)
{
    if (p->ahead) gemm_f32_ahead(mr, nc, a, packed, c, row_bias, r, p);
    else gemm_f32_plain(mr, nc, a, packed, c, row_bias, r, p);
}

/* --------------------------------------------------------------- double */

/* The float kernel's structure at half the lanes: classes of 16 columns
 * (two zmm), 12 (a zmm and a ymm), 8 (one zmm) and 4 (one ymm). */
#define PANEL_CLASS_F64(ncols) ((ncols) > 12 ? 16 : (ncols) > 8 ? 12 : (ncols) > 4 ? 8 : 4)

INLINE __m256d load_upto4_f64(const double *p, ptrdiff_t n)
{
    return _mm512_castpd512_pd256(_mm512_maskz_loadu_pd(mask8(n), p));
}

INLINE void store_upto4_f64(double *p, __m256d v, ptrdiff_t n)
{
    _mm512_mask_storeu_pd(p, mask8(n), _mm512_castpd256_pd512(v));
}

/* z0 holds columns 0-7 (W >= 8), z1 8-15 (W == 16), y 8-11 (W == 12) or
 * 0-3 (W == 4). */
INLINE void epilogue_f64(const int W, double *c, const double *r, __m512d z0, __m512d z1,
                         __m256d y, size_t ncols, const double *row_bias_i, int clamp,
                         __m512d lo, __m512d hi, int stream)
{
    const __m256d ylo = _mm512_castpd512_pd256(lo), yhi = _mm512_castpd512_pd256(hi);
    if (row_bias_i) {
        const __m512d rb = _mm512_set1_pd(*row_bias_i);
        z0 = _mm512_add_pd(z0, rb);
        z1 = _mm512_add_pd(z1, rb);
        y = _mm256_add_pd(y, _mm512_castpd512_pd256(rb));
    }
    const ptrdiff_t n = (ptrdiff_t)ncols;
    const int whole = ncols == (size_t)W;
    if (r) {
        if (W == 4) {
            y = _mm256_add_pd(y, whole ? _mm256_loadu_pd(r) : load_upto4_f64(r, n));
        } else {
            z0 = _mm512_add_pd(z0, W > 8 || whole ? _mm512_loadu_pd(r)
                                                  : _mm512_maskz_loadu_pd(mask8(n), r));
            if (W == 16)
                z1 = _mm512_add_pd(z1, whole ? _mm512_loadu_pd(r + 8)
                                             : _mm512_maskz_loadu_pd(mask8(n - 8), r + 8));
            if (W == 12)
                y = _mm256_add_pd(y, whole ? _mm256_loadu_pd(r + 8)
                                           : load_upto4_f64(r + 8, n - 8));
        }
    }
    if (clamp) {
        z0 = _mm512_max_pd(lo, _mm512_min_pd(hi, z0));
        z1 = _mm512_max_pd(lo, _mm512_min_pd(hi, z1));
        y = _mm256_max_pd(ylo, _mm256_min_pd(yhi, y));
    }
    if (W == 4) {
        if (whole) _mm256_storeu_pd(c, y);
        else store_upto4_f64(c, y, n);
        return;
    }
    if (W == 16 && whole && stream && !((size_t)c & 63)) {
        _mm512_stream_pd(c, z0);
        _mm512_stream_pd(c + 8, z1);
        return;
    }
    if (W > 8 || whole) _mm512_storeu_pd(c, z0);
    else _mm512_mask_storeu_pd(c, mask8(n), z0);
    if (W == 16) {
        if (whole) _mm512_storeu_pd(c + 8, z1);
        else _mm512_mask_storeu_pd(c + 8, mask8(n - 8), z1);
    }
    if (W == 12) {
        if (whole) _mm256_storeu_pd(c + 8, y);
        else store_upto4_f64(c + 8, y, n - 8);
    }
}

INLINE void panel_f64(const size_t MRC, const int W, const int epi, size_t mr,
                      const double *const *rows, const double *panel,
                      double *c, const double *r, size_t ncols,
                      const double *row_bias, const pw_gemm_params *p)
{
    EPI_OPERANDS(epi);
    __m512d z0[7], z1[7];
    __m256d y[7];
    const int direct = p->b_ks != 0;
    const ptrdiff_t bstep = direct ? p->b_ks : 16;
    const __m512d zero = _mm512_setzero_pd();
    const __m512d h0 = direct || W == 4 ? zero : _mm512_loadu_pd(panel);
    const __m512d h1 = direct || W != 16 ? zero : _mm512_loadu_pd(panel + 8);
    const __m256d hy = direct || (W != 12 && W != 4) ? _mm256_setzero_pd()
                       : _mm256_loadu_pd(panel + (W == 12 ? 8 : 0));
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) { z0[i] = h0; z1[i] = h1; y[i] = hy; }
    const double *b = direct ? panel : panel + 16;
    const size_t kc = p->kc;
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr) {
            if (!stream) __builtin_prefetch(c + i * p->c_rs, 1, 3);
            if (r && r != c) __builtin_prefetch(r + i * p->r_rs, 0, 3);
        }
    }
    const ptrdiff_t aks = p->a_ks ? p->a_ks : 1;
#define K_STEP_m512d(A_AT)                                                    \
    do {                                                                      \
        const __m512d b0 = W >= 8 ? _mm512_loadu_pd(b) : zero;               \
        const __m512d b1 = W == 16 ? _mm512_loadu_pd(b + 8) : zero;          \
        const __m256d by = W == 12 ? _mm256_loadu_pd(b + 8)                  \
                           : W == 4 ? _mm256_loadu_pd(b) : _mm256_setzero_pd(); \
        UNROLL_ROWS                                                           \
        for (size_t i = 0; i < MRC; i++) {                                    \
            if (W == 4) {                                                     \
                y[i] = _mm256_fmadd_pd(_mm256_broadcast_sd(A_AT), by, y[i]);  \
            } else {                                                          \
                const __m512d a = _mm512_set1_pd(*(A_AT));                    \
                z0[i] = _mm512_fmadd_pd(a, b0, z0[i]);                        \
                if (W == 16) z1[i] = _mm512_fmadd_pd(a, b1, z1[i]);           \
                if (W == 12)                                                  \
                    y[i] = _mm256_fmadd_pd(_mm512_castpd512_pd256(a), by, y[i]); \
            }                                                                 \
        }                                                                     \
    } while (0)
    if (aks == 1) {
        for (size_t k = 0; k < kc; k++, b += bstep)
            K_STEP_m512d(rows[i] + k);
    } else if (p->a_rs == 1 && mr == MRC) {
        const double *ap = rows[0];
        for (size_t k = 0; k < kc; k++, b += bstep, ap += aks)
            K_STEP_m512d(ap + i);
    } else {
        for (size_t k = 0, ak = 0; k < kc; k++, b += bstep, ak += (size_t)aks)
            K_STEP_m512d(rows[i] + ak);
    }
#undef K_STEP_m512d
    const __m512d lo = _mm512_set1_pd(p->lo), hi = _mm512_set1_pd(p->hi);
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr)
            epilogue_f64(W, c + i * p->c_rs, r ? r + i * p->r_rs : NULL, z0[i], z1[i],
                         y[i], ncols, row_bias ? row_bias + i : NULL, p->clamp, lo, hi,
                         stream);
    }
}

INLINE void tile_f64(const size_t MRC, const int AHEAD, size_t mr, size_t nc,
                     const double *a, const double *packed, double *c,
                     const double *row_bias, const double *r, const pw_gemm_params *p)
{
    const double *rows[7];
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++)
        rows[i] = a + (i < mr ? i : mr - 1) * p->a_rs;
    const int epi = EPI_OF(p, r, row_bias);
    ahead_lines ah;
    if (AHEAD) ah = ahead_begin(p, (nc + 15) / 16);
    for (size_t j0 = 0; j0 < nc; j0 += 16) {
        const size_t ncols = nc - j0 < 16 ? nc - j0 : 16;
        if (AHEAD) ahead_panel(&ah);
        const double *panel = packed + (j0 / 16) * p->panel_stride;
        const double *rj = r ? r + j0 : NULL;
        switch (PANEL_CLASS_F64(ncols)) {
        case 16:
            WITH_EPI_INSTANCE(epi, panel_f64(MRC, 16, EPI_NOW, mr, rows, panel, c + j0,
                                             rj, ncols, row_bias, p));
            break;
        case 12:
            WITH_EPI_INSTANCE(epi, panel_f64(MRC, 12, EPI_NOW, mr, rows, panel, c + j0,
                                             rj, ncols, row_bias, p));
            break;
        case 8:
            panel_f64(MRC, 8, EPI_ANY, mr, rows, panel, c + j0, rj, ncols, row_bias, p);
            break;
        default:
            panel_f64(MRC, 4, EPI_ANY, mr, rows, panel, c + j0, rj, ncols, row_bias, p);
        }
    }
}

GEMM_ENTRY(NOINLINE, gemm_f64_ahead, double, tile_f64, 1, 7)
GEMM_ENTRY(INLINE, gemm_f64_plain, double, tile_f64, 0, 7)

TARGET void pw_gemm_f64_avx512(size_t mr, size_t nc, const double *a,
                               const double *packed, double *c,
                               const double *row_bias, const double *r,
                               const pw_gemm_params *p)
{
    if (p->ahead) gemm_f64_ahead(mr, nc, a, packed, c, row_bias, r, p);
    else gemm_f64_plain(mr, nc, a, packed, c, row_bias, r, p);
}

#else
typedef int pw_avx512_unused;
#endif
