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
#endif

#endif
