/* pw_gather: the pixels a strided, unpadded 1x1 convolution reads, copied
 * into a dense map that then runs at stride 1 (run_forward in
 * _functional.py explains why).  numpy's strided copy is one thread, and
 * on NCHW planes (every other value of every other row) takes each value
 * on its own: 116 us for 256 planes of 56x56 at stride 2 with the input in
 * cache, three times its NHWC gather of whole pixels.  Here the rows are
 * split between the call's threads (_core.gather_strided), and stride-2
 * rows go through the compiler's vector shuffles (PW_CLONES builds them
 * for AVX2 too): 56 us for those planes in cache.  With the input coming
 * from memory, as in a network, one thread is no faster than numpy; the
 * split is what pays: ResNet-50's strided shortcuts at batch 1 on two
 * threads, in-process A/B against numpy's gather, NCHW 0.93-0.97 of the
 * time, NHWC even (0.96-1.01). */
#include "pw_pack.h"

#include <string.h>

#include "pw_vec.h"

/* One output row: n pixels of `inner` values, sw pixels apart in src. */
#define DEFINE_GATHER_ROW(NAME, T)                                             \
static inline void NAME(T *dst, const T *src, size_t n, size_t inner,          \
                        size_t sw)                                             \
{                                                                              \
    if (inner > 1) {                                                           \
        for (size_t j = 0; j < n; j++)                                         \
            memcpy(dst + j * inner, src + j * sw * inner, inner * sizeof(T));  \
    } else if (sw == 2) {                                                      \
        /* Constant stride: the compiler's even-lane shuffles. */              \
        for (size_t j = 0; j < n; j++) dst[j] = src[2 * j];                    \
    } else {                                                                   \
        for (size_t j = 0; j < n; j++) dst[j] = src[j * sw];                   \
    }                                                                          \
}

DEFINE_GATHER_ROW(gather_row_f32, float)
DEFINE_GATHER_ROW(gather_row_f64, double)

#define DEFINE_GATHER(NAME, T, ROW)                                            \
PW_CLONES void NAME(T *dst, const T *src, size_t row0, size_t row1, size_t h,  \
                    size_t w, size_t inner, size_t sh, size_t sw, size_t ho,   \
                    size_t wo)                                                 \
{                                                                              \
    size_t map = row0 / ho, i = row0 % ho;                                     \
    T *d = dst + row0 * wo * inner;                                            \
    for (size_t row = row0; row < row1; row++, d += wo * inner) {              \
        ROW(d, src + ((map * h + i * sh) * w) * inner, wo, inner, sw);         \
        if (++i == ho) {                                                       \
            i = 0;                                                             \
            map++;                                                             \
        }                                                                      \
    }                                                                          \
}

DEFINE_GATHER(pw_gather_f32, float, gather_row_f32)
DEFINE_GATHER(pw_gather_f64, double, gather_row_f64)
