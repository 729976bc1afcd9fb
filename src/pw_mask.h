/* The activation's derivative as a mask: a grad output value v is kept
 * where lo < m < hi (m: the forward output at the same place) and zeroed
 * elsewhere, NaN m included.
 *
 * On a post-ReLU map the mask is close to random, so a branch per value
 * mispredicts about half the time: written as `m > lo && m < hi ? v : 0`,
 * which compilers turned into two branches, masked backward passes ran
 * 2-8x slower than unmasked ones.  So the scalar form selects with bit
 * operations, and runs of values go through explicit vector compares where
 * the compiler has vector extensions (GCC, Clang): whether the plain loop
 * vectorised changed with the loop's shape and the compiler's mood. */
#ifndef PW_MASK_H
#define PW_MASK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pw_vec.h"

#define DEFINE_KEEP(T, BITS)                                                   \
static inline T keep_##T(T v, T m, T lo, T hi)                                 \
{                                                                              \
    BITS bits;                                                                 \
    const BITS keep = (BITS)0 - (BITS)((m > lo) & (m < hi));                   \
    memcpy(&bits, &v, sizeof bits);                                            \
    bits &= keep;                                                              \
    memcpy(&v, &bits, sizeof v);                                               \
    return v;                                                                  \
}

DEFINE_KEEP(float, uint32_t)
DEFINE_KEEP(double, uint64_t)

/* d[j] = keep(s[j], m[j]) for j < n.  d may be s itself. */
#ifdef PW_VECTORS
#define DEFINE_KEEP_SPAN(NAME, T)                                              \
static inline void NAME(T *d, const T *s, const T *m, size_t n, T lo, T hi)    \
{                                                                              \
    typedef PW_VEC(T) VT;                                                      \
    typedef PW_IVEC(T) VI;                                                     \
    enum { LANES = sizeof(VT) / sizeof(T) };                                   \
    const VT vlo = (VT){0} + lo, vhi = (VT){0} + hi;                           \
    size_t j = 0;                                                              \
    for (; j + LANES <= n; j += LANES) {                                       \
        VT vs, vm;                                                             \
        memcpy(&vs, s + j, sizeof vs);                                         \
        memcpy(&vm, m + j, sizeof vm);                                         \
        const VI keep = (vm > vlo) & (vm < vhi);                               \
        vs = (VT)((VI)vs & keep);                                              \
        memcpy(d + j, &vs, sizeof vs);                                         \
    }                                                                          \
    for (; j < n; j++) d[j] = keep_##T(s[j], m[j], lo, hi);                    \
}
#else
#define DEFINE_KEEP_SPAN(NAME, T)                                              \
static inline void NAME(T *d, const T *s, const T *m, size_t n, T lo, T hi)    \
{                                                                              \
    for (size_t j = 0; j < n; j++) d[j] = keep_##T(s[j], m[j], lo, hi);        \
}
#endif

DEFINE_KEEP_SPAN(keep_span_float, float)
DEFINE_KEEP_SPAN(keep_span_double, double)

#endif
