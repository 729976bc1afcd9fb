/* Packing: the copies that put operands into the layout pw_kernels.h reads.
 * They are cheap next to the GEMM they feed (one pass over an operand
 * against 2*N multiply-adds per element) and do all the layout-specific
 * gathering (strides, padding, groups), so the kernels stay layout-blind. */
#ifndef PW_PACK_H
#define PW_PACK_H

#include <stddef.h>

/* Round a panel of (kc + 1) rows of nr up to a multiple of 16 elements, so
 * every panel starts 64-byte aligned when the buffer does. */
size_t pw_panel_stride(size_t kc, size_t nr);

/* Fill ceil(ncols/nr) panels at dst from the matrix
 *   B[k][j] = src[koff(k) + joff(j)],  koff(k) = k_off ? k_off[k] : k*k_stride,
 *                                      joff(j) = j_off ? j_off[j] : j*j_stride,
 * with zero where an offset taken from k_off/j_off is negative (padding) and
 * in columns past ncols.  Row 0 of each panel is head[j] (zero when head is
 * NULL).  With mask non-NULL, B is zeroed where !(lo < mask[same offset] < hi):
 * the activation's derivative applied while the gradient is read. */
void pw_pack_f32(float *dst, size_t nr, size_t panel_stride, size_t kc,
                 size_t ncols, const float *src, ptrdiff_t k_stride,
                 ptrdiff_t j_stride, const ptrdiff_t *k_off,
                 const ptrdiff_t *j_off, const float *head,
                 const float *mask, double lo, double hi);
void pw_pack_f64(double *dst, size_t nr, size_t panel_stride, size_t kc,
                 size_t ncols, const double *src, ptrdiff_t k_stride,
                 ptrdiff_t j_stride, const ptrdiff_t *k_off,
                 const ptrdiff_t *j_off, const double *head,
                 const double *mask, double lo, double hi);

/* Row by row, without transposing: dst[r*dst_rs + c] = g(src[r*src_rs + c]),
 * where g zeroes the value unless lo < mask[same offset] < hi (mask may be
 * NULL; dst may be NULL when only the sums are wanted), adding each value to
 * col_sums[c] and/or row_sums[r] when those are non-NULL.  With dst NULL,
 * row sums still honour the mask, column sums do not. */
void pw_mask_rows_f32(float *dst, ptrdiff_t dst_rs, const float *src,
                      ptrdiff_t src_rs, size_t rows, size_t cols,
                      const float *mask, double lo, double hi,
                      double *col_sums, double *row_sums);
void pw_mask_rows_f64(double *dst, ptrdiff_t dst_rs, const double *src,
                      ptrdiff_t src_rs, size_t rows, size_t cols,
                      const double *mask, double lo, double hi,
                      double *col_sums, double *row_sums);

/* Grad weight's A in NHWC: grad output (kq pixels src_ps apart, nch
 * channels each), masked like pw_mask_rows, regrouped per tile of mr
 * channels as dst[(t*kq + q)*mr + i]; rows past nch are zero.  Column sums
 * of the masked values go to col_sums when it is non-NULL. */
void pw_pack_a_f32(float *dst, size_t mr, const float *src, ptrdiff_t src_ps,
                   size_t kq, size_t nch, const float *mask, double lo,
                   double hi, double *col_sums);
void pw_pack_a_f64(double *dst, size_t mr, const double *src, ptrdiff_t src_ps,
                   size_t kq, size_t nch, const double *mask, double lo,
                   double hi, double *col_sums);

/* The NCHW pixel-tile driver's A: npix pixels of kc channel planes
 * (src_rs apart) regrouped per tile of mr pixels as dst[(t*kc + k)*mr + i],
 * the layout pw_pack_a makes; pixels past npix are zero, and so are values
 * whose mask (same offsets; may be NULL) lies outside (lo, hi). */
void pw_gather_tiles_f32(float *dst, size_t mr, const float *src,
                         ptrdiff_t src_rs, size_t kc, size_t npix,
                         const float *mask, double lo, double hi);
void pw_gather_tiles_f64(double *dst, size_t mr, const double *src,
                         ptrdiff_t src_rs, size_t kc, size_t npix,
                         const double *mask, double lo, double hi);

/* dst[j*dst_rs + i] = act(src[i*src_rs + j] + r[j*r_rs + i]) for i < rows,
 * j < cols, where act clamps to [lo, hi] when clamp is nonzero and r may be
 * NULL (nothing added): the NCHW pixel-tile driver's move from pixel rows
 * to the output's channel planes, with the epilogue the kernel left out,
 * and (plain) grad weight's dW^T into dW when the operands were swapped.
 * r may be dst itself (in place). */
void pw_transpose_f32(float *dst, ptrdiff_t dst_rs, const float *src,
                      ptrdiff_t src_rs, size_t rows, size_t cols,
                      const float *r, ptrdiff_t r_rs, int clamp,
                      double lo, double hi);
void pw_transpose_f64(double *dst, ptrdiff_t dst_rs, const double *src,
                      ptrdiff_t src_rs, size_t rows, size_t cols,
                      const double *r, ptrdiff_t r_rs, int clamp,
                      double lo, double hi);

/* Ask for `rows` rows of `row_bytes` bytes, `stride_bytes` apart, to be
 * brought in for reading: into every cache level, or with to_l2 only as
 * far as L2.  A hint only: it never faults and does nothing where the
 * compiler has no prefetch builtin.  Inline, with abutting rows asked for
 * as one run: the drivers call it once per row tile, and as a call into
 * pw_pack.c looping row by row it cost a relu6 + residual forward pass 2-4%
 * on 16->96 and 32->16 (residual in cache) and 6-17% on 16->96 at 112x112
 * with the residual in memory (in-process A/B, 1 thread). */
static inline void pw_prefetch_rows_at(const void *base, size_t rows, size_t row_bytes,
                                       ptrdiff_t stride_bytes, int to_l2)
{
#if defined(__GNUC__) || defined(__clang__)
    if ((ptrdiff_t)row_bytes == stride_bytes) {
        row_bytes *= rows;
        rows = 1;
    }
    for (size_t r = 0; r < rows; r++) {
        const char *row = (const char *)base + (ptrdiff_t)r * stride_bytes;
        for (size_t b = 0; b < row_bytes; b += 64) {
            if (to_l2) __builtin_prefetch(row + b, 0, 2);
            else __builtin_prefetch(row + b, 0, 3);
        }
    }
#else
    (void)base; (void)rows; (void)row_bytes; (void)stride_bytes; (void)to_l2;
#endif
}

static inline void pw_prefetch_rows(const void *base, size_t rows, size_t row_bytes,
                                    ptrdiff_t stride_bytes)
{
    pw_prefetch_rows_at(base, rows, row_bytes, stride_bytes, 0);
}

/* For a whole next row tile at once (several dozen lines).  Asked into L1
 * they cost the NHWC driver up to 45% of its time on inputs from
 * memory (see nhwc_driver.pxi); the likely cause, not measured here (no
 * hardware counters), is that they outnumber L1's miss buffers and hold up
 * the kernel's own loads. */
static inline void pw_prefetch_rows_l2(const void *base, size_t rows, size_t row_bytes,
                                       ptrdiff_t stride_bytes)
{
    pw_prefetch_rows_at(base, rows, row_bytes, stride_bytes, 1);
}

/* Rows [row0, row1) of `maps` dense maps of ho x wo pixels (row r is row
 * r % ho of map r / ho), each pixel `inner` values: pixel (i, j) of a map
 * is pixel (i*sh, j*sw) of the same map in src, whose maps are h x w
 * pixels.  NCHW: maps are channel planes, inner 1; NHWC: maps are images,
 * inner the channels. */
void pw_gather_f32(float *dst, const float *src, size_t row0, size_t row1, size_t h,
                   size_t w, size_t inner, size_t sh, size_t sw, size_t ho, size_t wo);
void pw_gather_f64(double *dst, const double *src, size_t row0, size_t row1, size_t h,
                   size_t w, size_t inner, size_t sh, size_t sw, size_t ho, size_t wo);

#endif
