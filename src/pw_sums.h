/* Row and column sums for the bias gradient, vectorised by hand where the
 * compiler has vector extensions (PW_VECTORS, from pw_vec.h).
 *
 * row_sum_T(v, m, n, lo, hi): the sum of keep(v[c], m[c]) over c < n (of
 * v[c] where m is NULL).
 * col_sums_T(base, rs, rows, cols, sums): sums[c] += the sum over r of
 * base[r*rs + c], for c < cols. */
#ifndef PW_SUMS_H
#define PW_SUMS_H

#include <stddef.h>
#include <string.h>

#include "pw_mask.h"
#include "pw_vec.h"

/* Column sums run in strips of SUM_STRIP(T) accumulators (contiguous adds),
 * row sums in ROW_LANES(T) interleaved lanes: several vectors of adds in
 * flight, since one vector's add latency would cap a sum near a third of
 * L2's bandwidth.  A strip's width is a compile-time constant (but for the
 * last few columns) and its accumulators are explicit vectors, so they live
 * in registers: in a plain array of T, as in the earlier blocks of 256
 * columns, GCC kept them in memory, each row's adds waited on a store and a
 * reload (2-3x slower on L1-resident rows), and grad bias cost 3-10% of an
 * NHWC backward pass on narrow layers.  Each column is summed over the rows
 * in order, in T, then added in double, so results stay bitwise repeatable.
 *
 * Eight 32-byte vectors of accumulators (64 floats, 32 doubles): eight AVX
 * registers in the AVX2 clone (PW_CLONES), all sixteen SSE ones in the
 * baseline; narrower strips (half, quarter, eighth) take the rest.  Four
 * vectors kept Zen 3's two add pipes half idle behind the add latency: the
 * sums of a 64x96 float chunk in L1 (a grad-weight chunk) ran at 26.4
 * Gfloat/s with four, 38.9 with eight (C harness, best of five); 64x144
 * 23.8 -> 31.9, 64x40 19.3 -> 21.6, 196x384 (from L2) 17.7 -> 18.3, 64x16
 * unchanged.  The baseline clone, which spills with eight, went from 7.4
 * to 6.0 on 64x96 and from 5.6 to 5.8 on 64x144: it runs only on x86 CPUs
 * without AVX2.  Callgrind, two 16->96 backward passes at 1x112x112: 1.57 M
 * instructions in the column sums with 16-byte vectors, 0.83 M in the AVX2
 * clone (four accumulators). */
#define SUM_STRIP(T) (256 / sizeof(T))
#ifdef PW_VECTORS
#define SUM_COLUMNS(T, W)                                                      \
    do {                                                                       \
        enum { LANES = 32 / sizeof(T) };                                       \
        typedef PW_WIDE_VEC(T) vec;                                            \
        vec acc[SUM_STRIP(T) / LANES];                                         \
        _Pragma("GCC unroll 8")                                                \
        for (size_t i = 0; i < (W) / LANES; i++) acc[i] = (vec){0};            \
        for (size_t r = 0; r < rows; r++) {                                    \
            const T *v = base + (ptrdiff_t)r * rs + c0;                        \
            _Pragma("GCC unroll 8")                                            \
            for (size_t i = 0; i < (W) / LANES; i++) {                         \
                vec x;                                                         \
                memcpy(&x, v + i * LANES, sizeof x);                           \
                acc[i] += x;                                                   \
            }                                                                  \
        }                                                                      \
        for (size_t i = 0; i < (W) / LANES; i++)                               \
            for (size_t l = 0; l < LANES; l++)                                 \
                col_sums[c0 + i * LANES + l] += acc[i][l];                     \
    } while (0)
#else
#define SUM_COLUMNS(T, W) SUM_COLUMNS_SCALAR(T, W)
#endif
/* Also the last few (fewer than SUM_STRIP(T) / 4) columns. */
#define SUM_COLUMNS_SCALAR(T, W)                                               \
    do {                                                                       \
        T acc[SUM_STRIP(T)];                                                   \
        for (size_t c = 0; c < (W); c++) acc[c] = 0;                           \
        for (size_t r = 0; r < rows; r++) {                                    \
            const T *v = base + (ptrdiff_t)r * rs + c0;                        \
            for (size_t c = 0; c < (W); c++) acc[c] += v[c];                   \
        }                                                                      \
        for (size_t c = 0; c < (W); c++) col_sums[c0 + c] += acc[c];           \
    } while (0)

/* The sum of keep(v[c], m[c]) (v[c] where m is NULL) over c < cols, in
 * ROW_LANES(T) lanes: the ragged end goes to the first lanes and the lanes
 * are folded in halves, since the short rows of 7x7 and 14x14 planes (49,
 * 196 values) spent more on a serial tail and a serial total than on the
 * sum itself.  The lanes are explicit vectors for the same reason as the
 * column sums' accumulators. */
#define ROW_LANES(T) (128 / sizeof(T))
#define DEFINE_ROW_SUM(T)                                                      \
PW_CLONES static T row_sum_##T(const T *v, const T *m, size_t cols, T lo, T hi) \
{                                                                              \
    enum { LANES = ROW_LANES(T) };                                             \
    T kept[LANES], lane[LANES];                                                \
    size_t c = 0;                                                              \
    ROW_SUM_BODY(T);                                                           \
}

#ifdef PW_VECTORS
/* The vector of v at offset OFF, kept where m says when m is given (inside
 * ROW_SUM_BODY). */
#define ROW_SUM_LOAD(OFF)                                                      \
    ({                                                                         \
        vec x_, m_;                                                            \
        memcpy(&x_, v + (OFF), sizeof x_);                                     \
        if (m) {                                                               \
            memcpy(&m_, m + (OFF), sizeof m_);                                 \
            x_ = (vec)((ivec)x_ & ((m_ > vlo) & (m_ < vhi)));                  \
        }                                                                      \
        x_;                                                                    \
    })
#define ROW_SUM_BODY(T)                                                        \
    enum { VL = 32 / sizeof(T), NV = LANES / VL };                             \
    typedef PW_WIDE_VEC(T) vec;                                                \
    typedef PW_WIDE_IVEC(T) ivec;                                              \
    vec acc[NV], x;                                                            \
    _Pragma("GCC unroll 8")                                                    \
    for (size_t i = 0; i < NV; i++) acc[i] = (vec){0};                         \
    const vec vlo = (vec){0} + lo, vhi = (vec){0} + hi;                        \
    if (m) {                                                                   \
        for (; c + LANES <= cols; c += LANES) {                                \
            _Pragma("GCC unroll 8")                                            \
            for (size_t i = 0; i < NV; i++) {                                  \
                vec mv;                                                        \
                memcpy(&x, v + c + i * VL, sizeof x);                          \
                memcpy(&mv, m + c + i * VL, sizeof mv);                        \
                acc[i] += (vec)((ivec)x & ((mv > vlo) & (mv < vhi)));          \
            }                                                                  \
        }                                                                      \
    } else {                                                                   \
        for (; c + LANES <= cols; c += LANES) {                                \
            _Pragma("GCC unroll 8")                                            \
            for (size_t i = 0; i < NV; i++) {                                  \
                memcpy(&x, v + c + i * VL, sizeof x);                          \
                acc[i] += x;                                                   \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    /* The ragged end on registers: whole vectors, then one vector ending \
     * at the row's end with the lanes already summed masked off. */          \
    for (size_t i = 0; c + VL <= cols; c += VL, i++)                           \
        acc[i] += ROW_SUM_LOAD(c);                                             \
    if (c < cols && cols >= VL) {                                              \
        ivec iota;                                                             \
        for (size_t l = 0; l < VL; l++) iota[l] = (__typeof__(iota[0]))l;      \
        const ivec fresh = iota >= (__typeof__(iota[0]))(c - (cols - VL));     \
        acc[NV - 1] += (vec)((ivec)ROW_SUM_LOAD(cols - VL) & fresh);           \
    } else if (c < cols) {                                                     \
        /* A row shorter than one vector. */                                   \
        memset(kept, 0, sizeof kept);                                          \
        if (m)                                                                 \
            keep_span_##T(kept, v + c, m + c, cols - c, lo, hi);               \
        else                                                                   \
            memcpy(kept, v + c, (cols - c) * sizeof(T));                       \
        memcpy(&x, kept, sizeof x);                                            \
        acc[0] += x;                                                           \
    }                                                                          \
    for (size_t h = NV / 2; h > 0; h /= 2)                                     \
        for (size_t i = 0; i < h; i++) acc[i] += acc[i + h];                   \
    memcpy(lane, acc, sizeof acc[0]);                                          \
    for (size_t h = VL / 2; h > 0; h /= 2)                                     \
        for (size_t l = 0; l < h; l++) lane[l] += lane[l + h];                 \
    return lane[0]
#else
#define ROW_SUM_BODY(T)                                                        \
    for (size_t l = 0; l < LANES; l++) lane[l] = 0;                            \
    for (; c + LANES <= cols; c += LANES) {                                    \
        const T *src = v + c;                                                  \
        if (m) {                                                               \
            keep_span_##T(kept, v + c, m + c, LANES, lo, hi);                  \
            src = kept;                                                        \
        }                                                                      \
        for (size_t l = 0; l < LANES; l++) lane[l] += src[l];                  \
    }                                                                          \
    for (size_t l = 0; c + l < cols; l++)                                      \
        lane[l] += m ? keep_##T(v[c + l], m[c + l], lo, hi) : v[c + l];        \
    for (size_t h = LANES / 2; h > 0; h /= 2)                                  \
        for (size_t l = 0; l < h; l++) lane[l] += lane[l + h];                 \
    return lane[0]
#endif

DEFINE_ROW_SUM(float)
DEFINE_ROW_SUM(double)

#define DEFINE_COL_SUMS(T)                                                     \
PW_CLONES static void col_sums_##T(const T *base, ptrdiff_t rs, size_t rows,   \
                                   size_t cols, double *col_sums)              \
{                                                                              \
    size_t c0 = 0;                                                             \
    for (; c0 + SUM_STRIP(T) <= cols; c0 += SUM_STRIP(T))                      \
        SUM_COLUMNS(T, SUM_STRIP(T));                                          \
    if (cols - c0 >= SUM_STRIP(T) / 2) {                                       \
        SUM_COLUMNS(T, SUM_STRIP(T) / 2);                                      \
        c0 += SUM_STRIP(T) / 2;                                                \
    }                                                                          \
    if (cols - c0 >= SUM_STRIP(T) / 4) {                                       \
        SUM_COLUMNS(T, SUM_STRIP(T) / 4);                                      \
        c0 += SUM_STRIP(T) / 4;                                                \
    }                                                                          \
    if (cols - c0 >= SUM_STRIP(T) / 8) {                                       \
        SUM_COLUMNS(T, SUM_STRIP(T) / 8);                                      \
        c0 += SUM_STRIP(T) / 8;                                                \
    }                                                                          \
    if (c0 < cols)                                                             \
        SUM_COLUMNS_SCALAR(T, cols - c0);                                      \
}

DEFINE_COL_SUMS(float)
DEFINE_COL_SUMS(double)

#endif
