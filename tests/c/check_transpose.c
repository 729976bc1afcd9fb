/* check_transpose: pw_transpose (src/pw_transpose.c), the NCHW pixel-tile
 * driver's move of a C block out to the channel planes and grad weight's
 * dW^T into dW, against a plain loop, for float and double.
 *
 * The move adds the residual and clamps in the kernels' order (x + r, then
 * the clamp, NaN kept), so every value is compared bitwise, NaNs by
 * position.  Shapes cover the 4x4 vector squares and their ragged edges,
 * the 16-column and 64-row blocks and one past them; strides are padded so
 * a write outside the rows x cols block lands on a guard value that is
 * checked too.  The residual is absent, in its own buffer with its own
 * stride, or dst itself (the in-place move).  Prints one line,
 * `check_transpose: OK, N cases`, or the first failing case and exits 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pw_pack.h"
#include "check_rand.h"

static long cases;

enum { R_NONE, R_OWN, R_IN_PLACE };

#define GUARD 12345.0

#define DEFINE_CHECK(T, SUFFIX)                                                \
static int same_##SUFFIX(T a, T b)                                             \
{                                                                              \
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;            \
}                                                                              \
                                                                               \
static void check_##SUFFIX(size_t rows, size_t cols, int rmode, int clamp)     \
{                                                                              \
    const ptrdiff_t src_rs = (ptrdiff_t)cols + 3, dst_rs = (ptrdiff_t)rows + 5;\
    const ptrdiff_t r_rs = rmode == R_OWN ? (ptrdiff_t)rows + 2 : dst_rs;      \
    const double lo = -0.5, hi = 0.25;                                         \
    const size_t nsrc = rows * (size_t)src_rs, ndst = cols * (size_t)dst_rs;   \
    const size_t nr = cols * (size_t)r_rs;                                     \
    T *src = malloc(nsrc * sizeof(T) + 1);                                     \
    T *got = malloc(ndst * sizeof(T) + 1);                                     \
    T *want = malloc(ndst * sizeof(T) + 1);                                    \
    T *res = malloc(nr * sizeof(T) + 1);                                       \
    for (size_t i = 0; i < nsrc; i++)                                          \
        src[i] = (T)urand();                                                   \
    for (size_t i = 0; i < nr; i++)                                            \
        res[i] = (T)urand();                                                   \
    /* NaN in the block and in the residual: the clamp must keep both. */     \
    src[(rows / 2) * (size_t)src_rs + cols / 3] = (T)NAN;                      \
    res[(cols - 1) * (size_t)r_rs + rows - 1] = (T)NAN;                        \
    for (size_t i = 0; i < ndst; i++)                                          \
        got[i] = want[i] = (T)GUARD;                                           \
    if (rmode == R_IN_PLACE)                                                   \
        for (size_t j = 0; j < cols; j++)                                      \
            for (size_t i = 0; i < rows; i++)                                  \
                got[j * dst_rs + i] = want[j * dst_rs + i] = res[j * r_rs + i];\
    for (size_t j = 0; j < cols; j++)                                          \
        for (size_t i = 0; i < rows; i++) {                                    \
            T v = src[i * src_rs + j];                                         \
            if (rmode != R_NONE) v += res[j * r_rs + i];                       \
            if (clamp) {                                                       \
                v = v > (T)hi ? (T)hi : v;                                     \
                v = v < (T)lo ? (T)lo : v;                                     \
            }                                                                  \
            want[j * dst_rs + i] = v;                                          \
        }                                                                      \
    const T *r = rmode == R_NONE ? NULL : rmode == R_OWN ? res : got;          \
    pw_transpose_##SUFFIX(got, dst_rs, src, src_rs, rows, cols, r, r_rs, clamp, \
                          lo, hi);                                             \
    for (size_t i = 0; i < ndst; i++)                                          \
        if (!same_##SUFFIX(got[i], want[i])) {                                 \
            printf("check_transpose FAILED: %s rows=%zu cols=%zu residual=%d " \
                   "clamp=%d at dst[%zu]: got %.9g, want %.9g\n", #SUFFIX,     \
                   rows, cols, rmode, clamp, i, (double)got[i],                \
                   (double)want[i]);                                           \
            exit(1);                                                           \
        }                                                                      \
    cases++;                                                                   \
    free(src);                                                                 \
    free(got);                                                                 \
    free(want);                                                                \
    free(res);                                                                 \
}

DEFINE_CHECK(float, f32)
DEFINE_CHECK(double, f64)

int main(void)
{
    static const size_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33,
                                   48, 49, 63, 64, 65, 96, 130};
    const size_t n = sizeof sizes / sizeof sizes[0];
    for (size_t a = 0; a < n; a++)
        for (size_t b = 0; b < n; b++)
            for (int rmode = R_NONE; rmode <= R_IN_PLACE; rmode++)
                for (int clamp = 0; clamp <= 1; clamp++) {
                    check_f32(sizes[a], sizes[b], rmode, clamp);
                    check_f64(sizes[a], sizes[b], rmode, clamp);
                }
    printf("check_transpose: OK, %ld cases\n", cases);
    return 0;
}
