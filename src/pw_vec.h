/* 16-byte vector types for hand-vectorised loops, where the compiler has
 * GCC/Clang vector extensions (PW_VECTORS): x86-64 (SSE2 is baseline) and
 * AArch64 (NEON) alike.  Elsewhere (MSVC) the users fall back to scalar
 * code.  PW_VEC(T) / PW_IVEC(T): the vector of T and the matching integer
 * vector (compare results, bit masks), for T = float or double. */
#ifndef PW_VEC_H
#define PW_VEC_H

#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define PW_VECTORS 1
typedef float pw_v4f __attribute__((vector_size(16)));
typedef int32_t pw_v4i __attribute__((vector_size(16)));
typedef double pw_v2d __attribute__((vector_size(16)));
typedef int64_t pw_v2l __attribute__((vector_size(16)));
#define PW_VEC(T) PW_VEC_##T
#define PW_IVEC(T) PW_IVEC_##T
#define PW_VEC_float pw_v4f
#define PW_VEC_double pw_v2d
#define PW_IVEC_float pw_v4i
#define PW_IVEC_double pw_v2l
/* 32-byte vectors for loops that PW_CLONES compiles twice: one AVX register
 * in the avx2 clone, a pair of SSE registers in the baseline one. */
typedef float pw_v8f __attribute__((vector_size(32)));
typedef int32_t pw_v8i __attribute__((vector_size(32)));
typedef double pw_v4d __attribute__((vector_size(32)));
typedef int64_t pw_v4l __attribute__((vector_size(32)));
#define PW_WIDE_VEC(T) PW_WIDE_VEC_##T
#define PW_WIDE_IVEC(T) PW_WIDE_IVEC_##T
#define PW_WIDE_VEC_float pw_v8f
#define PW_WIDE_VEC_double pw_v4d
#define PW_WIDE_IVEC_float pw_v8i
#define PW_WIDE_IVEC_double pw_v4l
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
