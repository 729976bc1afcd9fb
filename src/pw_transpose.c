/* pw_transpose: the NCHW pixel-tile driver's move of a C block (pixel rows)
 * out to the output's channel planes, with the epilogue the kernel left out,
 * and grad weight's dW^T into dW (see pw_pack.h).
 *
 * Blocks of TILE_ROWS x TILE_COLS keep the rows read and the rows written
 * within a few dozen cache lines.  A pixel-tile C block has at most 64
 * rows, so one block spans all of them and each output plane row is
 * written whole before the next: with 16 x 16 blocks, every plane row was
 * written in four pieces, 200 KB of other rows apart (49 x 960, in L2:
 * 10-15% slower).  Inside them, float goes 4x4 at a time through vector
 * shuffles where the compiler has them: one value at a time, the move took
 * a fifth of a 7x7 NCHW forward pass (160->960, batch 4, perf).  Float is
 * also built for AVX2 (PW_CLONES): with the residual added and clamped,
 * 40% faster on 49 x 960.  8x8 squares in 32-byte vectors were no faster
 * than that, and 5x slower where the compiler splits them into 16-byte
 * halves, as it does for SSE2 and NEON.  The epilogue is the kernels' own
 * in the same order: x + r, then clamped with NaN kept (a NaN fails both
 * comparisons and passes through). */
#include "pw_pack.h"

#include <string.h>

#include "pw_vec.h"

#if defined(PW_VECTORS) && defined(__SSE__)
#include <xmmintrin.h>
#endif

#define TILE_ROWS 64
#define TILE_COLS 16

#define DEFINE_TRANSPOSE_SCALAR(NAME, T)                                       \
static void NAME(T *dst, ptrdiff_t dst_rs, const T *src, ptrdiff_t src_rs,     \
                 size_t i0, size_t i1, size_t j0, size_t j1, const T *r,       \
                 ptrdiff_t r_rs, int clamp, T lo, T hi)                        \
{                                                                              \
    for (size_t j = j0; j < j1; j++) {                                         \
        T *d = dst + (ptrdiff_t)j * dst_rs;                                    \
        const T *s = src + (ptrdiff_t)j;                                       \
        const T *rr = r ? r + (ptrdiff_t)j * r_rs : NULL;                      \
        for (size_t i = i0; i < i1; i++) {                                     \
            T v = s[(ptrdiff_t)i * src_rs];                                    \
            if (rr) v += rr[i];                                                \
            if (clamp) {                                                       \
                v = v > hi ? hi : v;                                           \
                v = v < lo ? lo : v;                                           \
            }                                                                  \
            d[i] = v;                                                          \
        }                                                                      \
    }                                                                          \
}

DEFINE_TRANSPOSE_SCALAR(transpose_span_f32, float)
DEFINE_TRANSPOSE_SCALAR(transpose_span_f64, double)

#ifdef PW_VECTORS
typedef PW_VEC(float) v4f;
typedef PW_IVEC(float) v4i;

#if defined(__clang__)
#define SHUFFLE4(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define SHUFFLE4(a, b, i, j, k, l) __builtin_shuffle(a, b, (v4i){i, j, k, l})
#endif

static inline v4f load4(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Columns j..j+3 of rows i..i+3, each as a vector of its four rows. */
static inline void transpose4(const float *src, ptrdiff_t src_rs, v4f col[4])
{
    const v4f r0 = load4(src), r1 = load4(src + src_rs);
    const v4f r2 = load4(src + 2 * src_rs), r3 = load4(src + 3 * src_rs);
    const v4f t0 = SHUFFLE4(r0, r1, 0, 4, 1, 5), t1 = SHUFFLE4(r0, r1, 2, 6, 3, 7);
    const v4f t2 = SHUFFLE4(r2, r3, 0, 4, 1, 5), t3 = SHUFFLE4(r2, r3, 2, 6, 3, 7);
    col[0] = SHUFFLE4(t0, t2, 0, 1, 4, 5);
    col[1] = SHUFFLE4(t0, t2, 2, 3, 6, 7);
    col[2] = SHUFFLE4(t1, t3, 0, 1, 4, 5);
    col[3] = SHUFFLE4(t1, t3, 2, 3, 6, 7);
}

/* v clamped to [lo, hi], a NaN kept: SSE's min and max return their
 * second operand when one is NaN, so v goes second. */
static inline v4f clamp4(v4f v, v4f lo, v4f hi)
{
#if defined(__SSE__)
    return (v4f)_mm_max_ps((__m128)lo, _mm_min_ps((__m128)hi, (__m128)v));
#else
    const v4i above = v > hi, below = v < lo;
    v = (v4f)(((v4i)hi & above) | ((v4i)v & ~above));
    return (v4f)(((v4i)lo & below) | ((v4i)v & ~below));
#endif
}

/* Rows [i0, i1) and columns [j0, j1) of src (both spans multiples of 4)
 * moved out, 4x4 at a time.  HAS_R and CLAMP are constants at every call,
 * so each instance carries no tests in its loop.  Against one loop that
 * tested both per column and clamped by compare and blend, relu6 +
 * residual on MobileNetV2's 7x7 expansions (160->960, 320->1280), NCHW,
 * 1 thread: 0.985-0.993 of the time alone (in-process A/B), and 1.058-1.079
 * of the plain call's time against 1.079-1.105 in a bench-like table. */
static inline __attribute__((always_inline)) void
move_squares_f32(const int HAS_R, const int CLAMP, float *dst, ptrdiff_t dst_rs,
                 const float *src, ptrdiff_t src_rs, size_t i0, size_t i1, size_t j0,
                 size_t j1, const float *r, ptrdiff_t r_rs, v4f vlo, v4f vhi)
{
    for (size_t i = i0; i < i1; i += 4) {
        for (size_t j = j0; j < j1; j += 4) {
            v4f col[4];
            transpose4(src + (ptrdiff_t)i * src_rs + (ptrdiff_t)j, src_rs, col);
            for (size_t q = 0; q < 4; q++) {
                v4f v = col[q];
                if (HAS_R) v += load4(r + (ptrdiff_t)(j + q) * r_rs + (ptrdiff_t)i);
                if (CLAMP) v = clamp4(v, vlo, vhi);
                memcpy(dst + (ptrdiff_t)(j + q) * dst_rs + (ptrdiff_t)i, &v, sizeof v);
            }
        }
    }
}
#endif

PW_CLONES void pw_transpose_f32(float *dst, ptrdiff_t dst_rs, const float *src,
                      ptrdiff_t src_rs, size_t rows, size_t cols,
                      const float *r, ptrdiff_t r_rs, int clamp,
                      double lo, double hi)
{
    const float tlo = (float)lo, thi = (float)hi;
    for (size_t i0 = 0; i0 < rows; i0 += TILE_ROWS) {
        const size_t i1 = rows - i0 < TILE_ROWS ? rows : i0 + TILE_ROWS;
        for (size_t j0 = 0; j0 < cols; j0 += TILE_COLS) {
            const size_t j1 = cols - j0 < TILE_COLS ? cols : j0 + TILE_COLS;
            size_t iv = i0, jv = j0;
#ifdef PW_VECTORS
            const v4f vlo = {tlo, tlo, tlo, tlo}, vhi = {thi, thi, thi, thi};
            iv = i0 + (i1 - i0) / 4 * 4;
            jv = j0 + (j1 - j0) / 4 * 4;
#define MOVE_SQUARES(HAS_R, CLAMP)                                             \
    move_squares_f32(HAS_R, CLAMP, dst, dst_rs, src, src_rs, i0, iv, j0, jv, r, r_rs, vlo, vhi)
            if (r && clamp) MOVE_SQUARES(1, 1);
            else if (r) MOVE_SQUARES(1, 0);
            else if (clamp) MOVE_SQUARES(0, 1);
            else MOVE_SQUARES(0, 0);
#undef MOVE_SQUARES
            /* The ragged right edge of the vector rows, then the ragged
             * bottom rows across the whole tile. */
            transpose_span_f32(dst, dst_rs, src, src_rs, i0, iv, jv, j1, r, r_rs,
                               clamp, tlo, thi);
#endif
            transpose_span_f32(dst, dst_rs, src, src_rs, iv, i1, j0, j1, r, r_rs,
                               clamp, tlo, thi);
        }
    }
}

void pw_transpose_f64(double *dst, ptrdiff_t dst_rs, const double *src,
                      ptrdiff_t src_rs, size_t rows, size_t cols,
                      const double *r, ptrdiff_t r_rs, int clamp,
                      double lo, double hi)
{
    for (size_t i0 = 0; i0 < rows; i0 += TILE_ROWS) {
        const size_t i1 = rows - i0 < TILE_ROWS ? rows : i0 + TILE_ROWS;
        for (size_t j0 = 0; j0 < cols; j0 += TILE_COLS) {
            const size_t j1 = cols - j0 < TILE_COLS ? cols : j0 + TILE_COLS;
            transpose_span_f64(dst, dst_rs, src, src_rs, i0, i1, j0, j1, r, r_rs,
                               clamp, lo, hi);
        }
    }
}
