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
 *
 * Direct B (b_ks != 0) runs a second expansion of the same panel code,
 * starting from zero with the row step in a register, so the packed path
 * compiles to exactly the loop it had without it.
 *
 * A with a k stride (a_ks > 1) cannot use the k-wide A loads: consecutive
 * k of a row are not adjacent.  It goes to separate functions, so the
 * a_ks == 1 kernels keep their code.  Grad weight reads A as [k][MR] tiles
 * (a_rs == 1, a_ks == MR): there the rows of one k are adjacent, so a full
 * tile loads them with 2 (float) or 3 (double) vectors per k and multiplies
 * by lane across rows.  Partial tiles and other layouts load one scalar per
 * row per k and use the by-element FMA on lane 0; the per-element FMAs are
 * the same as in the a_ks == 1 path, so results are bitwise identical.
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
#define F32_STEP(LANEX, BS)                                                \
    {                                                                      \
        const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);        \
        b += (BS);                                                         \
        F32_ROWS(LANEX)                                                    \
    }
#define F32_ONE(i)                                                         \
    {                                                                      \
        const float32x4_t a##i = vld1q_dup_f32(ap##i + k);                 \
        c##i##a = vfmaq_f32(c##i##a, b0, a##i);                            \
        c##i##b = vfmaq_f32(c##i##b, b1, a##i);                            \
    }
/* 4-wide A loads only while the whole group lies inside the row: rows may
 * end at the end of their buffer. */
#define F32_KLOOP(BS)                                                      \
    {                                                                      \
        size_t k = 0;                                                      \
        for (; k + 4 <= kc; k += 4) {                                      \
            F32_ROWS(F32_LOADA)                                            \
            F32_STEP(F32_LANE0, BS)                                        \
            F32_STEP(F32_LANE1, BS)                                        \
            F32_STEP(F32_LANE2, BS)                                        \
            F32_STEP(F32_LANE3, BS)                                        \
        }                                                                  \
        for (; k < kc; k++)                                                \
            F32_STEP(F32_ONE, BS)                                          \
    }
#define F32_STORE(i)                                                       \
    if (i < mr)                                                            \
        store_row_f32(c + i * c_rs + j0, r ? r + i * r_rs + j0 : NULL,     \
                      row_bias ? row_bias + i : NULL, p, c##i##a, c##i##b, \
                      ncols);
/* One panel, accumulators included.  It is expanded once per B layout so
 * the packed k loop keeps its constant stride (immediate-offset loads) and
 * its own register allocation, i.e. the code it had before direct B; the
 * direct copy steps by b_ks from a register. */
#define F32_PANEL(H0, H1, START, BS)                                       \
    {                                                                      \
        const float32x4_t h0 = (H0), h1 = (H1);                            \
        const float *b = (START);                                          \
        F32_ROWS(F32_INIT)                                                 \
        F32_KLOOP(BS)                                                      \
        F32_ROWS(F32_STORE)                                                \
    }

/* ---- float32, A with a k stride ---------------------------------------- */

/* Full tile, a_rs == 1: av0 holds rows 0-3 of one k, av1 rows 4-7; the 8
 * values are exactly the A elements of that k, so the last k's loads end
 * at the last element of A. */
#define F32_XLANE(i, V, L)                                                 \
    c##i##a = vfmaq_laneq_f32(c##i##a, b0, V, L);                          \
    c##i##b = vfmaq_laneq_f32(c##i##b, b1, V, L);
#define F32_XROWS                                                          \
    F32_XLANE(0, av0, 0) F32_XLANE(1, av0, 1) F32_XLANE(2, av0, 2)         \
    F32_XLANE(3, av0, 3) F32_XLANE(4, av1, 0) F32_XLANE(5, av1, 1)         \
    F32_XLANE(6, av1, 2) F32_XLANE(7, av1, 3)
#define F32_KLOOP_XT(BS)                                                   \
    {                                                                      \
        const float *ak = a;                                               \
        for (size_t k = 0; k < kc; k++, ak += aks) {                       \
            const float32x4_t av0 = vld1q_f32(ak), av1 = vld1q_f32(ak + 4);\
            const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);    \
            b += (BS);                                                     \
            F32_XROWS                                                      \
        }                                                                  \
    }
/* Any layout: one scalar per row per k (register-offset load), by-element
 * FMA.  Rows past mr alias the last real row, as in the a_ks == 1 path. */
#define F32_SCAL(i)                                                        \
    {                                                                      \
        const float a##i = ap##i[ak];                                      \
        c##i##a = vfmaq_n_f32(c##i##a, b0, a##i);                          \
        c##i##b = vfmaq_n_f32(c##i##b, b1, a##i);                          \
    }
#define F32_KLOOP_KS(BS)                                                   \
    {                                                                      \
        ptrdiff_t ak = 0;                                                  \
        for (size_t k = 0; k < kc; k++, ak += aks)                         \
            F32_STEP(F32_SCAL, BS)                                         \
    }
#define F32_PANEL_KS(KLOOP, H0, H1, START, BS)                             \
    {                                                                      \
        const float32x4_t h0 = (H0), h1 = (H1);                            \
        const float *b = (START);                                          \
        F32_ROWS(F32_INIT)                                                 \
        KLOOP(BS)                                                          \
        F32_ROWS(F32_STORE)                                                \
    }
#define F32_PANELS_KS(KLOOP)                                               \
    for (size_t j0 = 0; j0 < nc; j0 += NR32) {                             \
        const float *panel = packed + (j0 / NR32) * p->panel_stride;       \
        const size_t ncols = nc - j0 < NR32 ? nc - j0 : NR32;              \
        if (!b_ks)                                                         \
            F32_PANEL_KS(KLOOP, vld1q_f32(panel), vld1q_f32(panel + 4),    \
                         panel + NR32, NR32)                               \
        else                                                               \
            F32_PANEL_KS(KLOOP, vdupq_n_f32(0.0f), vdupq_n_f32(0.0f),      \
                         panel, b_ks)                                      \
    }

/* Called with kc >= 1 and a_ks not 0 or 1. */
static __attribute__((noipa)) void
gemm_f32_neon_aks(size_t mr, size_t nc, const float *a, const float *packed,
                  float *c, const float *row_bias, const float *r,
                  const pw_gemm_params *p)
{
    const size_t kc = p->kc;
    const ptrdiff_t c_rs = p->c_rs, r_rs = p->r_rs, b_ks = p->b_ks;
    const ptrdiff_t aks = p->a_ks, step = p->a_rs;
    if (step == 1 && mr == MR32) {
        F32_PANELS_KS(F32_KLOOP_XT)
        return;
    }
    const float *ap0 = a;
    const float *ap1 = ap0 + (mr > 1 ? step : 0);
    const float *ap2 = ap1 + (mr > 2 ? step : 0);
    const float *ap3 = ap2 + (mr > 3 ? step : 0);
    const float *ap4 = ap3 + (mr > 4 ? step : 0);
    const float *ap5 = ap4 + (mr > 5 ? step : 0);
    const float *ap6 = ap5 + (mr > 6 ? step : 0);
    const float *ap7 = ap6 + (mr > 7 ? step : 0);
    F32_PANELS_KS(F32_KLOOP_KS)
}

static __attribute__((noipa)) void
gemm_f32_neon_k1(size_t mr, size_t nc, const float *a, const float *packed,
                 float *c, const float *row_bias, const float *r,
                 const pw_gemm_params *p)
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

    const ptrdiff_t b_ks = p->b_ks;
    for (size_t j0 = 0; j0 < nc; j0 += NR32) {
        const float *panel = packed + (j0 / NR32) * p->panel_stride;
        const size_t ncols = nc - j0 < NR32 ? nc - j0 : NR32;
        if (!b_ks)
            F32_PANEL(vld1q_f32(panel), vld1q_f32(panel + 4), panel + NR32,
                      NR32)
        else
            F32_PANEL(vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), panel, b_ks)
    }
}

/* A separate entry so the a_ks == 1 kernel is compiled as it was before a_ks
 * existed (noipa: no caller-specific specialisation or register changes). */
void pw_gemm_f32_neon(size_t mr, size_t nc, const float *a,
                      const float *packed, float *c, const float *row_bias,
                      const float *r, const pw_gemm_params *p)
{
    /* With kc == 0, A is never read, so its layout does not matter. */
    if (p->kc && p->a_ks != 0 && p->a_ks != 1)
        gemm_f32_neon_aks(mr, nc, a, packed, c, row_bias, r, p);
    else
        gemm_f32_neon_k1(mr, nc, a, packed, c, row_bias, r, p);
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
#define F64_STEP(LANEX, BS)                                                \
    {                                                                      \
        const float64x2_t b0 = vld1q_f64(b), b1 = vld1q_f64(b + 2);        \
        b += (BS);                                                         \
        F64_ROWS(LANEX)                                                    \
    }
#define F64_ONE(i)                                                         \
    {                                                                      \
        const float64x2_t a##i = vld1q_dup_f64(ap##i + k);                 \
        c##i##a = vfmaq_f64(c##i##a, b0, a##i);                            \
        c##i##b = vfmaq_f64(c##i##b, b1, a##i);                            \
    }
#define F64_KLOOP(BS)                                                      \
    {                                                                      \
        size_t k = 0;                                                      \
        for (; k + 2 <= kc; k += 2) {                                      \
            F64_ROWS(F64_LOADA)                                            \
            F64_STEP(F64_LANE0, BS)                                        \
            F64_STEP(F64_LANE1, BS)                                        \
        }                                                                  \
        if (k < kc) {                                                      \
            const float64x2_t b0 = vld1q_f64(b), b1 = vld1q_f64(b + 2);    \
            F64_ROWS(F64_ONE)                                              \
        }                                                                  \
    }
#define F64_STORE(i)                                                       \
    if (i < mr)                                                            \
        store_row_f64(c + i * c_rs + j0, r ? r + i * r_rs + j0 : NULL,     \
                      row_bias ? row_bias + i : NULL, p, c##i##a, c##i##b, \
                      ncols);
/* As F32_PANEL. */
#define F64_PANEL(H0, H1, START, BS)                                       \
    {                                                                      \
        const float64x2_t h0 = (H0), h1 = (H1);                            \
        const double *b = (START);                                         \
        F64_ROWS(F64_INIT)                                                 \
        F64_KLOOP(BS)                                                      \
        F64_ROWS(F64_STORE)                                                \
    }

/* ---- float64, A with a k stride ---------------------------------------- */

/* As the float32 versions; a full 6-row tile takes 3 vectors per k. */
#define F64_XLANE(i, V, L)                                                 \
    c##i##a = vfmaq_laneq_f64(c##i##a, b0, V, L);                          \
    c##i##b = vfmaq_laneq_f64(c##i##b, b1, V, L);
#define F64_XROWS                                                          \
    F64_XLANE(0, av0, 0) F64_XLANE(1, av0, 1) F64_XLANE(2, av1, 0)         \
    F64_XLANE(3, av1, 1) F64_XLANE(4, av2, 0) F64_XLANE(5, av2, 1)
#define F64_KLOOP_XT(BS)                                                   \
    {                                                                      \
        const double *ak = a;                                              \
        for (size_t k = 0; k < kc; k++, ak += aks) {                       \
            const float64x2_t av0 = vld1q_f64(ak), av1 = vld1q_f64(ak + 2);\
            const float64x2_t av2 = vld1q_f64(ak + 4);                     \
            const float64x2_t b0 = vld1q_f64(b), b1 = vld1q_f64(b + 2);    \
            b += (BS);                                                     \
            F64_XROWS                                                      \
        }                                                                  \
    }
#define F64_SCAL(i)                                                        \
    {                                                                      \
        const double a##i = ap##i[ak];                                     \
        c##i##a = vfmaq_n_f64(c##i##a, b0, a##i);                          \
        c##i##b = vfmaq_n_f64(c##i##b, b1, a##i);                          \
    }
#define F64_KLOOP_KS(BS)                                                   \
    {                                                                      \
        ptrdiff_t ak = 0;                                                  \
        for (size_t k = 0; k < kc; k++, ak += aks)                         \
            F64_STEP(F64_SCAL, BS)                                         \
    }
#define F64_PANEL_KS(KLOOP, H0, H1, START, BS)                             \
    {                                                                      \
        const float64x2_t h0 = (H0), h1 = (H1);                            \
        const double *b = (START);                                         \
        F64_ROWS(F64_INIT)                                                 \
        KLOOP(BS)                                                          \
        F64_ROWS(F64_STORE)                                                \
    }
#define F64_PANELS_KS(KLOOP)                                               \
    for (size_t j0 = 0; j0 < nc; j0 += NR64) {                             \
        const double *panel = packed + (j0 / NR64) * p->panel_stride;      \
        const size_t ncols = nc - j0 < NR64 ? nc - j0 : NR64;              \
        if (!b_ks)                                                         \
            F64_PANEL_KS(KLOOP, vld1q_f64(panel), vld1q_f64(panel + 2),    \
                         panel + NR64, NR64)                               \
        else                                                               \
            F64_PANEL_KS(KLOOP, vdupq_n_f64(0.0), vdupq_n_f64(0.0),        \
                         panel, b_ks)                                      \
    }

static __attribute__((noipa)) void
gemm_f64_neon_aks(size_t mr, size_t nc, const double *a, const double *packed,
                  double *c, const double *row_bias, const double *r,
                  const pw_gemm_params *p)
{
    const size_t kc = p->kc;
    const ptrdiff_t c_rs = p->c_rs, r_rs = p->r_rs, b_ks = p->b_ks;
    const ptrdiff_t aks = p->a_ks, step = p->a_rs;
    if (step == 1 && mr == MR64) {
        F64_PANELS_KS(F64_KLOOP_XT)
        return;
    }
    const double *ap0 = a;
    const double *ap1 = ap0 + (mr > 1 ? step : 0);
    const double *ap2 = ap1 + (mr > 2 ? step : 0);
    const double *ap3 = ap2 + (mr > 3 ? step : 0);
    const double *ap4 = ap3 + (mr > 4 ? step : 0);
    const double *ap5 = ap4 + (mr > 5 ? step : 0);
    F64_PANELS_KS(F64_KLOOP_KS)
}

static __attribute__((noipa)) void
gemm_f64_neon_k1(size_t mr, size_t nc, const double *a, const double *packed,
                 double *c, const double *row_bias, const double *r,
                 const pw_gemm_params *p)
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

    const ptrdiff_t b_ks = p->b_ks;
    for (size_t j0 = 0; j0 < nc; j0 += NR64) {
        const double *panel = packed + (j0 / NR64) * p->panel_stride;
        const size_t ncols = nc - j0 < NR64 ? nc - j0 : NR64;
        if (!b_ks)
            F64_PANEL(vld1q_f64(panel), vld1q_f64(panel + 2), panel + NR64,
                      NR64)
        else
            F64_PANEL(vdupq_n_f64(0.0), vdupq_n_f64(0.0), panel, b_ks)
    }
}

/* A separate entry so the a_ks == 1 kernel is compiled as it was before a_ks
 * existed (noipa: no caller-specific specialisation or register changes). */
void pw_gemm_f64_neon(size_t mr, size_t nc, const double *a,
                      const double *packed, double *c, const double *row_bias,
                      const double *r, const pw_gemm_params *p)
{
    /* With kc == 0, A is never read, so its layout does not matter. */
    if (p->kc && p->a_ks != 0 && p->a_ks != 1)
        gemm_f64_neon_aks(mr, nc, a, packed, c, row_bias, r, p);
    else
        gemm_f64_neon_k1(mr, nc, a, packed, c, row_bias, r, p);
}

#else

/* ISO C forbids an empty translation unit. */
typedef int pw_neon_unused;

#endif
