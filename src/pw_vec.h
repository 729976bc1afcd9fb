/* Vector types for hand-vectorised loops, where the compiler has GCC/Clang
 * vector extensions (PW_VECTORS): x86-64 (SSE2 is baseline) and AArch64
 * (NEON) alike.  Elsewhere (MSVC) the users fall back to scalar code.
 * PW_VEC(T) / PW_IVEC(T): the 16-byte vector of T and the matching integer
 * vector (compare results, bit masks), for T = float or double.
 * PW_WIDE_VEC(T) / PW_WIDE_IVEC(T): the same in 32 bytes, for loops that
 * PW_CLONES compiles twice: one AVX register in the avx2 clone, a pair of
 * SSE registers in the baseline one. */
#ifndef PW_VEC_H
#define PW_VEC_H

#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define PW_VECTORS 1
#define PW_VECTOR_TYPES(BYTES)                                                 \
    typedef float pw_float##BYTES __attribute__((vector_size(BYTES)));        \
    typedef int32_t pw_ifloat##BYTES __attribute__((vector_size(BYTES)));     \
    typedef double pw_double##BYTES __attribute__((vector_size(BYTES)));      \
    typedef int64_t pw_idouble##BYTES __attribute__((vector_size(BYTES)));
PW_VECTOR_TYPES(16)
PW_VECTOR_TYPES(32)
#define PW_VEC(T) pw_##T##16
#define PW_IVEC(T) pw_i##T##16
#define PW_WIDE_VEC(T) pw_##T##32
#define PW_WIDE_IVEC(T) pw_i##T##32
#endif

/* A function marked PW_CLONES is built for AVX2 and for the baseline, and
 * the loader picks one by the CPU (GNU ifunc: x86-64 Linux with glibc, and
 * a compiler that has target_clones); elsewhere it is built once. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && \
    defined(__has_attribute)
#if __has_attribute(target_clones)
#define PW_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef PW_CLONES
#define PW_CLONES
#endif

#endif
