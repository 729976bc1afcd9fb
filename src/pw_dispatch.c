/* Picks the kernel family at import from what the CPU reports, never from
 * what the build machine had, so one wheel runs everywhere. */
#include "pw_runtime.h"

#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

static const pw_isa generic_isa = {
    "generic", PW_MR_GENERIC, PW_NR_GENERIC, pw_gemm_f32_generic,
    PW_MR_GENERIC, PW_NR_GENERIC, pw_gemm_f64_generic, 0};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PW_HAVE_AVX2_BUILD 1
static const pw_isa avx2_isa = {
    "avx2", PW_MR_AVX2_F32, PW_NR_AVX2_F32, pw_gemm_f32_avx2,
    PW_MR_AVX2_F64, PW_NR_AVX2_F64, pw_gemm_f64_avx2, 1};

static const pw_isa avx512_isa = {
    "avx512", PW_MR_AVX512_F32, PW_NR_AVX512_F32, pw_gemm_f32_avx512,
    PW_MR_AVX512_F64, PW_NR_AVX512_F64, pw_gemm_f64_avx512, 1};

static int cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int cpu_has_avx512(void)
{
    __builtin_cpu_init();
    /* The AVX-512 file also uses FMA on ymm vectors (a panel's last 8
     * columns); every AVX-512 CPU has it, but the check costs nothing. */
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}
#endif

#if defined(__aarch64__)
#define PW_HAVE_NEON_BUILD 1
/* NEON (Advanced SIMD) is part of the AArch64 base architecture. */
static const pw_isa neon_isa = {
    "neon", PW_MR_NEON_F32, PW_NR_NEON_F32, pw_gemm_f32_neon,
    PW_MR_NEON_F64, PW_NR_NEON_F64, pw_gemm_f64_neon, 0};
#endif

const pw_isa *pw_isa_by_name(const char *name)
{
    if (strcmp(name, "generic") == 0) return &generic_isa;
#ifdef PW_HAVE_AVX2_BUILD
    if (strcmp(name, "avx2") == 0 && cpu_has_avx2()) return &avx2_isa;
    if (strcmp(name, "avx512") == 0 && cpu_has_avx512()) return &avx512_isa;
#endif
#ifdef PW_HAVE_NEON_BUILD
    if (strcmp(name, "neon") == 0) return &neon_isa;
#endif
    return NULL;
}

const pw_isa *pw_isa_best(void)
{
#ifdef PW_HAVE_AVX2_BUILD
    if (cpu_has_avx512()) return &avx512_isa;
    if (cpu_has_avx2()) return &avx2_isa;
#endif
#ifdef PW_HAVE_NEON_BUILD
    return &neon_isa;
#endif
    return &generic_isa;
}

const char *pw_isa_available(void)
{
#ifdef PW_HAVE_AVX2_BUILD
    if (cpu_has_avx512()) return "generic avx2 avx512";
    if (cpu_has_avx2()) return "generic avx2";
#endif
#ifdef PW_HAVE_NEON_BUILD
    return "generic neon";
#endif
    return "generic";
}

size_t pw_llc_bytes(void)
{
    long bytes = 0;
#if defined(_SC_LEVEL3_CACHE_SIZE)
    bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
#if defined(_SC_LEVEL2_CACHE_SIZE)
    if (bytes <= 0) bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return bytes > 0 ? (size_t)bytes : 0;
}

void pw_store_fence(void)
{
#ifdef PW_HAVE_AVX2_BUILD
    __builtin_ia32_sfence();
#endif
}
