/* AArch64 NEON kernels for the contract of pw_kernels.h.
 *
 * NEON is baseline on AArch64, so this file needs no target attributes and
 * no runtime check; elsewhere it compiles to nothing.
 *
 * float32 uses an 8x8 tile: 16 q-register accumulators, 8 q registers that
 * each hold 4 consecutive k of one A row, and two B vectors per k, 26 of the
 * 32 registers.  Loading 4 k of a row at once and multiplying by lane
 * (vfmaq_laneq) replaces 8 broadcasts per k with 8 loads per 4 k, which is
 * what keeps the load ports from limiting the FMA rate.  float64 uses the
 * same scheme at 6x4 with 2 k per A load (12 accumulators, 6 A, 4 B).
 */
#include "pw_kernels.h"

#if defined(__aarch64__)

#include <arm_neon.h>

#define MR32 PW_MR_NEON_F32
#define NR32 PW_NR_NEON_F32
#define MR64 PW_MR_NEON_F64
#define NR64 PW_NR_NEON_F64

#if MR32 != 8 || NR32 != 8 || MR64 != 6 || NR64 != 4
#error "gemm_neon.c is written for 8x8 float32 and 6x4 float64 tiles"
#endif

/* ---- float32 epilogue ------------------------------------------------- */

/* The first m (1..4) floats at p, zeros elsewhere: a partial vector never
 * touches memory past the tile, so R may end at an unmapped page. */
static inline float32x4_t load_part_f32(const float *p, size_t m)
{
    if (m >= 4)
        return vld1q_f32(p);
    float32x4_t v = vdupq_n_f32(0.0f);
    if (m & 2) {
        v = vcombine_f32(vld1_f32(p), vget_high_f32(v));
        if (m & 1)
            v = vld1q_lane_f32(p + 2, v, 2);
    } else {
        v = vld1q_lane_f32(p, v, 0);
    }
    return v;
}

static inline void store_part_f32(float *p, float32x4_t v, size_t m)
{
    if (m >= 4) {
        vst1q_f32(p, v);
        return;
    }
    if (m & 2) {
        vst1_f32(p, vget_low_f32(v));
        if (m & 1)
            vst1q_lane_f32(p + 2, v, 2);
    } else {
        vst1q_lane_f32(p, v, 0);
    }
}

/* One row of the tile, ncols (1..8) columns.  Order per element is
 * acc + row_bias, + R, then clamp, as in the reference kernel.  FMAX/FMIN
 * (vmaxq/vminq, not the *nm forms) return NaN when either operand is NaN,
 * so a NaN accumulator survives both steps of the clamp. */
static inline void store_row_f32(float *c, const float *r, const float *rb,
                                 const pw_gemm_params *p, float32x4_t v0,
                                 float32x4_t v1, size_t ncols)
{
    const size_t m0 = ncols < 4 ? ncols : 4, m1 = ncols - m0;
    if (rb) {
        const float32x4_t bv = vld1q_dup_f32(rb);
        v0 = vaddq_f32(v0, bv);
        v1 = vaddq_f32(v1, bv);
    }
    if (r) {
        /* Adding only when R exists keeps a -0.0 result negative. */
        v0 = vaddq_f32(v0, load_part_f32(r, m0));
        if (m1)
            v1 = vaddq_f32(v1, load_part_f32(r + 4, m1));
    }
    if (p->clamp) {
        const float32x4_t lo = vdupq_n_f32((float)p->lo);
        const float32x4_t hi = vdupq_n_f32((float)p->hi);
        v0 = vminq_f32(vmaxq_f32(v0, lo), hi);
        v1 = vminq_f32(vmaxq_f32(v1, lo), hi);
    }
    store_part_f32(c, v0, m0);
    if (m1)
        store_part_f32(c + 4, v1, m1);
}

/* ---- float32 kernel ----------------------------------------------------- */

#define F32_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

#define F32_INIT(i) float32x4_t c##i##a = h0, c##i##b = h1;
#define F32_LOADA(i) const float32x4_t a##i = vld1q_f32(ap##i + k);
#define F32_LANE(i, L)                                                     \
    c##i##a = vfmaq_laneq_f32(c##i##a, b0, a##i, L);                       \
    c##i##b = vfmaq_laneq_f32(c##i##b, b1, a##i, L);
#define F32_LANE0(i) F32_LANE(i, 0)
#define F32_LANE1(i) F32_LANE(i, 1)
#define F32_LANE2(i) F32_LANE(i, 2)
#define F32_LANE3(i) F32_LANE(i, 3)
#define F32_STEP(LANEX)                                                    \
    {                                                                      \
        const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);        \
        b += NR32;                                                         \
        F32_ROWS(LANEX)                                                    \
    }
#define F32_ONE(i)                                                         \
    {                                                                      \
        const float32x4_t a##i = vld1q_dup_f32(ap##i + k);                 \
        c##i##a = vfmaq_f32(c##i##a, b0, a##i);                            \
        c##i##b = vfmaq_f32(c##i##b, b1, a##i);                            \
    }
#define F32_STORE(i)                                                       \
    if (i < mr)                                                            \
        store_row_f32(c + i * c_rs + j0, r ? r + i * r_rs + j0 : NULL,     \
                      row_bias ? row_bias + i : NULL, p, c##i##a, c##i##b, \
                      ncols);

void pw_gemm_f32_neon(size_t mr, size_t nc, const float *a,
                      const float *packed, float *c, const float *row_bias,
                      const float *r, const pw_gemm_params *p)
{
    const size_t kc = p->kc;
    const ptrdiff_t c_rs = p->c_rs, r_rs = p->r_rs;
    /* Rows past mr alias the last real row so the k loop has no branches.
     * With kc == 0 every row pointer is a itself: nothing is offset from a
     * pointer that may be NULL and nothing is read through it. */
    const ptrdiff_t step = kc ? p->a_rs : 0;
    const float *ap0 = a;
    const float *ap1 = ap0 + (mr > 1 ? step : 0);
    const float *ap2 = ap1 + (mr > 2 ? step : 0);
    const float *ap3 = ap2 + (mr > 3 ? step : 0);
    const float *ap4 = ap3 + (mr > 4 ? step : 0);
    const float *ap5 = ap4 + (mr > 5 ? step : 0);
    const float *ap6 = ap5 + (mr > 6 ? step : 0);
    const float *ap7 = ap6 + (mr > 7 ? step : 0);

    for (size_t j0 = 0; j0 < nc; j0 += NR32) {
        const float *panel = packed + (j0 / NR32) * p->panel_stride;
        const float32x4_t h0 = vld1q_f32(panel), h1 = vld1q_f32(panel + 4);
        F32_ROWS(F32_INIT)
        const float *b = panel + NR32;
        size_t k = 0;
        /* 4-wide A loads only while the whole group lies inside the row:
         * rows may end at the end of their buffer. */
        for (; k + 4 <= kc; k += 4) {
            F32_ROWS(F32_LOADA)
            F32_STEP(F32_LANE0)
            F32_STEP(F32_LANE1)
            F32_STEP(F32_LANE2)
            F32_STEP(F32_LANE3)
        }
        for (; k < kc; k++) {
            const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);
            b += NR32;
            F32_ROWS(F32_ONE)
        }
        const size_t ncols = nc - j0 < NR32 ? nc - j0 : NR32;
        F32_ROWS(F32_STORE)
    }
}

/* ---- float64 epilogue ------------------------------------------------- */

static inline float64x2_t load_part_f64(const double *p, size_t m)
{
    if (m >= 2)
        return vld1q_f64(p);
    return vld1q_lane_f64(p, vdupq_n_f64(0.0), 0);
}

static inline void store_part_f64(double *p, float64x2_t v, size_t m)
{
    if (m >= 2)
        vst1q_f64(p, v);
    else
        vst1q_lane_f64(p, v, 0);
}

/* Same order and NaN behaviour as store_row_f32, for ncols 1..4. */
static inline void store_row_f64(double *c, const double *r, const double *rb,
                                 const pw_gemm_params *p, float64x2_t v0,
                                 float64x2_t v1, size_t ncols)
{
    const size_t m0 = ncols < 2 ? ncols : 2, m1 = ncols - m0;
    if (rb) {
        const float64x2_t bv = vld1q_dup_f64(rb);
        v0 = vaddq_f64(v0, bv);
        v1 = vaddq_f64(v1, bv);
    }
    if (r) {
        v0 = vaddq_f64(v0, load_part_f64(r, m0));
        if (m1)
            v1 = vaddq_f64(v1, load_part_f64(r + 2, m1));
    }
    if (p->clamp) {
        const float64x2_t lo = vdupq_n_f64(p->lo), hi = vdupq_n_f64(p->hi);
        v0 = vminq_f64(vmaxq_f64(v0, lo), hi);
        v1 = vminq_f64(vmaxq_f64(v1, lo), hi);
    }
    store_part_f64(c, v0, m0);
    if (m1)
        store_part_f64(c + 2, v1, m1);
}

/* ---- float64 kernel ----------------------------------------------------- */

#define F64_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)

#define F64_INIT(i) float64x2_t c##i##a = h0, c##i##b = h1;
#define F64_LOADA(i) const float64x2_t a##i = vld1q_f64(ap##i + k);
#define F64_LANE(i, L)                                                     \
    c##i##a = vfmaq_laneq_f64(c##i##a, b0, a##i, L);                       \
    c##i##b = vfmaq_laneq_f64(c##i##b, b1, a##i, L);
#define F64_LANE0(i) F64_LANE(i, 0)
#define F64_LANE1(i) F64_LANE(i, 1)
#define F64_STEP(LANEX)                                                    \
    {                                                                      \
        const float64x2_t b0 = vld1q_f64(b), b1 = vld1q_f64(b + 2);        \
        b += NR64;                                                         \
        F64_ROWS(LANEX)                                                    \
    }
#define F64_ONE(i)                                                         \
    {                                                                      \
        const float64x2_t a##i = vld1q_dup_f64(ap##i + k);                 \
        c##i##a = vfmaq_f64(c##i##a, b0, a##i);                            \
        c##i##b = vfmaq_f64(c##i##b, b1, a##i);                            \
    }
#define F64_STORE(i)                                                       \
    if (i < mr)                                                            \
        store_row_f64(c + i * c_rs + j0, r ? r + i * r_rs + j0 : NULL,     \
                      row_bias ? row_bias + i : NULL, p, c##i##a, c##i##b, \
                      ncols);

void pw_gemm_f64_neon(size_t mr, size_t nc, const double *a,
                      const double *packed, double *c, const double *row_bias,
                      const double *r, const pw_gemm_params *p)
{
    const size_t kc = p->kc;
    const ptrdiff_t c_rs = p->c_rs, r_rs = p->r_rs;
    const ptrdiff_t step = kc ? p->a_rs : 0;
    const double *ap0 = a;
    const double *ap1 = ap0 + (mr > 1 ? step : 0);
    const double *ap2 = ap1 + (mr > 2 ? step : 0);
    const double *ap3 = ap2 + (mr > 3 ? step : 0);
    const double *ap4 = ap3 + (mr > 4 ? step : 0);
    const double *ap5 = ap4 + (mr > 5 ? step : 0);

    for (size_t j0 = 0; j0 < nc; j0 += NR64) {
        const double *panel = packed + (j0 / NR64) * p->panel_stride;
        const float64x2_t h0 = vld1q_f64(panel), h1 = vld1q_f64(panel + 2);
        F64_ROWS(F64_INIT)
        const double *b = panel + NR64;
        size_t k = 0;
        for (; k + 2 <= kc; k += 2) {
            F64_ROWS(F64_LOADA)
            F64_STEP(F64_LANE0)
            F64_STEP(F64_LANE1)
        }
        if (k < kc) {
            const float64x2_t b0 = vld1q_f64(b), b1 = vld1q_f64(b + 2);
            F64_ROWS(F64_ONE)
        }
        const size_t ncols = nc - j0 < NR64 ? nc - j0 : NR64;
        F64_ROWS(F64_STORE)
    }
}

#else

/* ISO C forbids an empty translation unit. */
typedef int pw_neon_unused;

#endif
