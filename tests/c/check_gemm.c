/* Exhaustive remainder check of one microkernel family against the contract
 * of src/pw_kernels.h.
 *
 *   cc -O2 -std=c11 -Isrc -DKERNEL=generic tests/c/check_gemm.c \
 *      src/gemm_generic.c -o check_gemm && ./check_gemm
 *
 * KERNEL is one of generic, avx2, avx512, neon.  The program checks the
 * float32 and float64 kernels of that family over every row count, many
 * column counts and depths, every epilogue combination and both tight and
 * loose strides, prints one summary line and exits 0, or prints the first
 * failing case and exits 1.
 *
 * B is given both ways the contract allows: packed panels with a head row
 * (b_ks == 0), and direct (b_ks != 0), a plain row-major matrix read in
 * place, for the full-panel column counts the drivers use it with.
 *
 * A is given in row layout (a_ks == 0, which means 1, and a_ks == 1
 * spelled out) and k-strided with adjacent rows (a_rs == 1): a_ks == MR,
 * the [k][MR] tiles grad weight reads, and a_ks == mr + 3, which leaves a
 * NaN gap after the rows of every k.
 *
 * The AVX2 family, whose tiles with the ahead hint are compiled apart from
 * the plain ones, runs every case both without and with it, and once more
 * with streamed stores asked for (its general epilogue instance), except
 * where R aliases C, which the contract rules out for streaming; C then
 * starts on a 32-byte boundary, so the non-temporal path is taken.
 *
 * Out-of-bounds reads are caught, not just wrong values: A, B, row_bias and
 * R each end exactly at an inaccessible page, so a read past them faults
 * (reported with the case being run), and every slack element the kernel
 * may not use is NaN, so using it shows up in the result.  Writes are caught
 * by comparing all of C outside the tile with a snapshot.
 */
#define _DEFAULT_SOURCE
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pw_kernels.h"

#ifndef KERNEL
#error "compile with -DKERNEL=generic|avx2|avx512|neon"
#endif

/* KERNEL is a bare token; map it to a number so #if can pick the tile. */
#define PW_ID_generic 1
#define PW_ID_avx2 2
#define PW_ID_avx512 3
#define PW_ID_neon 4
#define CAT_(x, y) x##y
#define CAT(x, y) CAT_(x, y)
#define STR_(x) #x
#define STR(x) STR_(x)
#define KERNEL_ID CAT(PW_ID_, KERNEL)
/* Families that act on the ahead and stream hints run every case with
 * each as well: they select separately compiled code there.  The others
 * ignore them. */
#define HAS_HINTS (KERNEL_ID == 2)

#if KERNEL_ID == 1
#define MR32 PW_MR_GENERIC
#define NR32 PW_NR_GENERIC
#define MR64 PW_MR_GENERIC
#define NR64 PW_NR_GENERIC
#elif KERNEL_ID == 2
#define MR32 PW_MR_AVX2_F32
#define NR32 PW_NR_AVX2_F32
#define MR64 PW_MR_AVX2_F64
#define NR64 PW_NR_AVX2_F64
#elif KERNEL_ID == 3
#define MR32 PW_MR_AVX512_F32
#define NR32 PW_NR_AVX512_F32
#define MR64 PW_MR_AVX512_F64
#define NR64 PW_NR_AVX512_F64
#elif KERNEL_ID == 4
#define MR32 PW_MR_NEON_F32
#define NR32 PW_NR_NEON_F32
#define MR64 PW_MR_NEON_F64
#define NR64 PW_NR_NEON_F64
#else
#error "KERNEL must be generic, avx2, avx512 or neon"
#endif

#define GEMM32 CAT(pw_gemm_f32_, KERNEL)
#define GEMM64 CAT(pw_gemm_f64_, KERNEL)

/* The values are generated and checked in double; these helpers are the
 * only places that know the element type, so one test body covers both. */
typedef struct {
    int is64;
    size_t mr, nr, esz;
    double eps;
} family;

static double get(const family *f, const void *buf, size_t i)
{
    return f->is64 ? ((const double *)buf)[i] : (double)((const float *)buf)[i];
}

static void set(const family *f, void *buf, size_t i, double v)
{
    if (f->is64)
        ((double *)buf)[i] = v;
    else
        ((float *)buf)[i] = (float)v;
}

/* ---- guarded buffers ---------------------------------------------------- */

/* A region whose end touches a PROT_NONE page.  place() puts n elements so
 * that they end there (up to rounding the start down to align bytes), so
 * the first element past the buffer is unreadable. */
typedef struct {
    unsigned char *end;
    size_t cap;
} arena;

static arena arena_new(size_t cap)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    cap = (cap + page - 1) / page * page;
    unsigned char *m = mmap(NULL, cap + page, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + cap, page, PROT_NONE) != 0) {
        perror("check_gemm: mmap/mprotect");
        exit(2);
    }
    arena a = {m + cap, cap};
    return a;
}

static void *place(const arena *a, const family *f, size_t n, size_t align)
{
    size_t bytes = n * f->esz;
    bytes = (bytes + align - 1) / align * align;
    if (bytes > a->cap) {
        fprintf(stderr, "check_gemm: arena too small\n");
        exit(2);
    }
    return a->end - bytes;
}

/* ---- reporting ---------------------------------------------------------- */

static char case_desc[512];

static void on_fault(int sig)
{
    static const char head[] = "check_gemm: FAIL: fault (read or write outside "
                               "the buffers) in case: ";
    (void)sig;
    ssize_t w = write(2, head, sizeof head - 1);
    w = write(2, case_desc, strlen(case_desc));
    w = write(2, "\n", 1);
    (void)w;
    _exit(1);
}

/* ---- random values -------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double urand(void) /* in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* ---- one case ------------------------------------------------------------- */

enum { R_NONE, R_SEPARATE, R_ALIAS_C };
/* A layouts: rows of kc values (a_ks 0 or 1), or k-major with the rows of
 * one k adjacent (a_rs 1, a_ks MR or mr + 3). */
enum { A_ROWS, A_ROWS_KS1, A_KMAJOR_MR, A_KMAJOR_GAP, A_NLAYOUTS };
enum { CLAMP_OFF, CLAMP_RANGE, CLAMP_NAN };

typedef struct {
    size_t mr, nc, kc;
    int direct;    /* B read in place (b_ks != 0) instead of packed panels */
    int alayout;   /* A_* */
    int loose;     /* strides larger than needed: slack between panels, or
                      between the rows of a direct B */
    int row_bias;  /* pass row_bias */
    int rmode;     /* R_* */
    int cmode;     /* CLAMP_* */
    int ahead;     /* pass the ahead hint (lines to ask the cache for) */
    int stream;    /* pass the stream hint (non-temporal stores allowed) */
} case_t;

/* What the ahead hint points at: three rows of 1000 bytes, 4 KB apart,
 * the first 1 KB into the area (nothing the kernel may read). */
static char ahead_area[3 * 4096];

typedef struct {
    arena a, b, rb, r;
    unsigned char *c_mem, *c_snap, *c_first;
    size_t c_cap;
    double *ref, *mag;
} buffers;

static void call_kernel(const family *f, size_t mr, size_t nc, const void *a,
                        const void *packed, void *c, const void *rb,
                        const void *r, const pw_gemm_params *p)
{
    if (f->is64)
        GEMM64(mr, nc, a, packed, c, rb, r, p);
    else
        GEMM32(mr, nc, a, packed, c, rb, r, p);
}

static int same_bits(const family *f, const unsigned char *x,
                     const unsigned char *y)
{
    return memcmp(x, y, f->esz) == 0;
}

static int run_case(const family *f, const case_t *cs, buffers *bf)
{
    const size_t mr = cs->mr, nc = cs->nc, kc = cs->kc, NR = f->nr;
    const size_t npanel = (nc + NR - 1) / NR;
    const double nan = NAN;

    /* Fields by name, so a field added to the contract later starts at 0
     * here rather than shifting the others. */
    pw_gemm_params p = {
        .kc = kc,
        .a_rs = (ptrdiff_t)(kc + (cs->loose ? 5 : 0)),
        .a_ks = 0,
        .c_rs = (ptrdiff_t)(nc + (cs->loose ? 3 : 0)),
        .r_rs = (ptrdiff_t)(nc + (cs->loose ? 7 : 0)),
        .b_ks = 0,
        .clamp = 0,
    };
    if (cs->ahead) {
        p.ahead = ahead_area + 1024;
        p.ahead_rows = 3;
        p.ahead_row_bytes = 1000;
        p.ahead_rs = 4096;
    }
    p.stream = cs->stream;
    if (cs->direct) {
        /* Panels are consecutive column blocks of the rows; loose leaves an
         * odd-sized NaN gap after each row (and misaligns the rows). */
        p.panel_stride = NR;
        p.b_ks = (ptrdiff_t)(nc + (cs->loose ? 3 : 0));
    } else if (cs->loose) {
        /* The stride the packer uses (16-element multiple) plus one more
         * row of slack. */
        p.panel_stride = ((kc + 2) * NR + 15) / 16 * 16;
    } else {
        p.panel_stride = (kc + 1) * NR; /* the minimum the contract allows */
    }
    if (cs->alayout == A_ROWS_KS1) {
        p.a_ks = 1;
    } else if (cs->alayout == A_KMAJOR_MR || cs->alayout == A_KMAJOR_GAP) {
        p.a_rs = 1;
        p.a_ks = (ptrdiff_t)(cs->alayout == A_KMAJOR_MR ? f->mr : mr + 3);
    }
    /* The layout the reference and the fill use: a_ks == 0 means 1. */
    const size_t a_rs = (size_t)p.a_rs, a_ks = p.a_ks ? (size_t)p.a_ks : 1;
    char a_desc[64];
    if (cs->alayout == A_ROWS || cs->alayout == A_ROWS_KS1)
        snprintf(a_desc, sizeof a_desc, "A=rows(a_rs=%s,a_ks=%td)",
                 cs->loose ? "kc+5" : "kc", p.a_ks);
    else
        snprintf(a_desc, sizeof a_desc, "A=k-major(a_rs=1,a_ks=%s=%td)",
                 cs->alayout == A_KMAJOR_MR ? "MR" : "mr+3", p.a_ks);

    snprintf(case_desc, sizeof case_desc,
             "%s f%d mr=%zu nc=%zu kc=%zu %s%s%s "
             "B=%s(panel_stride=%zu,b_ks=%td) %s row_bias=%s R=%s clamp=%s",
             STR(KERNEL), f->is64 ? 64 : 32, mr, nc, kc, a_desc,
             cs->ahead ? " ahead" : "", cs->stream ? " stream" : "",
             cs->direct ? "direct" : "packed", p.panel_stride, p.b_ks,
             cs->loose ? "loose(c_rs=nc+3,r_rs=nc+7)" : "tight",
             cs->row_bias ? "yes" : "no",
             cs->rmode == R_NONE ? "none"
                                 : cs->rmode == R_SEPARATE ? "separate" : "alias-C",
             cs->cmode == CLAMP_OFF ? "off"
                                    : cs->cmode == CLAMP_RANGE ? "range" : "relu+NaN inputs");

    void *packed;
    if (cs->direct) {
        /* Direct B: ends right after B[kc-1][nc-1], the last element a
         * kernel may read; the gaps between rows are NaN.  With kc == 0
         * nothing may be read, so the pointer is the guard page itself. */
        const size_t nb = kc ? (kc - 1) * (size_t)p.b_ks + nc : 0;
        packed = place(&bf->b, f, nb, f->esz);
        for (size_t i = 0; i < nb; i++)
            set(f, packed, i, (i % (size_t)p.b_ks) < nc ? urand() : nan);
    } else {
        /* Packed panels: 64-byte aligned like the packer's, NaN in every
         * slack element (between panel_stride and the panel's data, and the
         * rounding tail), zero in the padding columns the contract
         * promises. */
        const size_t nb = npanel * p.panel_stride;
        packed = place(&bf->b, f, nb, 64);
        const size_t nb_round =
            (size_t)(bf->b.end - (unsigned char *)packed) / f->esz;
        for (size_t i = 0; i < nb_round; i++)
            set(f, packed, i, nan);
        for (size_t q = 0; q < npanel; q++)
            for (size_t k = 0; k <= kc; k++)
                for (size_t j = 0; j < NR; j++)
                    set(f, packed, q * p.panel_stride + k * NR + j,
                        q * NR + j < nc ? urand() : 0.0);
    }

    /* A ends right after A[mr-1][kc-1], the last element a kernel may read
     * in every layout here; everything in between that is not an element
     * of A (gaps between rows, or after the rows of one k) is NaN.  With
     * kc == 0 the kernel gets NULL, so any dereference faults. */
    void *a = NULL;
    if (kc) {
        const size_t na = (mr - 1) * a_rs + (kc - 1) * a_ks + 1;
        a = place(&bf->a, f, na, f->esz);
        for (size_t i = 0; i < na; i++)
            set(f, a, i, nan);
        for (size_t i = 0; i < mr; i++)
            for (size_t k = 0; k < kc; k++)
                set(f, a, i * a_rs + k * a_ks, urand());
    }

    void *rb = NULL;
    if (cs->row_bias) {
        rb = place(&bf->rb, f, mr, f->esz);
        for (size_t i = 0; i < mr; i++)
            set(f, rb, i, urand());
    }

    /* C: poison everywhere (finite and far from any result, so an element
     * of the tile left unwritten fails even where NaN is expected), with
     * a margin of 8 elements before the tile and one row after it. */
    size_t c_pre = 8;
    if (cs->stream)     /* C's first row on a 32-byte boundary */
        c_pre += (32 - ((uintptr_t)bf->c_mem + c_pre * f->esz) % 32) % 32 / f->esz;
    const size_t nc_elems = c_pre + (mr + 1) * (size_t)p.c_rs + 8;
    if (nc_elems * f->esz > bf->c_cap) {
        fprintf(stderr, "check_gemm: C buffer too small\n");
        exit(2);
    }
    for (size_t i = 0; i < nc_elems; i++)
        set(f, bf->c_mem, i, 12345.0);
    void *c = bf->c_mem + c_pre * f->esz;

    void *r = NULL;
    size_t r_rs = (size_t)p.r_rs;
    if (cs->rmode == R_SEPARATE) {
        const size_t nr_elems = (mr - 1) * r_rs + nc;
        r = place(&bf->r, f, nr_elems, f->esz);
        for (size_t i = 0; i < nr_elems; i++)
            set(f, r, i, (i % r_rs) < nc ? urand() : nan);
    } else if (cs->rmode == R_ALIAS_C) {
        r = c;
        r_rs = (size_t)p.c_rs;
        p.r_rs = p.c_rs;
        for (size_t i = 0; i < mr; i++)
            for (size_t j = 0; j < nc; j++)
                set(f, c, i * r_rs + j, urand());
    }

    /* NaN inputs: in the last real row of A (the row the aliased rows
     * repeat), in the head (packed) or first row of B (direct) of the last
     * column, in B[kc-1][0], and in R, so NaN must survive the FMA chain,
     * the epilogue adds and both clamp steps. */
    if (cs->cmode == CLAMP_NAN) {
        const size_t jn = nc - 1, qn = jn / NR, jj = jn % NR;
        if (!cs->direct)
            set(f, packed, qn * p.panel_stride + jj, nan);
        if (kc) {
            set(f, a, (mr - 1) * a_rs + kc / 2 * a_ks, nan);
            if (cs->direct) {
                set(f, packed, jn, nan);
                set(f, packed, (kc - 1) * (size_t)p.b_ks, nan);
            } else {
                set(f, packed, kc * NR, nan);
            }
        }
        if (r)
            set(f, r, 0, nan);
    }

    if (cs->cmode != CLAMP_OFF) {
        p.clamp = 1;
        const double s = sqrt((kc + 3) / 3.0);
        if (cs->cmode == CLAMP_RANGE) {
            p.lo = -0.5 * s;
            p.hi = 0.5 * s;
        } else {
            p.lo = 0.0;
            p.hi = INFINITY;
        }
    } else {
        /* Ignored when clamp is off: make sure they are not applied. */
        p.lo = 1e30;
        p.hi = -1e30;
    }

    /* Reference in double, in the contract's order.  Row k of B starts
     * at row0 + k*ks within each panel. */
    const size_t row0 = cs->direct ? 0 : NR;
    const size_t ks = cs->direct ? (size_t)p.b_ks : NR;
    for (size_t i = 0; i < mr; i++)
        for (size_t j = 0; j < nc; j++) {
            const size_t q = j / NR, jj = j % NR;
            const size_t base = q * p.panel_stride + jj;
            double s = cs->direct ? 0.0 : get(f, packed, base), m = fabs(s);
            for (size_t k = 0; k < kc; k++) {
                const double t = get(f, a, i * a_rs + k * a_ks) *
                                 get(f, packed, base + row0 + k * ks);
                s += t;
                m += fabs(t);
            }
            if (rb) {
                s += get(f, rb, i);
                m += fabs(get(f, rb, i));
            }
            if (r) {
                const double t = get(f, r, i * r_rs + j);
                s += t;
                m += fabs(t);
            }
            if (p.clamp) {
                if (s < p.lo)
                    s = p.lo;
                if (s > p.hi)
                    s = p.hi;
            }
            bf->ref[i * nc + j] = s;
            bf->mag[i * nc + j] = m;
        }

    memcpy(bf->c_snap, bf->c_mem, nc_elems * f->esz);
    call_kernel(f, mr, nc, a, packed, c, rb, r, &p);

    /* Repeatability: the same call on the same inputs gives the same bits
     * (catches reads of uninitialised registers or memory). */
    memcpy(bf->c_first, bf->c_mem, nc_elems * f->esz);
    memcpy(bf->c_mem, bf->c_snap, nc_elems * f->esz);
    call_kernel(f, mr, nc, a, packed, c, rb, r, &p);
    if (memcmp(bf->c_first, bf->c_mem, nc_elems * f->esz) != 0) {
        fprintf(stderr, "check_gemm: FAIL: two identical calls differ in case: %s\n",
                case_desc);
        return 0;
    }

    for (size_t e = 0; e < nc_elems; e++) {
        const ptrdiff_t off = (ptrdiff_t)e - (ptrdiff_t)c_pre;
        const ptrdiff_t i = off >= 0 ? off / p.c_rs : -1;
        const ptrdiff_t j = off >= 0 ? off % p.c_rs : -1;
        const unsigned char *now = bf->c_mem + e * f->esz;
        if (i >= 0 && (size_t)i < mr && (size_t)j < nc) {
            const double got = get(f, bf->c_mem, e);
            const double want = bf->ref[(size_t)i * nc + (size_t)j];
            const double tol = 2.0 * (double)(kc + 4) * f->eps *
                               bf->mag[(size_t)i * nc + (size_t)j] + 1e-300;
            int ok;
            if (isnan(want))
                ok = isnan(got);
            else
                ok = !isnan(got) && fabs(got - want) <= tol;
            if (!ok) {
                fprintf(stderr,
                        "check_gemm: FAIL: C[%td][%td] = %.17g, expected %.17g "
                        "(tolerance %.3g) in case: %s\n",
                        i, j, got, want, tol, case_desc);
                return 0;
            }
        } else if (!same_bits(f, now, bf->c_snap + e * f->esz)) {
            fprintf(stderr,
                    "check_gemm: FAIL: wrote outside the tile at row %td col "
                    "%td (element %td from C) in case: %s\n",
                    i, j, off, case_desc);
            return 0;
        }
    }
    return 1;
}

/* ---- the sweep ------------------------------------------------------------ */

/* Which combinations of the sweep run. */
static int wanted(const family *f, const case_t *cs)
{
    const size_t NR = f->nr, nc = cs->nc, kc = cs->kc;
    const int rbf = cs->row_bias, rm = cs->rmode, cm = cs->cmode;
    /* Drivers pass direct B full panels only. */
    if (cs->direct && nc % NR != 0)
        return 0;
    /* Streaming is for a C no operand aliases. */
    if (cs->stream && rm == R_ALIAS_C)
        return 0;
    /* Deep cases only need the k loops checked once per shape; the
     * epilogue variants are covered by the shallow ones. */
    if (kc > 17 && (rbf != rm % 2 || cm == CLAMP_OFF))
        return 0;
    if (cs->alayout == A_ROWS)
        return 1;
    /* The other A layouts change only how A is read: every row count and
     * depth but 1000 (no k loop unrolls so far that 1000 adds to 255),
     * columns at 1 to 4 panels (A is re-read per panel, with and without a
     * column tail), and three epilogues (plain; NaN in A through the clamp;
     * range clamp with R aliasing C), to keep the qemu run short.  a_ks == 1
     * spelled out must read A as a_ks == 0 does: its loose (a_rs > kc) half
     * is enough. */
    if (kc == 1000 || (cs->alayout == A_ROWS_KS1 && !cs->loose))
        return 0;
    if (nc != 1 && nc != NR && nc != NR + 1 && nc != 3 * NR &&
        nc != 3 * NR + 1)
        return 0;
    return (!rbf && rm == R_NONE && cm == CLAMP_OFF) ||
           (rbf && rm == R_SEPARATE && cm == CLAMP_NAN) ||
           (!rbf && rm == R_ALIAS_C && cm == CLAMP_RANGE);
}

/* Adds the cases run to count[0] (packed B) and count[1] (direct B), and
 * those with a k-major A (a_ks > 1) among them to count[2]. */
static void sweep(const family *f, long count[3])
{
    const size_t NR = f->nr;
    size_t ncs[200], n_nc = 0;
    /* Every column count up to two panels and one, then the edges of the
     * third panel: covers each split of the last store (full vectors plus
     * every tail length) behind 0, 1 and 2 full panels.  Direct B takes
     * the full-panel ones among them (1, 2 and 3 panels). */
    for (size_t n = 1; n <= 2 * NR + 1; n++)
        ncs[n_nc++] = n;
    ncs[n_nc++] = 2 * NR + 3;
    ncs[n_nc++] = 3 * NR - 1;
    ncs[n_nc++] = 3 * NR;
    ncs[n_nc++] = 3 * NR + 1;

    size_t kcs[32], n_kc = 0;
    for (size_t k = 0; k <= 17; k++)
        kcs[n_kc++] = k;
    kcs[n_kc++] = 64;
    kcs[n_kc++] = 255;
    kcs[n_kc++] = 1000;

    buffers bf;
    const size_t kmax = 1000, ncmax = 3 * NR + 1, npmax = 4;
    const size_t rsmax = ncmax + 8;
    const size_t b_packed = npmax * (kmax + 2 + 16) * NR + 64 / f->esz;
    const size_t b_direct = kmax * (ncmax + 8);
    /* Row layout: mr * (kc + 5); k-major: kc * (mr + 3). */
    bf.a = arena_new((f->mr + 3) * (kmax + 8) * f->esz);
    bf.b = arena_new((b_packed > b_direct ? b_packed : b_direct) * f->esz);
    bf.rb = arena_new(f->mr * f->esz);
    bf.r = arena_new(f->mr * rsmax * f->esz);
    bf.c_cap = (16 + 32 + (f->mr + 1) * rsmax + 8) * f->esz;
    bf.c_mem = malloc(bf.c_cap);
    bf.c_snap = malloc(bf.c_cap);
    bf.c_first = malloc(bf.c_cap);
    bf.ref = malloc(f->mr * ncmax * sizeof(double));
    bf.mag = malloc(f->mr * ncmax * sizeof(double));
    if (!bf.c_mem || !bf.c_snap || !bf.c_first || !bf.ref || !bf.mag) {
        fprintf(stderr, "check_gemm: out of memory\n");
        exit(2);
    }

    /* v runs over every combination of strides and epilogue. */
    for (int al = 0; al < A_NLAYOUTS; al++)
        for (size_t ki = 0; ki < n_kc; ki++)
            for (size_t mr = 1; mr <= f->mr; mr++)
                for (size_t ni = 0; ni < n_nc; ni++)
                    for (int direct = 0; direct < 2; direct++)
                        for (int v = 0; v < 2 * 2 * 3 * 3 * (1 + 2 * HAS_HINTS); v++) {
                            const case_t cs = {
                                .mr = mr, .nc = ncs[ni], .kc = kcs[ki],
                                .direct = direct, .alayout = al,
                                .loose = v % 2, .row_bias = v / 2 % 2,
                                .rmode = v / 4 % 3, .cmode = v / 12 % 3,
                                .ahead = v / 36 == 1, .stream = v / 36 == 2};
                            if (!wanted(f, &cs))
                                continue;
                            if (!run_case(f, &cs, &bf))
                                exit(1);
                            count[direct]++;
                            if (al == A_KMAJOR_MR || al == A_KMAJOR_GAP)
                                count[2]++;
                        }
    free(bf.c_mem);
    free(bf.c_snap);
    free(bf.c_first);
    free(bf.ref);
    free(bf.mag);
}

/* ---- B copied while read in place (pw_gemm_params.b_copy) ---------------- */

/* The kernels whose isa entry says copies_b (pw_dispatch.c). */
#define COPIES_B (KERNEL_ID == 2 || KERNEL_ID == 3)

/* A whole tile over 1-3 whole panels of direct B, with b_copy pointing at
 * panels of NaN: C must be bit for bit what the same call without b_copy
 * gives, each copied panel's rows 1..kc must hold B's rows bit for bit, and
 * its head row and the slack after its rows must stay NaN.  Returns the
 * number of cases run. */
static long copy_sweep(const family *f)
{
    const size_t NR = f->nr, MR = f->mr, slack = 5;
    const size_t kcs[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 64, 255};
    long cases = 0;
    for (size_t ki = 0; ki < sizeof kcs / sizeof kcs[0]; ki++)
        for (size_t np = 1; np <= 3; np++)
            for (int v = 0; v < 4; v++) {
                const size_t kc = kcs[ki], nc = np * NR, b_ks = nc + (v & 1 ? 3 : 0);
                const size_t ps = (kc + 1) * NR + slack;
                unsigned char *a = malloc((MR * kc + 1) * f->esz);
                unsigned char *b = malloc((kc * b_ks + 1) * f->esz);
                unsigned char *copy = malloc(np * ps * f->esz);
                unsigned char *c0 = malloc(MR * nc * f->esz);
                unsigned char *c1 = malloc(MR * nc * f->esz);
                unsigned char *rb = malloc(MR * f->esz);
                if (!a || !b || !copy || !c0 || !c1 || !rb) {
                    fprintf(stderr, "check_gemm: out of memory\n");
                    exit(2);
                }
                for (size_t i = 0; i < MR * kc; i++) set(f, a, i, urand());
                for (size_t i = 0; i < kc * b_ks; i++) set(f, b, i, urand());
                for (size_t i = 0; i < np * ps; i++) set(f, copy, i, NAN);
                for (size_t i = 0; i < MR; i++) set(f, rb, i, urand());
                pw_gemm_params p = {.kc = kc, .panel_stride = NR, .a_rs = (ptrdiff_t)kc,
                                    .c_rs = (ptrdiff_t)nc, .b_ks = (ptrdiff_t)b_ks,
                                    .clamp = v & 2, .lo = -0.25, .hi = 0.25};
                snprintf(case_desc, sizeof case_desc, "%s f%d copy kc=%zu panels=%zu b_ks=%zu clamp=%d",
                         STR(KERNEL), f->is64 ? 64 : 32, kc, np, b_ks, p.clamp);
                call_kernel(f, MR, nc, kc ? (void *)a : NULL, b, c0, rb, NULL, &p);
                p.b_copy = copy;
                p.b_copy_ps = ps;
                call_kernel(f, MR, nc, kc ? (void *)a : NULL, b, c1, rb, NULL, &p);
                if (memcmp(c0, c1, MR * nc * f->esz) != 0) {
                    fprintf(stderr, "check_gemm: FAIL: C differs with b_copy in case: %s\n",
                            case_desc);
                    exit(1);
                }
                for (size_t q = 0; q < np; q++)
                    for (size_t e = 0; e < ps; e++) {
                        const size_t k = e / NR, j = e % NR;
                        const unsigned char *got = copy + (q * ps + e) * f->esz;
                        int ok;
                        if (k >= 1 && k <= kc)
                            ok = memcmp(got, b + ((k - 1) * b_ks + q * NR + j) * f->esz,
                                        f->esz) == 0;
                        else
                            ok = isnan(get(f, copy, q * ps + e));
                        if (!ok) {
                            fprintf(stderr, "check_gemm: FAIL: copied panel %zu element "
                                    "%zu (row %zu) wrong in case: %s\n", q, e, k, case_desc);
                            exit(1);
                        }
                    }
                free(a); free(b); free(copy); free(c0); free(c1); free(rb);
                cases++;
            }
    return cases;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fault;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);

    const family f32 = {.is64 = 0, .mr = MR32, .nr = NR32,
                        .esz = sizeof(float), .eps = 0x1p-23};
    const family f64 = {.is64 = 1, .mr = MR64, .nr = NR64,
                        .esz = sizeof(double), .eps = 0x1p-52};
    long n32[3] = {0, 0, 0}, n64[3] = {0, 0, 0};
    sweep(&f32, n32);
    sweep(&f64, n64);
    if (COPIES_B)
        printf("check_gemm %s: b_copy OK, %ld cases\n", STR(KERNEL),
               copy_sweep(&f32) + copy_sweep(&f64));
    printf("check_gemm %s: OK, %ld cases (f32 %dx%d: %ld packed + %ld direct, "
           "%ld with k-major A; f64 %dx%d: %ld packed + %ld direct, %ld with "
           "k-major A)\n",
           STR(KERNEL), n32[0] + n32[1] + n64[0] + n64[1], MR32, NR32, n32[0],
           n32[1], n32[2], MR64, NR64, n64[0], n64[1], n64[2]);
    return 0;
}
