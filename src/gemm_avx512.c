/* AVX-512F kernels: 7x32 float (14 zmm accumulators, two B loads and one
 * broadcast per k), 7x16 double.  That uses 17 of the 32 zmm registers in
 * the k loop, so the accumulators never spill.
 *
 * Compiled without -mavx512f: each function carries target("avx512f,fma")
 * so the extension still imports on CPUs without AVX-512, where dispatch
 * never calls these.  GCC does not inline across differing targets, so
 * every helper carries the same attribute.
 *
 * Same shape as gemm_avx2.c (row count as a compile-time constant,
 * instantiated for 7, 4, 2 and 1 rows; epilogue instances; C and residual
 * lines asked for at each panel's start; lines asked ahead; streamed
 * stores), with narrower classes for a last panel (see PANEL_CLASS), and
 * masked loads and stores for ragged column counts: masked-off lanes are
 * neither read nor written (and cannot fault), so nothing past nc is
 * touched and no copy through memory is needed.  The kernel is written
 * once, in gemm_avx512_tile.h, and instantiated below per element type. */
#include "pw_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,fma")))
#define INLINE static inline __attribute__((always_inline, target("avx512f,fma")))
#define NOINLINE static __attribute__((noinline, target("avx512f,fma")))

/* Row loops must be fully unrolled or the accumulator arrays live on the
 * stack.  GCC needs the pragma (an upper bound on the trip count).  Clang
 * fully unrolls these constant-count loops on its own, while its reading of
 * the same pragma (or of a count-free "unroll") left some instantiations
 * partly rolled with accumulators in memory, so it gets none. */
#if defined(__clang__)
#define UNROLL_ROWS
#else
#define UNROLL_ROWS _Pragma("GCC unroll 7")
#endif

/* Lanes [0, n) of one vector; n may exceed the lane count (all set) or be
 * 0 or negative (none set), which lets the second vector of a panel take
 * ncols - lanes without a separate branch. */
INLINE __mmask16 mask16(ptrdiff_t n)
{
    if (n <= 0) return 0;
    if (n >= 16) return (__mmask16)0xFFFF;
    return (__mmask16)((1u << n) - 1u);
}

INLINE __mmask8 mask8(ptrdiff_t n)
{
    if (n <= 0) return 0;
    if (n >= 8) return (__mmask8)0xFF;
    return (__mmask8)((1u << n) - 1u);
}

#include "pw_tile_parts.h"

/* ---------------------------------------------------------------- float */

#define T float
#define SFX f32
#define L 16
#define V512 __m512
#define V256 __m256
#define OP512(op) _mm512_##op##_ps
#define OP256(op) _mm256_##op##_ps
#define SET1 _mm512_set1_ps
#define BCAST256 _mm256_broadcast_ss
#define LO256 _mm512_castps512_ps256
#define HI512 _mm512_castps256_ps512
#define MASK mask16
#define K_UNROLL _Pragma("GCC unroll 4")
/* 32->16 forward at 112x112 0.86-0.93 of the time with them. */
#define MID_INSTANCES 1
#include "gemm_avx512_tile.h"
#undef T
#undef SFX
#undef L
#undef V512
#undef V256
#undef OP512
#undef OP256
#undef SET1
#undef BCAST256
#undef LO256
#undef HI512
#undef MASK
#undef K_UNROLL
#undef MID_INSTANCES

/* --------------------------------------------------------------- double */

/* Not unrolled in k, as in gemm_avx2.c; the one-zmm class was not measured
 * with epilogue instances. */
#define T double
#define SFX f64
#define L 8
#define V512 __m512d
#define V256 __m256d
#define OP512(op) _mm512_##op##_pd
#define OP256(op) _mm256_##op##_pd
#define SET1 _mm512_set1_pd
#define BCAST256 _mm256_broadcast_sd
#define LO256 _mm512_castpd512_pd256
#define HI512 _mm512_castpd256_pd512
#define MASK mask8
#define K_UNROLL
#define MID_INSTANCES 0
#include "gemm_avx512_tile.h"

#else
typedef int pw_avx512_unused;
#endif
