/* check_sums: the grad-bias sums, grad weight's A regrouping and the
 * packing of channel planes in src/pw_pack.c (with the transposes of
 * src/pw_transpose.c it calls), against plain loops, for float and double.
 *
 * pw_pack_a (NHWC grad weight's A: grad output pixels regrouped per tile of
 * mr channels, masked or not, with the column sums riding along) must copy
 * exactly and sum each column over the pixels in order, in the element type,
 * before adding to the double sums: the reference does the same, so the
 * sums are compared bitwise.  pw_mask_rows' column sums follow the same
 * rule; its row sums run in interleaved lanes, so they are compared within
 * rounding.  Shapes cover every tile height the kernels use (4, 6, 7, 8),
 * channel counts around whole tiles and pairs of tiles, and row lengths
 * around every vector width, on both sides of the hand-vectorised paths
 * (PW_VECTORS) and their scalar tails.  Prints one line, `check_sums: OK, N
 * cases`, or the first failing case and exits 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pw_pack.h"
#include "check_rand.h"

static long cases;

static void fail(const char *what, const char *type, size_t a, size_t b, size_t c,
                 int masked, size_t at)
{
    printf("check_sums FAILED: %s %s (%zu, %zu, %zu) masked=%d at %zu\n", what, type,
           a, b, c, masked, at);
    exit(1);
}

/* keep(v, m) of pw_mask.h: v where lo < m < hi, else 0. */
#define KEEP(v, m, lo, hi) ((m) > (lo) && (m) < (hi) ? (v) : 0)

#define DEFINE_CHECKS(T, SUFFIX)                                               \
static void check_pack_a_##SUFFIX(size_t mr, size_t kq, size_t nch, int masked,  \
                                  int sums)                                    \
{                                                                              \
    const size_t ps = nch + 3, ntiles = (nch + mr - 1) / mr;                   \
    const T lo = 0, hi = (T)0.75;                                              \
    T *src = malloc(kq * ps * sizeof(T) + 1);                                  \
    T *mask = malloc(kq * ps * sizeof(T) + 1);                                 \
    T *dst = malloc(ntiles * kq * mr * sizeof(T) + 1);                         \
    double *got = calloc(nch + 1, sizeof(double));                             \
    double *want = calloc(nch + 1, sizeof(double));                            \
    for (size_t i = 0; i < kq * ps; i++) {                                     \
        src[i] = (T)urand();                                                   \
        mask[i] = (T)urand();                                                  \
    }                                                                          \
    pw_pack_a_##SUFFIX(dst, mr, src, (ptrdiff_t)ps, kq, nch,                   \
                       masked ? mask : NULL, lo, hi, sums ? got : NULL);       \
    for (size_t t = 0; t < ntiles; t++)                                        \
        for (size_t q = 0; q < kq; q++)                                        \
            for (size_t i = 0; i < mr; i++) {                                  \
                const size_t c = t * mr + i;                                   \
                T v = 0;                                                       \
                if (c < nch) {                                                 \
                    v = src[q * ps + c];                                       \
                    if (masked) v = KEEP(v, mask[q * ps + c], lo, hi);         \
                }                                                              \
                if (dst[(t * kq + q) * mr + i] != v)                           \
                    fail("pack_a copy", #T, mr, kq, nch, masked, c);           \
            }                                                                  \
    for (size_t c = 0; c < nch && sums; c++) {                                 \
        T acc = 0;                                                             \
        for (size_t q = 0; q < kq; q++) {                                      \
            T v = src[q * ps + c];                                             \
            acc += masked ? KEEP(v, mask[q * ps + c], lo, hi) : v;             \
        }                                                                      \
        want[c] += acc;                                                        \
        if (got[c] != want[c])                                                 \
            fail("pack_a column sum", #T, mr, kq, nch, masked, c);             \
    }                                                                          \
    cases++;                                                                   \
    free(src); free(mask); free(dst); free(got); free(want);                   \
}                                                                              \
                                                                               \
/* pw_pack from channel planes (k contiguous, columns js apart): each panel  \
 * holds the head row, then row k = column values at pixel k, zeros past    \
 * the last column, masked or not. */                                        \
static void check_pack_planes_##SUFFIX(size_t nr, size_t kc, size_t ncols,   \
                                       int masked, int head)                   \
{                                                                              \
    const size_t js = kc + 5, ps = pw_panel_stride(kc, nr);                    \
    const size_t npanels = (ncols + nr - 1) / nr;                              \
    const T lo = 0, hi = (T)0.75;                                              \
    T *src = malloc(ncols * js * sizeof(T) + 1);                               \
    T *mask = malloc(ncols * js * sizeof(T) + 1);                              \
    T *hd = malloc(ncols * sizeof(T) + 1);                                     \
    T *dst = malloc(npanels * ps * sizeof(T) + 1);                             \
    for (size_t i = 0; i < ncols * js; i++) {                                  \
        src[i] = (T)urand();                                                   \
        mask[i] = (T)urand();                                                  \
    }                                                                          \
    for (size_t j = 0; j < ncols; j++) hd[j] = (T)urand();                     \
    for (size_t i = 0; i < npanels * ps; i++) dst[i] = (T)NAN;                 \
    pw_pack_##SUFFIX(dst, nr, ps, kc, ncols, src, 1, (ptrdiff_t)js, NULL, NULL, \
                     head ? hd : NULL, masked ? mask : NULL, lo, hi);          \
    for (size_t p = 0; p < npanels; p++)                                       \
        for (size_t k = 0; k <= kc; k++)                                       \
            for (size_t jj = 0; jj < nr; jj++) {                               \
                const size_t j = p * nr + jj;                                  \
                T v = 0;                                                       \
                if (j < ncols && k == 0 && head) v = hd[j];                    \
                if (j < ncols && k > 0) {                                      \
                    v = src[j * js + k - 1];                                   \
                    if (masked) v = KEEP(v, mask[j * js + k - 1], lo, hi);     \
                }                                                              \
                if (!(dst[p * ps + k * nr + jj] == v))                         \
                    fail("pack planes", #T, nr, kc, ncols, masked, k * nr + jj); \
            }                                                                  \
    cases++;                                                                   \
    free(src); free(mask); free(hd); free(dst);                                \
}                                                                              \
                                                                               \
static void check_mask_rows_##SUFFIX(size_t rows, size_t cols, int masked,     \
                                     int copy)                                 \
{                                                                              \
    const size_t rs = cols + 5;                                                \
    const T lo = -0.5, hi = (T)0.5;                                            \
    T *src = malloc(rows * rs * sizeof(T) + 1);                                \
    T *mask = malloc(rows * rs * sizeof(T) + 1);                               \
    T *dst = malloc(rows * rs * sizeof(T) + 1);                                \
    double *csum = calloc(cols + 1, sizeof(double));                           \
    double *rsum = calloc(rows + 1, sizeof(double));                           \
    for (size_t i = 0; i < rows * rs; i++) {                                   \
        src[i] = (T)urand();                                                   \
        mask[i] = (T)urand();                                                  \
    }                                                                          \
    pw_mask_rows_##SUFFIX(copy ? dst : NULL, (ptrdiff_t)rs, src, (ptrdiff_t)rs, \
                          rows, cols, masked ? mask : NULL, lo, hi,            \
                          copy || !masked ? csum : NULL, rsum);                \
    for (size_t r = 0; r < rows; r++) {                                        \
        double exact = 0, scale = 0;                                           \
        for (size_t c = 0; c < cols; c++) {                                    \
            T v = src[r * rs + c];                                             \
            if (masked) v = KEEP(v, mask[r * rs + c], lo, hi);                 \
            if (copy && dst[r * rs + c] != v)                                  \
                fail("mask_rows copy", #T, rows, cols, 0, masked, r * rs + c); \
            exact += v;                                                        \
            scale += fabs((double)v);                                          \
        }                                                                      \
        const double eps = sizeof(T) == 4 ? 1e-6 : 1e-15;                      \
        if (fabs(rsum[r] - exact) > eps * (scale + 1) * 4)                     \
            fail("mask_rows row sum", #T, rows, cols, 0, masked, r);           \
    }                                                                          \
    for (size_t c = 0; c < cols && (copy || !masked); c++) {                   \
        T acc = 0;                                                             \
        for (size_t r = 0; r < rows; r++) {                                    \
            T v = src[r * rs + c];                                             \
            acc += masked ? KEEP(v, mask[r * rs + c], lo, hi) : v;             \
        }                                                                      \
        if (csum[c] != (double)acc)                                            \
            fail("mask_rows column sum", #T, rows, cols, 0, masked, c);        \
    }                                                                          \
    cases++;                                                                   \
    free(src); free(mask); free(dst); free(csum); free(rsum);                  \
}

DEFINE_CHECKS(float, f32)
DEFINE_CHECKS(double, f64)

int main(void)
{
    static const size_t heights[] = {4, 6, 7, 8};
    static const size_t depths[] = {1, 2, 5, 49, 64};
    for (size_t h = 0; h < sizeof heights / sizeof heights[0]; h++)
        for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++)
            for (size_t nch = 1; nch <= 4 * heights[h] + 3; nch++)
                for (int v = 0; v < 4; v++) {
                    check_pack_a_f32(heights[h], depths[d], nch, v & 1, v >> 1);
                    check_pack_a_f64(heights[h], depths[d], nch, v & 1, v >> 1);
                }
    /* Row lengths around every lane count: 4..32 values a vector or strip,
     * and the 49/196-value rows of 7x7 and 14x14 planes. */
    static const size_t lengths[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24, 31,
                                     32, 33, 40, 48, 49, 63, 64, 65, 96, 129, 196};
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++)
        for (size_t rows = 1; rows <= 7; rows += 3)
            for (int v = 0; v < 4; v++) {
                check_mask_rows_f32(rows, lengths[l], v & 1, v >> 1);
                check_mask_rows_f64(rows, lengths[l], v & 1, v >> 1);
            }
    /* Panel widths of every kernel, depths around the 4x4 vector blocks
     * and the transposes' 16-wide tiles, columns around whole panels. */
    static const size_t widths[] = {8, 16, 32};
    static const size_t kcs[] = {1, 3, 4, 5, 15, 16, 17, 64, 67};
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
        for (size_t k = 0; k < sizeof kcs / sizeof kcs[0]; k++)
            for (size_t ncols = 1; ncols <= 2 * widths[w] + 5; ncols++)
                for (int v = 0; v < 4; v++) {
                    check_pack_planes_f32(widths[w], kcs[k], ncols, v & 1, v >> 1);
                    check_pack_planes_f64(widths[w], kcs[k], ncols, v & 1, v >> 1);
                }
    printf("check_sums: OK, %ld cases\n", cases);
    return 0;
}
