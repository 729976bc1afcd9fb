/* The one microkernel contract every instruction set implements.
 *
 * Every pass of pwconv (forward and grad input in NHWC and NCHW, grad weight)
 * is reduced by the drivers to the same tile product, so a new instruction
 * set only has to provide this function for float and double:
 *
 *   for i < mr, j < nc:
 *     C[i*c_rs + j] = act( head[j] + sum_{k<kc} A[i][k] * B[k][j]
 *                          + row_bias[i] + R[i*r_rs + j] )
 *
 * A is read in place (rows a_rs apart, k steps a_ks apart, 1 when a_ks
 * is 0) and broadcast: A[i][k] = a[i*a_rs + k*a_ks].
 * B is packed: panel p holds columns [p*NR, p*NR + NR) and starts at
 * packed + p*panel_stride; its first NR values are the "head" (the bias in
 * the forward pass, zeros elsewhere), then kc rows of NR values, zero-padded
 * past the last real column.  The kernel walks every panel needed for nc
 * columns, so one call keeps its mr rows of A hot in L1 across all panels.
 *
 * Direct B (b_ks != 0): B is read in place instead of packed: row k of
 * panel p is at packed + p*panel_stride + k*b_ks (no head row; the
 * accumulators start at zero).  The NCHW drivers use it to read input plane
 * rows without copying them, and the NHWC driver to resume a packed panel
 * past its head for a later depth block (b_ks = NR).  Drivers pass it only
 * where every row holds NR readable values: whole panels in place (nc a
 * multiple of NR), or zero-padded packed rows (any nc).
 *
 * Accumulation order is fixed (head, then k ascending with FMA, then
 * row_bias, then R, then clamp) so results are bitwise repeatable.
 * row_bias and R may be NULL.  R may alias C exactly (same pointer and
 * stride): the drivers use that to accumulate over successive k chunks.
 * kc may be 0 (A is then never read): that gives act(head + row_bias + R),
 * which is what padded border pixels need.
 * The clamp propagates NaN (min/max keep a NaN operand), like PyTorch.
 * Callers guarantee 1 <= mr <= MR and nc >= 1.  A kernel reads nothing
 * past the kc values of each A row, the (kc+1)*NR values of each panel it
 * uses, or row_bias[mr-1]; loads are unaligned-safe (panels are 64-byte
 * aligned when the drivers pack them, but the contract does not need it).
 *
 * stream: C is written once, is larger than the cache can keep, and is not
 * read back by this call (no R aliasing it, no later depth block), so a
 * kernel may store whole aligned rows non-temporally, skipping the read for
 * ownership of each line.  A kernel may ignore it.  The caller runs
 * pw_store_fence() before C is read by another thread.
 *
 * ahead: ahead_rows rows of ahead_row_bytes bytes, ahead_rs bytes apart,
 * that the caller reads from memory soon after this call.  A kernel may ask
 * the cache for them while its arithmetic runs, a few lines per panel so
 * the requests never crowd out its own loads; it must not read them.  A
 * kernel may ignore it.
 *
 * b_copy: NULL, or, on a call with direct B, mr == MR and nc a multiple of
 * NR, where to copy B's panels as they are read: row k of panel p goes to
 * b_copy + p*b_copy_ps + (1+k)*NR, the packed layout past its head row,
 * which the kernel leaves alone (the caller zeroes it).  The NCHW plane
 * driver has each group's first row tile do this instead of packing B in
 * a pass of its own.  Only the families whose pw_isa entry sets copies_b
 * do it; the driver asks nothing of the others.
 */
#ifndef PW_KERNELS_H
#define PW_KERNELS_H

#include <stddef.h>

typedef struct {
    size_t kc;            /* reduction depth */
    size_t panel_stride;  /* elements from one packed panel to the next, >= (kc+1)*NR */
    ptrdiff_t a_rs;       /* elements between rows of A */
    ptrdiff_t a_ks;       /* elements between k steps of A; 0 means 1 */
    ptrdiff_t c_rs;       /* elements between rows of C */
    ptrdiff_t r_rs;       /* elements between rows of R (ignored when R is NULL) */
    ptrdiff_t b_ks;       /* 0: packed panels with a head row; else direct B, k stride */
    int clamp;            /* nonzero: y = min(max(y, lo), hi) with NaN kept */
    double lo, hi;
    int stream;           /* nonzero: C may be written with non-temporal
                             stores (a hint; see below) */
    const void *ahead;    /* NULL, or lines a later call reads (a hint; see below) */
    size_t ahead_rows, ahead_row_bytes;
    ptrdiff_t ahead_rs;   /* bytes between those rows */
    void *b_copy;         /* NULL, or where a direct call also copies B's
                             panels (see below; only if the isa copies_b) */
    size_t b_copy_ps;     /* elements from one copied panel to the next */
} pw_gemm_params;

typedef void (*pw_gemm_f32_fn)(size_t mr, size_t nc, const float *a,
                               const float *packed, float *c,
                               const float *row_bias, const float *r,
                               const pw_gemm_params *p);
typedef void (*pw_gemm_f64_fn)(size_t mr, size_t nc, const double *a,
                               const double *packed, double *c,
                               const double *row_bias, const double *r,
                               const pw_gemm_params *p);

/* One row of the dispatch table: the kernels of one instruction set and the
 * tile each was written for (mr rows per call at most, nr columns a panel). */
typedef struct {
    const char *name;
    size_t mr_f32, nr_f32;
    pw_gemm_f32_fn gemm_f32;
    size_t mr_f64, nr_f64;
    pw_gemm_f64_fn gemm_f64;
    int copies_b;         /* both kernels honour pw_gemm_params.b_copy */
} pw_isa;

/* Kernel entry points; each is defined only where its file is compiled for
 * a matching architecture (the file is empty elsewhere). */
void pw_gemm_f32_generic(size_t, size_t, const float *, const float *, float *,
                         const float *, const float *, const pw_gemm_params *);
void pw_gemm_f64_generic(size_t, size_t, const double *, const double *, double *,
                         const double *, const double *, const pw_gemm_params *);
void pw_gemm_f32_avx2(size_t, size_t, const float *, const float *, float *,
                      const float *, const float *, const pw_gemm_params *);
void pw_gemm_f64_avx2(size_t, size_t, const double *, const double *, double *,
                      const double *, const double *, const pw_gemm_params *);
void pw_gemm_f32_avx512(size_t, size_t, const float *, const float *, float *,
                        const float *, const float *, const pw_gemm_params *);
void pw_gemm_f64_avx512(size_t, size_t, const double *, const double *, double *,
                        const double *, const double *, const pw_gemm_params *);
void pw_gemm_f32_neon(size_t, size_t, const float *, const float *, float *,
                      const float *, const float *, const pw_gemm_params *);
void pw_gemm_f64_neon(size_t, size_t, const double *, const double *, double *,
                      const double *, const double *, const pw_gemm_params *);

#define PW_MR_GENERIC 4
#define PW_NR_GENERIC 8
#define PW_MR_AVX2_F32 6
#define PW_NR_AVX2_F32 16
#define PW_MR_AVX2_F64 6
#define PW_NR_AVX2_F64 8
#define PW_MR_AVX512_F32 7
#define PW_NR_AVX512_F32 32
#define PW_MR_AVX512_F64 7
#define PW_NR_AVX512_F64 16
#define PW_MR_NEON_F32 8
#define PW_NR_NEON_F32 8
#define PW_MR_NEON_F64 6
#define PW_NR_NEON_F64 4

#endif
