/* AVX2 + FMA kernels: 6x16 float (12 ymm accumulators, two B loads and one
 * broadcast per k), 6x8 double.  Compiled without -mavx2: each function
 * carries target("avx2,fma") so the extension still imports on older x86
 * CPUs, where dispatch.c never calls these.  GCC does not inline across
 * differing targets, so every helper here carries the same attribute.
 *
 * The tile body is one always_inline function taking the row count as a
 * compile-time constant; the entry point instantiates it for 6, 4, 2 and 1
 * rows so short-M remainders do not pay for six rows.  With the row count
 * constant, GCC unrolls the row loops and keeps the accumulator arrays in
 * registers. */
#include "pw_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline, target("avx2,fma")))
#define NOINLINE static __attribute__((noinline, target("avx2,fma")))

#include "pw_tile_parts.h"

/* ---------------------------------------------------------------- float */

/* The first n (n <= 4, or n <= 8 below) floats at p, the rest of the
 * vector zero; reads nothing past p + n. */
INLINE __m128 load_upto4_f32(const float *p, size_t n)
{
    if (n >= 4) return _mm_loadu_ps(p);
    if (n == 3)
        return _mm_movelh_ps(_mm_castpd_ps(_mm_load_sd((const double *)p)),
                             _mm_load_ss(p + 2));
    if (n == 2) return _mm_castpd_ps(_mm_load_sd((const double *)p));
    return n ? _mm_load_ss(p) : _mm_setzero_ps();
}

INLINE __m256 load_upto8_f32(const float *p, size_t n)
{
    if (n > 4)
        return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p)),
                                    load_upto4_f32(p + 4, n - 4), 1);
    return _mm256_insertf128_ps(_mm256_setzero_ps(), load_upto4_f32(p, n), 0);
}

/* Stores the first n (0 < n <= 8) lanes of v at p, nothing past p + n. */
INLINE void store_upto8_f32(float *p, __m256 v, size_t n)
{
    __m128 part = _mm256_castps256_ps128(v);
    if (n == 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    if (n >= 4) {
        _mm_storeu_ps(p, part);
        p += 4;
        n -= 4;
        part = _mm256_extractf128_ps(v, 1);
    }
    if (n >= 2) {
        _mm_store_sd((double *)p, _mm_castps_pd(part));
        p += 2;
        n -= 2;
        part = _mm_movehl_ps(part, part);
    }
    if (n) _mm_store_ss(p, part);
}

INLINE void epilogue_f32(float *c, const float *r, __m256 v0, __m256 v1,
                         size_t ncols, const float *row_bias_i, int clamp,
                         __m256 lo, __m256 hi, int stream)
{
    if (row_bias_i) {
        const __m256 rb = _mm256_broadcast_ss(row_bias_i);
        v0 = _mm256_add_ps(v0, rb);
        v1 = _mm256_add_ps(v1, rb);
    }
    if (ncols == 16) {
        if (r) {
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(r));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(r + 8));
        }
        if (clamp) {
            /* min/max return their second operand when one is NaN, so the
             * accumulator goes second to keep a NaN result. */
            v0 = _mm256_max_ps(lo, _mm256_min_ps(hi, v0));
            v1 = _mm256_max_ps(lo, _mm256_min_ps(hi, v1));
        }
        if (stream && !((size_t)c & 31)) {
            _mm256_stream_ps(c, v0);
            _mm256_stream_ps(c + 8, v1);
            return;
        }
        _mm256_storeu_ps(c, v0);
        _mm256_storeu_ps(c + 8, v1);
        return;
    }
    if (ncols == 8) {
        /* Half a panel, as C_out % 16 == 8 leaves (MobileNet's 24, 40...). */
        if (r) v0 = _mm256_add_ps(v0, _mm256_loadu_ps(r));
        if (clamp) v0 = _mm256_max_ps(lo, _mm256_min_ps(hi, v0));
        _mm256_storeu_ps(c, v0);
        return;
    }
    /* Column remainder: pieces of 8, 4, 2 and 1 columns, so no load or
     * store touches memory past the ncols real columns.  Through a stack
     * tile and memcpy instead, each row paid a library call and a failed
     * store forward: in-process A/B (both ways in one build behind a
     * switch, two runs), NHWC forward at 4x28x28, 1 thread, this way took
     * 0.77-0.85 of the time on 240->240 in 8 groups (30 channels a group;
     * backward 0.84-0.88), 0.73-0.78 on 384->96 in 8 (12 a group); 240->60
     * in 3, ungrouped 150->70 and NCHW layers even. */
    if (r) {
        __m256 r0, r1 = _mm256_setzero_ps();
        if (ncols > 8) {
            r0 = _mm256_loadu_ps(r);
            r1 = load_upto8_f32(r + 8, ncols - 8);
        } else {
            r0 = load_upto8_f32(r, ncols);
        }
        v0 = _mm256_add_ps(v0, r0);
        v1 = _mm256_add_ps(v1, r1);
    }
    if (clamp) {
        v0 = _mm256_max_ps(lo, _mm256_min_ps(hi, v0));
        v1 = _mm256_max_ps(lo, _mm256_min_ps(hi, v1));
    }
    if (ncols > 8) {
        _mm256_storeu_ps(c, v0);
        store_upto8_f32(c + 8, v1, ncols - 8);
    } else {
        store_upto8_f32(c, v0, ncols);
    }
}

/* One panel of up to 16 columns for MRC rows.  `half` selects the 8-column
 * variant used when at most 8 real columns remain (C_out % 16 == 8): it does
 * half the FMAs instead of computing on eight columns of zero padding. */
INLINE void panel_f32(const size_t MRC, const int half, const int epi, size_t mr,
                      const float *const *rows, const float *panel,
                      float *c, const float *r, size_t ncols,
                      const float *row_bias, const pw_gemm_params *p, float *copy)
{
    /* epi (see EPI_ANY): unless EPI_ANY, known at compile time, so the
     * epilogue carries no tests for what it rules out. */
    EPI_OPERANDS(epi);
    __m256 acc0[6], acc1[6];
    /* Direct B (read in place, rows b_ks apart) has no head row. */
    const int direct = p->b_ks != 0;
    const ptrdiff_t bstep = direct ? p->b_ks : 16;
    const __m256 h0 = direct ? _mm256_setzero_ps() : _mm256_loadu_ps(panel);
    const __m256 h1 = half || direct ? _mm256_setzero_ps() : _mm256_loadu_ps(panel + 8);
#pragma GCC unroll 6
    for (size_t i = 0; i < MRC; i++) { acc0[i] = h0; acc1[i] = h1; }
    const float *b = direct ? panel : panel + 16;
    const size_t kc = p->kc;
    /* Ask for the C (and residual) lines now so the epilogue at the end of
     * this panel rarely waits on a fill (worth 1-5% on a busy host); not
     * when C is streamed, which never reads its lines. */
#pragma GCC unroll 6
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr) {
            if (!stream) __builtin_prefetch(c + i * p->c_rs, 1, 3);
            if (r && r != c) __builtin_prefetch(r + i * p->r_rs, 0, 3);
        }
    }
    /* A's k stride: 1 normally, C_out when grad weight reads grad output
     * in place (one pixel's channels are then the broadcast rows). */
    const ptrdiff_t aks = p->a_ks ? p->a_ks : 1;
    /* The step over k is a macro argument so the common unit stride keeps
     * one shared index register instead of one pointer bump per row.  The
     * k loops run four steps per iteration, so the counter, pointer bumps
     * and branch are paid once per 48 FMAs rather than once per 12.
     * In-process A/B against the build without it (1 thread, float32,
     * the two builds called in random order per repeat), forward over
     * MobileNetV2 b1 and ResNet-50 shapes: NHWC 0.946-0.968 of the time in
     * three runs (2 steps 0.980, 8 steps 0.960 with twice the code), NCHW
     * 0.945-0.999; backward over MobileNetV2 shapes at b4 NHWC 0.917-0.987,
     * NCHW 0.995-0.999; grad weight alone (its own loop below unrolled too)
     * NCHW 0.948, NHWC 0.999.  The double kernel's loops measured even
     * (0.997-1.002), so they stay as they are. */
#define K_LOOP_m256(AK_STEP)                                                \
    _Pragma("GCC unroll 4")                                                   \
    for (size_t k = 0, ak = 0; k < kc; k++, b += bstep, ak += (AK_STEP)) {    \
        const __m256 b0 = _mm256_loadu_ps(b);                                                \
        if (half) {                                                            \
            _Pragma("GCC unroll 6")                                            \
            for (size_t i = 0; i < MRC; i++)                                   \
                acc0[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(rows[i] + ak), b0, acc0[i]);              \
        } else {                                                              \
            const __m256 b1 = _mm256_loadu_ps(b + 8);                                      \
            _Pragma("GCC unroll 6")                                            \
            for (size_t i = 0; i < MRC; i++) {                                 \
                const __m256 a = _mm256_broadcast_ss(rows[i] + ak);                              \
                acc0[i] = _mm256_fmadd_ps(a, b0, acc0[i]);                               \
                acc1[i] = _mm256_fmadd_ps(a, b1, acc1[i]);                               \
            }                                                                 \
        }                                                                     \
    }
    if (!half && MRC == 6 && copy && aks == 1) {
        /* Direct B copied into packed panels while it is read (b_copy). */
        float *cp = copy + 16;
        _Pragma("GCC unroll 4")
        for (size_t k = 0; k < kc; k++, b += bstep, cp += 16) {
            const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
            _mm256_storeu_ps(cp, b0);
            _mm256_storeu_ps(cp + 8, b1);
            _Pragma("GCC unroll 6")
            for (size_t i = 0; i < MRC; i++) {
                const __m256 a = _mm256_broadcast_ss(rows[i] + k);
                acc0[i] = _mm256_fmadd_ps(a, b0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(a, b1, acc1[i]);
            }
        }
    } else if (aks == 1) {
        K_LOOP_m256(1)
    } else if (p->a_rs == 1 && mr == MRC) {
        /* Grad weight's A: a tile's rows are adjacent channels of one
         * pixel and k steps to the next pixel.  One pointer then serves
         * every row at a constant offset: one add per k instead of six. */
        const float *ap = rows[0];
#pragma GCC unroll 4
        for (size_t k = 0; k < kc; k++, b += bstep, ap += aks) {
            const __m256 b0 = _mm256_loadu_ps(b);
            if (half) {
                _Pragma("GCC unroll 6")
                for (size_t i = 0; i < MRC; i++)
                    acc0[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(ap + i), b0, acc0[i]);
            } else {
                const __m256 b1 = _mm256_loadu_ps(b + 8);
                _Pragma("GCC unroll 6")
                for (size_t i = 0; i < MRC; i++) {
                    const __m256 a = _mm256_broadcast_ss(ap + i);
                    acc0[i] = _mm256_fmadd_ps(a, b0, acc0[i]);
                    acc1[i] = _mm256_fmadd_ps(a, b1, acc1[i]);
                }
            }
        }
    } else {
        K_LOOP_m256((size_t)aks)
    }
#undef K_LOOP_m256
    const __m256 lo = _mm256_set1_ps((float)p->lo), hi = _mm256_set1_ps((float)p->hi);
#pragma GCC unroll 6
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr)
            epilogue_f32(c + i * p->c_rs, r ? r + i * p->r_rs : NULL, acc0[i],
                         acc1[i], ncols, row_bias ? row_bias + i : NULL,
                         p->clamp, lo, hi, stream);
    }
}

INLINE void tile_f32(const size_t MRC, const int AHEAD, size_t mr, size_t nc, const float *a,
                     const float *packed, float *c, const float *row_bias,
                     const float *r, const pw_gemm_params *p)
{
    const float *rows[6];
#pragma GCC unroll 6
    for (size_t i = 0; i < MRC; i++)
        rows[i] = a + (i < mr ? i : mr - 1) * p->a_rs;
    const int epi = EPI_OF(p, r, row_bias);
    ahead_lines ah;
    if (AHEAD) ah = ahead_begin(p, (nc + 15) / 16);
    for (size_t j0 = 0; j0 < nc; j0 += 16) {
        const size_t ncols = nc - j0 < 16 ? nc - j0 : 16;
        if (AHEAD) ahead_panel(&ah);
        const float *panel = packed + (j0 / 16) * p->panel_stride;
        const float *rj = r ? r + j0 : NULL;
        float *cp = p->b_copy && ncols == 16 ? (float *)p->b_copy + (j0 / 16) * p->b_copy_ps
                                             : NULL;
        if (ncols <= 8)
            panel_f32(MRC, 1, EPI_ANY, mr, rows, panel, c + j0, rj, ncols, row_bias, p,
                      NULL);
        else
            WITH_EPI_INSTANCE(epi, panel_f32(MRC, 0, EPI_NOW, mr, rows, panel, c + j0,
                                             rj, ncols, row_bias, p, cp));
    }
}

GEMM_ENTRY(NOINLINE, gemm_f32_ahead, float, tile_f32, 1, 6)
GEMM_ENTRY(INLINE, gemm_f32_plain, float, tile_f32, 0, 6)

TARGET void pw_gemm_f32_avx2(size_t mr, size_t nc, const float *a,
                             const float *packed, float *c,
                             const float *row_bias, const float *r,
                             const pw_gemm_params *p)
{
    if (p->ahead) gemm_f32_ahead(mr, nc, a, packed, c, row_bias, r, p);
    else gemm_f32_plain(mr, nc, a, packed, c, row_bias, r, p);
}

/* --------------------------------------------------------------- double */

/* The first n (n <= 4) doubles at p, the rest of the vector zero; reads
 * nothing past p + n. */
INLINE __m256d load_upto4_f64(const double *p, size_t n)
{
    if (n >= 4) return _mm256_loadu_pd(p);
    const __m128d low = n >= 2 ? _mm_loadu_pd(p) : n ? _mm_load_sd(p) : _mm_setzero_pd();
    const __m128d high = n == 3 ? _mm_load_sd(p + 2) : _mm_setzero_pd();
    return _mm256_insertf128_pd(_mm256_castpd128_pd256(low), high, 1);
}

/* Stores the first n (0 < n <= 4) lanes of v at p, nothing past p + n. */
INLINE void store_upto4_f64(double *p, __m256d v, size_t n)
{
    const __m128d low = _mm256_castpd256_pd128(v);
    if (n == 4) {
        _mm256_storeu_pd(p, v);
    } else if (n >= 2) {
        _mm_storeu_pd(p, low);
        if (n == 3) _mm_store_sd(p + 2, _mm256_extractf128_pd(v, 1));
    } else {
        _mm_store_sd(p, low);
    }
}

/* A ragged panel's epilogue (ncols not 4 or 8): pieces of 4, 2 and 1
 * columns, as the float epilogue does, where a stack tile and memcpy cost
 * a library call and a failed store forward per row.  In-process A/B, 1
 * thread, relu6 + residual, NHWC, 4x28x28 unless said: 240->240 in 8
 * groups (panels 8 + 8 + 8 + 6) 0.77-0.81 of the time, 60->60 in 4 at
 * 4x14x14 0.56-0.59, 96->30 at 1x56x56 0.84-0.90, 150->70 0.96-0.97
 * (the harness alone, one build against its copy: 0.96-0.98); callgrind on
 * 240->240 in 8: 3% fewer instructions.  Out of line, as the memcpy was:
 * only ragged panels call it. */
NOINLINE void epilogue_ragged_f64(double *c, const double *r, __m256d v0, __m256d v1,
                                  size_t ncols, int clamp, __m256d lo, __m256d hi)
{
    if (r) {
        __m256d r0, r1 = _mm256_setzero_pd();
        if (ncols > 4) {
            r0 = _mm256_loadu_pd(r);
            r1 = load_upto4_f64(r + 4, ncols - 4);
        } else {
            r0 = load_upto4_f64(r, ncols);
        }
        v0 = _mm256_add_pd(v0, r0);
        v1 = _mm256_add_pd(v1, r1);
    }
    if (clamp) {
        v0 = _mm256_max_pd(lo, _mm256_min_pd(hi, v0));
        v1 = _mm256_max_pd(lo, _mm256_min_pd(hi, v1));
    }
    if (ncols > 4) {
        _mm256_storeu_pd(c, v0);
        store_upto4_f64(c + 4, v1, ncols - 4);
    } else {
        store_upto4_f64(c, v0, ncols);
    }
}

INLINE void epilogue_f64(double *c, const double *r, __m256d v0, __m256d v1,
                         size_t ncols, const double *row_bias_i, int clamp,
                         __m256d lo, __m256d hi, int stream)
{
    if (row_bias_i) {
        const __m256d rb = _mm256_broadcast_sd(row_bias_i);
        v0 = _mm256_add_pd(v0, rb);
        v1 = _mm256_add_pd(v1, rb);
    }
    if (ncols == 8) {
        if (r) {
            v0 = _mm256_add_pd(v0, _mm256_loadu_pd(r));
            v1 = _mm256_add_pd(v1, _mm256_loadu_pd(r + 4));
        }
        if (clamp) {
            v0 = _mm256_max_pd(lo, _mm256_min_pd(hi, v0));
            v1 = _mm256_max_pd(lo, _mm256_min_pd(hi, v1));
        }
        if (stream && !((size_t)c & 31)) {
            _mm256_stream_pd(c, v0);
            _mm256_stream_pd(c + 4, v1);
            return;
        }
        _mm256_storeu_pd(c, v0);
        _mm256_storeu_pd(c + 4, v1);
        return;
    }
    if (ncols == 4) {
        if (r) v0 = _mm256_add_pd(v0, _mm256_loadu_pd(r));
        if (clamp) v0 = _mm256_max_pd(lo, _mm256_min_pd(hi, v0));
        _mm256_storeu_pd(c, v0);
        return;
    }
    epilogue_ragged_f64(c, r, v0, v1, ncols, clamp, lo, hi);
}

INLINE void panel_f64(const size_t MRC, const int half, const int epi, size_t mr,
                      const double *const *rows, const double *panel,
                      double *c, const double *r, size_t ncols,
                      const double *row_bias, const pw_gemm_params *p, double *copy)
{
    EPI_OPERANDS(epi);      /* as in panel_f32 */
    __m256d acc0[6], acc1[6];
    const int direct = p->b_ks != 0;
    const ptrdiff_t bstep = direct ? p->b_ks : 8;
    const __m256d h0 = direct ? _mm256_setzero_pd() : _mm256_loadu_pd(panel);
    const __m256d h1 = half || direct ? _mm256_setzero_pd() : _mm256_loadu_pd(panel + 4);
#pragma GCC unroll 6
    for (size_t i = 0; i < MRC; i++) { acc0[i] = h0; acc1[i] = h1; }
    const double *b = direct ? panel : panel + 8;
    const size_t kc = p->kc;
    const ptrdiff_t aks = p->a_ks ? p->a_ks : 1;
    /* The step over k is a macro argument so the common unit stride keeps
     * one shared index register instead of one pointer bump per row.  CP:
     * a null pointer, or where each k step's B row is also stored
     * (b_copy).  The copy ran 0.95-0.98 of the time it took in a loop of
     * its own unrolled 4 times (kernel alone, 6 rows, direct B, K 24-144),
     * the other paths even.  The float kernel keeps its own copy loop:
     * folded into K_LOOP_m256 the same way, its uncopied path measured
     * about 1% slower there. */
#define K_LOOP_m256d(AK_STEP, CP)                                           \
    for (size_t k = 0, ak = 0; k < kc; k++, b += bstep, ak += (AK_STEP)) {    \
        const __m256d b0 = _mm256_loadu_pd(b);                                                \
        if (half) {                                                            \
            _Pragma("GCC unroll 6")                                            \
            for (size_t i = 0; i < MRC; i++)                                   \
                acc0[i] = _mm256_fmadd_pd(_mm256_broadcast_sd(rows[i] + ak), b0, acc0[i]);              \
        } else {                                                              \
            const __m256d b1 = _mm256_loadu_pd(b + 4);                                      \
            if (CP) {                                                          \
                _mm256_storeu_pd((CP) + 8 * k, b0);                           \
                _mm256_storeu_pd((CP) + 8 * k + 4, b1);                       \
            }                                                                  \
            _Pragma("GCC unroll 6")                                            \
            for (size_t i = 0; i < MRC; i++) {                                 \
                const __m256d a = _mm256_broadcast_sd(rows[i] + ak);                              \
                acc0[i] = _mm256_fmadd_pd(a, b0, acc0[i]);                               \
                acc1[i] = _mm256_fmadd_pd(a, b1, acc1[i]);                               \
            }                                                                 \
        }                                                                     \
    }
    if (!half && MRC == 6 && copy && aks == 1) {
        /* Direct B copied into packed panels while it is read (b_copy). */
        double *cp = copy + 8;
        K_LOOP_m256d(1, cp)
    } else if (aks == 1) {
        K_LOOP_m256d(1, (double *)0)
    } else if (p->a_rs == 1 && mr == MRC) {
        /* Grad weight's A: a tile's rows are adjacent channels of one
         * pixel and k steps to the next pixel.  One pointer then serves
         * every row at a constant offset: one add per k instead of six. */
        const double *ap = rows[0];
        for (size_t k = 0; k < kc; k++, b += bstep, ap += aks) {
            const __m256d b0 = _mm256_loadu_pd(b);
            if (half) {
                _Pragma("GCC unroll 6")
                for (size_t i = 0; i < MRC; i++)
                    acc0[i] = _mm256_fmadd_pd(_mm256_broadcast_sd(ap + i), b0, acc0[i]);
            } else {
                const __m256d b1 = _mm256_loadu_pd(b + 4);
                _Pragma("GCC unroll 6")
                for (size_t i = 0; i < MRC; i++) {
                    const __m256d a = _mm256_broadcast_sd(ap + i);
                    acc0[i] = _mm256_fmadd_pd(a, b0, acc0[i]);
                    acc1[i] = _mm256_fmadd_pd(a, b1, acc1[i]);
                }
            }
        }
    } else {
        K_LOOP_m256d((size_t)aks, (double *)0)
    }
#undef K_LOOP_m256d
    const __m256d lo = _mm256_set1_pd(p->lo), hi = _mm256_set1_pd(p->hi);
#pragma GCC unroll 6
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr)
            epilogue_f64(c + i * p->c_rs, r ? r + i * p->r_rs : NULL, acc0[i],
                         acc1[i], ncols, row_bias ? row_bias + i : NULL,
                         p->clamp, lo, hi, stream);
    }
}

INLINE void tile_f64(const size_t MRC, const int AHEAD, size_t mr, size_t nc, const double *a,
                     const double *packed, double *c, const double *row_bias,
                     const double *r, const pw_gemm_params *p)
{
    const double *rows[6];
#pragma GCC unroll 6
    for (size_t i = 0; i < MRC; i++)
        rows[i] = a + (i < mr ? i : mr - 1) * p->a_rs;
    const int epi = EPI_OF(p, r, row_bias);
    ahead_lines ah;
    if (AHEAD) ah = ahead_begin(p, (nc + 7) / 8);
    for (size_t j0 = 0; j0 < nc; j0 += 8) {
        const size_t ncols = nc - j0 < 8 ? nc - j0 : 8;
        if (AHEAD) ahead_panel(&ah);
        const double *panel = packed + (j0 / 8) * p->panel_stride;
        const double *rj = r ? r + j0 : NULL;
        double *cp = p->b_copy && ncols == 8 ? (double *)p->b_copy + (j0 / 8) * p->b_copy_ps
                                             : NULL;
        if (ncols <= 4)
            panel_f64(MRC, 1, EPI_ANY, mr, rows, panel, c + j0, rj, ncols, row_bias, p,
                      NULL);
        else
            WITH_EPI_INSTANCE(epi, panel_f64(MRC, 0, EPI_NOW, mr, rows, panel, c + j0,
                                             rj, ncols, row_bias, p, cp));
    }
}

GEMM_ENTRY(NOINLINE, gemm_f64_ahead, double, tile_f64, 1, 6)
GEMM_ENTRY(INLINE, gemm_f64_plain, double, tile_f64, 0, 6)

TARGET void pw_gemm_f64_avx2(size_t mr, size_t nc, const double *a,
                             const double *packed, double *c,
                             const double *row_bias, const double *r,
                             const pw_gemm_params *p)
{
    if (p->ahead) gemm_f64_ahead(mr, nc, a, packed, c, row_bias, r, p);
    else gemm_f64_plain(mr, nc, a, packed, c, row_bias, r, p);
}

#else
typedef int pw_avx2_unused;
#endif
