#include "pw_pack.h"

#include <string.h>

#include "pw_mask.h"
#include "pw_sums.h"

size_t pw_panel_stride(size_t kc, size_t nr)
{
    return ((kc + 1) * nr + 15) / 16 * 16;
}

/* Copy one row of a panel: n <= nr real values, zeros after.  The full-width
 * case has a constant size per nr so the compiler emits plain vector moves
 * instead of a memcpy call per 64 bytes. */
#define DEFINE_COPY_ROW(NAME, T)                                               \
static inline void NAME(T *dst, const T *src, size_t n, size_t nr)             \
{                                                                              \
    if (n == nr) {                                                             \
        switch (nr) {                                                          \
        case 4: memcpy(dst, src, 4 * sizeof(T)); return;                       \
        case 8: memcpy(dst, src, 8 * sizeof(T)); return;                       \
        case 16: memcpy(dst, src, 16 * sizeof(T)); return;                     \
        case 32: memcpy(dst, src, 32 * sizeof(T)); return;                     \
        default: break;                                                        \
        }                                                                      \
    }                                                                          \
    for (size_t j = 0; j < n; j++) dst[j] = src[j];                            \
    for (size_t j = n; j < nr; j++) dst[j] = 0;                                \
}

DEFINE_COPY_ROW(copy_row_f32, float)
DEFINE_COPY_ROW(copy_row_f64, double)

/* copy_row with the activation's mask applied. */
#define DEFINE_MASK_ROW(NAME, T)                                               \
static inline void NAME(T *dst, const T *src, const T *m, size_t n, size_t nr, \
                        T lo, T hi)                                            \
{                                                                              \
    keep_span_##T(dst, src, m, n, lo, hi);                                     \
    for (size_t j = n; j < nr; j++) dst[j] = 0;                                \
}

DEFINE_MASK_ROW(mask_row_f32, float)
DEFINE_MASK_ROW(mask_row_f64, double)

/* Rows far apart in memory (NCHW planes) are separate streams that the
 * hardware prefetchers pick up late, a few misses into each: the dense copy
 * asks for the row PACK_AHEAD ahead while it copies this one. */
#define PACK_AHEAD 4
#define TRANSPOSE_KBLOCK 64

#define DEFINE_PACK(NAME, T, COPY_ROW, MASK_ROW, TRANSPOSE)                    \
void NAME(T *dst, size_t nr, size_t panel_stride, size_t kc, size_t ncols,     \
          const T *src, ptrdiff_t k_stride, ptrdiff_t j_stride,                \
          const ptrdiff_t *k_off, const ptrdiff_t *j_off, const T *head,       \
          const T *mask, double lo, double hi)                                 \
{                                                                              \
    const T tlo = (T)lo, thi = (T)hi;                                          \
    const size_t npanels = (ncols + nr - 1) / nr;                              \
    for (size_t p = 0; p < npanels; p++) {                                     \
        const size_t j0 = p * nr, w = ncols - j0 < nr ? ncols - j0 : nr;       \
        T *panel = dst + p * panel_stride;                                     \
        for (size_t j = 0; j < nr; j++)                                        \
            panel[j] = head && j < w ? head[j0 + j] : (T)0;                    \
    }                                                                          \
    if (!j_off && !k_off && !mask && k_stride == 1 && j_stride != 1) {         \
        /* Channel planes, each column's k run contiguous: a plain transpose \
         * per panel, in vector blocks.  The column walk below stored one     \
         * value at a time: 40% of a 32->16 NCHW grad weight at 4x112x112     \
         * (perf). */                                                         \
        for (size_t p = 0; p < npanels; p++) {                                 \
            const size_t j0 = p * nr, w = ncols - j0 < nr ? ncols - j0 : nr;   \
            T *rows = dst + p * panel_stride + nr;                             \
            TRANSPOSE(rows, (ptrdiff_t)nr, src + (ptrdiff_t)j0 * j_stride,      \
                      j_stride, w, kc, NULL, 0, 0, 0, 0);                      \
            if (w < nr)                                                        \
                for (size_t k = 0; k < kc; k++)                                \
                    memset(rows + k * nr + w, 0, (nr - w) * sizeof(T));       \
        }                                                                      \
        return;                                                                \
    }                                                                          \
    if (j_off || j_stride != 1) {                                              \
        /* Columns are far apart in src (a transpose, as for NCHW input in   \
         * grad weight): walk each source column down k, so reads stream,    \
         * but only TRANSPOSE_KBLOCK steps of k at a time within one panel,  \
         * so the rows those scattered writes land in stay in L1 until the   \
         * panel's other columns fill them (a whole panel, often 100+ KB,    \
         * would not: measured 1.7-2.4x slower). */                          \
        for (size_t p = 0; p < npanels; p++) {                                 \
            const size_t j0 = p * nr, w = ncols - j0 < nr ? ncols - j0 : nr;   \
            for (size_t k0 = 0; k0 < kc; k0 += TRANSPOSE_KBLOCK) {             \
                const size_t k1 = kc - k0 < TRANSPOSE_KBLOCK ? kc : k0 + TRANSPOSE_KBLOCK; \
                for (size_t j = j0; j < j0 + w; j++) {                         \
                    const ptrdiff_t jo = j_off ? j_off[j] : (ptrdiff_t)j * j_stride; \
                    T *col = dst + p * panel_stride + nr + (j - j0);           \
                    if (!k_off && jo >= 0) {                                   \
                        /* Strided copy without per-element offset tests; the \
                         * mask, when there is one, as a branch-free select. */\
                        const T *s = src + jo;                                 \
                        if (!mask) {                                           \
                            for (size_t k = k0; k < k1; k++)                   \
                                col[k * nr] = s[(ptrdiff_t)k * k_stride];      \
                        } else {                                               \
                            const T *m = mask + jo;                            \
                            for (size_t k = k0; k < k1; k++) {                 \
                                const ptrdiff_t o = (ptrdiff_t)k * k_stride;   \
                                col[k * nr] = keep_##T(s[o], m[o], tlo, thi);          \
                            }                                                  \
                        }                                                      \
                        continue;                                              \
                    }                                                          \
                    for (size_t k = k0; k < k1; k++) {                         \
                        const ptrdiff_t ko = k_off ? k_off[k] : (ptrdiff_t)k * k_stride; \
                        T v = (ko < 0 || jo < 0) ? (T)0 : src[ko + jo];        \
                        if (mask && v != 0)                                    \
                            v = keep_##T(v, mask[ko + jo], tlo, thi);          \
                        col[k * nr] = v;                                       \
                    }                                                          \
                }                                                              \
            }                                                                  \
        }                                                                      \
        const size_t pad = npanels * nr - ncols;                               \
        if (pad) {                                                             \
            T *last = dst + (npanels - 1) * panel_stride + nr;                 \
            for (size_t k = 0; k < kc; k++)                                    \
                for (size_t j = nr - pad; j < nr; j++) last[k * nr + j] = 0;   \
        }                                                                      \
        return;                                                                \
    }                                                                          \
    if (!k_off && !j_off) {                                                    \
        /* The common dense case, hoisted out of the general loop below:    \
         * each source row is cut into whole panel rows and one ragged one. */\
        const size_t full = ncols / nr, w = ncols - full * nr;                 \
        for (size_t k = 0; k < kc; k++) {                                      \
            const T *s = src + (ptrdiff_t)k * k_stride;                        \
            const T *m = mask ? mask + (ptrdiff_t)k * k_stride : NULL;         \
            if (k + PACK_AHEAD < kc) {                                         \
                pw_prefetch_rows(s + PACK_AHEAD * k_stride, 1,                 \
                                 ncols * sizeof(T), 0);                        \
                if (m)                                                         \
                    pw_prefetch_rows(m + PACK_AHEAD * k_stride, 1,             \
                                     ncols * sizeof(T), 0);                    \
            }                                                                  \
            T *row = dst + (k + 1) * nr;                                       \
            if (m) {                                                           \
                for (size_t p = 0; p < full; p++)                              \
                    MASK_ROW(row + p * panel_stride, s + p * nr, m + p * nr,   \
                             nr, nr, tlo, thi);                                \
                if (w) MASK_ROW(row + full * panel_stride, s + full * nr,      \
                                m + full * nr, w, nr, tlo, thi);               \
                continue;                                                      \
            }                                                                  \
            for (size_t p = 0; p < full; p++)                                  \
                COPY_ROW(row + p * panel_stride, s + p * nr, nr, nr);          \
            if (w) COPY_ROW(row + full * panel_stride, s + full * nr, w, nr);  \
        }                                                                      \
        return;                                                                \
    }                                                                          \
    /* k outer: each source row is read once, front to back. */               \
    for (size_t k = 0; k < kc; k++) {                                          \
        const ptrdiff_t ko = k_off ? k_off[k] : (ptrdiff_t)k * k_stride;       \
        for (size_t p = 0; p < npanels; p++) {                                 \
            const size_t j0 = p * nr, w = ncols - j0 < nr ? ncols - j0 : nr;   \
            T *row = dst + p * panel_stride + (k + 1) * nr;                    \
            if (ko < 0) {                                                      \
                memset(row, 0, nr * sizeof(T));                                \
                continue;                                                      \
            }                                                                  \
            if (!j_off && !mask && j_stride == 1) {                            \
                COPY_ROW(row, src + ko + (ptrdiff_t)j0, w, nr);                \
                continue;                                                      \
            }                                                                  \
            for (size_t j = 0; j < w; j++) {                                   \
                const ptrdiff_t jo = j_off ? j_off[j0 + j]                     \
                                           : (ptrdiff_t)(j0 + j) * j_stride;   \
                T v = 0;                                                       \
                if (jo >= 0) {                                                 \
                    v = src[ko + jo];                                          \
                    if (mask)                                                  \
                        v = keep_##T(v, mask[ko + jo], tlo, thi);              \
                }                                                              \
                row[j] = v;                                                    \
            }                                                                  \
            for (size_t j = w; j < nr; j++) row[j] = 0;                        \
        }                                                                      \
    }                                                                          \
}

DEFINE_PACK(pw_pack_f32, float, copy_row_f32, mask_row_f32, pw_transpose_f32)
DEFINE_PACK(pw_pack_f64, double, copy_row_f64, mask_row_f64, pw_transpose_f64)


/* Copies rows, masked or not, and sums the result along rows and columns
 * on the same pass (see pw_sums.h). */
#define DEFINE_MASK_ROWS(NAME, T)                                              \
void NAME(T *dst, ptrdiff_t dst_rs, const T *src, ptrdiff_t src_rs,            \
          size_t rows, size_t cols, const T *mask, double lo, double hi,       \
          double *col_sums, double *row_sums)                                  \
{                                                                              \
    const T tlo = (T)lo, thi = (T)hi;                                          \
    if (dst || row_sums) {                                                     \
        for (size_t r = 0; r < rows; r++) {                                    \
            const T *s = src + (ptrdiff_t)r * src_rs;                          \
            const T *m = mask ? mask + (ptrdiff_t)r * src_rs : NULL;           \
            T *d = dst ? dst + (ptrdiff_t)r * dst_rs : NULL;                   \
            if (d && m) {                                                      \
                keep_span_##T(d, s, m, cols, tlo, thi);                        \
            } else if (d) {                                                    \
                memcpy(d, s, cols * sizeof(T));                                \
            }                                                                  \
            if (row_sums) {                                                    \
                /* Without dst the mask is applied here, on the fly. */       \
                row_sums[r] += d ? row_sum_##T(d, NULL, cols, tlo, thi)       \
                                 : row_sum_##T(s, m, cols, tlo, thi);         \
            }                                                                  \
        }                                                                      \
    }                                                                          \
    if (!col_sums) return;                                                     \
    /* Column sums read what was just written (the masked values); callers   \
     * that want masked column sums pass dst. */                              \
    col_sums_##T(dst ? dst : src, dst ? dst_rs : src_rs, rows, cols, col_sums); \
}

DEFINE_MASK_ROWS(pw_mask_rows_f32, float)
DEFINE_MASK_ROWS(pw_mask_rows_f64, double)

/* A for grad weight in NHWC: grad output rows are pixels, so the broadcast
 * rows (output channels) are interleaved: regroup them per tile of mr
 * channels so each k reads mr adjacent values (A[i][k] = tile[k*mr + i]).
 * The body is instantiated per tile height so the copies are fixed-size and
 * vectorise; the column sums (grad bias) ride along. */
#define PACK_A_BLOCK 256

/* Unmasked pack_a over groups of TB whole tiles: each pixel's TB*MRC
 * channels are whole 16-byte vectors, at least a cache line of them, summed
 * on registers and copied with fixed-size moves, so each line of grad output
 * is read about once.  Returns the tiles done; the caller does the rest (at
 * most TB - 1 tiles).  Pairs of tiles alone left MRC = 7 (AVX-512's float
 * and double tiles) to a tile-by-tile loop that walked every pixel's line
 * for 7 values and summed them in memory: 16-19% of a 64->384 grad weight
 * at 4x14x14 (perf). */
#ifdef PW_VECTORS
#define PACK_A_GROUP_TILES(MRC, T)                                             \
    (((2 * (MRC)) % (16 / sizeof(T)) == 0 && 2 * (MRC) * sizeof(T) >= 64) ? 2 \
     : ((4 * (MRC)) % (16 / sizeof(T)) == 0) ? 4 : 0)
#define DEFINE_PACK_A_GROUPS(NAME, T)                                          \
static inline size_t NAME(const size_t MRC, T *dst, const T *src,              \
                          ptrdiff_t src_ps, size_t kq, size_t nch,             \
                          double *col_sums)                                    \
{                                                                              \
    typedef PW_VEC(T) vec;                                                     \
    enum { VL = 16 / sizeof(T), MAXV = 8 };                                    \
    const size_t TB = (MRC) * sizeof(T) >= 64 ? 1 : PACK_A_GROUP_TILES(MRC, T); \
    const size_t nv = TB * MRC / VL;                                           \
    size_t t = 0;                                                              \
    if (TB == 0 || (TB * MRC) % VL || nv > MAXV) return 0;                     \
    for (; (t + TB) * MRC <= nch; t += TB) {                                   \
        const T *s = src + t * MRC;                                            \
        T *d = dst + t * kq * MRC;                                             \
        vec acc[MAXV];                                                         \
        for (size_t i = 0; i < nv; i++) acc[i] = (vec){0};                     \
        for (size_t q = 0; q < kq; q++, s += src_ps, d += MRC) {               \
            if (col_sums)                                                      \
                for (size_t i = 0; i < nv; i++) {                              \
                    vec x;                                                     \
                    memcpy(&x, s + i * VL, sizeof x);                          \
                    acc[i] += x;                                               \
                }                                                              \
            for (size_t j = 0; j < TB; j++)                                    \
                memcpy(d + j * kq * MRC, s + j * MRC, MRC * sizeof(T));        \
        }                                                                      \
        if (col_sums)                                                          \
            for (size_t i = 0; i < nv; i++)                                    \
                for (size_t l = 0; l < VL; l++)                                \
                    col_sums[t * MRC + i * VL + l] += acc[i][l];               \
    }                                                                          \
    return t;                                                                  \
}
#else
#define DEFINE_PACK_A_GROUPS(NAME, T)                                          \
static inline size_t NAME(const size_t MRC, T *dst, const T *src,              \
                          ptrdiff_t src_ps, size_t kq, size_t nch,             \
                          double *col_sums)                                    \
{                                                                              \
    (void)MRC; (void)dst; (void)src; (void)src_ps; (void)kq; (void)nch;        \
    (void)col_sums;                                                            \
    return 0;                                                                  \
}
#endif

DEFINE_PACK_A_GROUPS(pack_a_groups_float, float)
DEFINE_PACK_A_GROUPS(pack_a_groups_double, double)

#define DEFINE_PACK_A_BODY(NAME, T)                                            \
static inline void NAME(const size_t MRC, T *dst, const T *src,                \
                        ptrdiff_t src_ps, size_t kq, size_t nch, const T *mask,\
                        T tlo, T thi, double *col_sums)                        \
{                                                                              \
    const size_t ntiles = (nch + MRC - 1) / MRC;                               \
    if (mask) {                                                                \
        /* Masked: each row's block of channels is masked into `row` in one  \
         * vectorised pass, then dealt to the tiles.  Tile by tile, the     \
         * select ran on MRC scalars at a time, 5x slower than the copy.    \
         * Each column is still summed over q in order, as below. */          \
        const size_t blk = PACK_A_BLOCK / MRC * MRC;                           \
        T row[PACK_A_BLOCK], acc[PACK_A_BLOCK];                                \
        for (size_t c0 = 0; c0 < nch; c0 += blk) {                             \
            const size_t w = nch - c0 < blk ? nch - c0 : blk;                  \
            const size_t nt = (w + MRC - 1) / MRC;                             \
            T *d0 = dst + c0 / MRC * kq * MRC;                                 \
            for (size_t c = 0; c < w; c++) acc[c] = 0;                         \
            for (size_t c = w; c < nt * MRC; c++) row[c] = 0;                  \
            for (size_t q = 0; q < kq; q++) {                                  \
                const T *s = src + (ptrdiff_t)q * src_ps + c0;                 \
                const T *m = mask + (ptrdiff_t)q * src_ps + c0;                \
                keep_span_##T(row, s, m, w, tlo, thi);                         \
                for (size_t c = 0; c < w; c++) acc[c] += row[c];               \
                T *d = d0 + q * MRC;                                           \
                for (size_t t = 0; t < nt; t++)                                \
                    for (size_t i = 0; i < MRC; i++)                           \
                        d[t * kq * MRC + i] = row[t * MRC + i];                \
            }                                                                  \
            if (col_sums)                                                      \
                for (size_t c = 0; c < w; c++) col_sums[c0 + c] += acc[c];     \
        }                                                                      \
        return;                                                                \
    }                                                                          \
    for (size_t t = pack_a_groups_##T(MRC, dst, src, src_ps, kq, nch, col_sums); \
         t < ntiles; t++) {                                                    \
        const size_t c0 = t * MRC;                                             \
        const size_t w = nch - c0 < MRC ? nch - c0 : MRC;                      \
        T *d = dst + t * kq * MRC;                                             \
        T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                   \
        for (size_t q = 0; q < kq; q++, d += MRC) {                            \
            const T *s = src + (ptrdiff_t)q * src_ps + c0;                     \
            if (w == MRC) {                                                    \
                for (size_t i = 0; i < MRC; i++) d[i] = s[i];                  \
            } else {                                                           \
                for (size_t i = 0; i < MRC; i++) d[i] = i < w ? s[i] : (T)0;   \
            }                                                                  \
            for (size_t i = 0; i < MRC; i++) acc[i] += d[i];                   \
        }                                                                      \
        if (col_sums)                                                          \
            for (size_t i = 0; i < w; i++) col_sums[c0 + i] += acc[i];         \
    }                                                                          \
}

#define DEFINE_PACK_A(NAME, BODY, T)                                           \
void NAME(T *dst, size_t mr, const T *src, ptrdiff_t src_ps, size_t kq,        \
          size_t nch, const T *mask, double lo, double hi, double *col_sums)   \
{                                                                              \
    const T tlo = (T)lo, thi = (T)hi;                                          \
    switch (mr) {                                                              \
    case 4: BODY(4, dst, src, src_ps, kq, nch, mask, tlo, thi, col_sums); break;\
    case 6: BODY(6, dst, src, src_ps, kq, nch, mask, tlo, thi, col_sums); break;\
    case 7: BODY(7, dst, src, src_ps, kq, nch, mask, tlo, thi, col_sums); break;\
    case 8: BODY(8, dst, src, src_ps, kq, nch, mask, tlo, thi, col_sums); break;\
    default:                                                                   \
        /* Only tiles of at most 8 rows exist (acc holds 8). */               \
        BODY(mr < 8 ? mr : 8, dst, src, src_ps, kq, nch, mask, tlo, thi, col_sums);\
    }                                                                          \
}

DEFINE_PACK_A_BODY(pack_a_body_f32, float)
DEFINE_PACK_A_BODY(pack_a_body_f64, double)
DEFINE_PACK_A(pw_pack_a_f32, pack_a_body_f32, float)
DEFINE_PACK_A(pw_pack_a_f64, pack_a_body_f64, double)

/* A tiles from channel planes: dst[(t*kc + k)*mr + i] = g(src[k*src_rs + t*mr + i])
 * for pixels t*mr + i < npix, zero past them, where g zeroes a value unless
 * lo < mask[same offset] < hi (mask may be NULL).  Each plane row is read
 * once, front to back, and dealt to the tiles, so reads stream; the tile
 * height is a compile-time constant in the body, so the copies are fixed.
 * Unmasked, each tile row is a memcpy: as an element loop GCC kept it
 * scalar (it cannot rule out dst and src overlapping), 7 loads and 7
 * stores a row of the AVX-512 tile, where the memcpy is two overlapping
 * 16-byte moves.  In-process A/B, NCHW forward on pixel tiles, 1 thread,
 * AVX-512: 960->320 at 7x7 (10 panels, A regrouped) 0.973-0.975 of the
 * time, 2048->512 0.977-0.989, MobileNetV2's 7x7 layers 0.986. */
#define DEFINE_GATHER_BODY(NAME, T)                                            \
static inline void NAME(const size_t MRC, T *dst, const T *src,                \
                        ptrdiff_t src_rs, size_t kc, size_t npix,              \
                        const T *mask, T tlo, T thi)                           \
{                                                                              \
    const size_t full = npix / MRC, rest = npix - full * MRC;                  \
    const size_t tstride = kc * MRC;                                           \
    for (size_t k = 0; k < kc; k++) {                                          \
        const T *s = src + (ptrdiff_t)k * src_rs;                              \
        const T *m = mask ? mask + (ptrdiff_t)k * src_rs : NULL;               \
        T *d = dst + k * MRC;                                                  \
        if (!m) {                                                              \
            for (size_t t = 0; t < full; t++, s += MRC, d += tstride)          \
                memcpy(d, s, MRC * sizeof(T));                                 \
        } else {                                                               \
            for (size_t t = 0; t < full; t++, s += MRC, m += MRC, d += tstride) \
                keep_span_##T(d, s, m, MRC, tlo, thi);                         \
        }                                                                      \
        if (rest)                                                              \
            for (size_t i = 0; i < MRC; i++)                                   \
                d[i] = i >= rest ? (T)0 : m ? keep_##T(s[i], m[i], tlo, thi)   \
                                            : s[i];                            \
    }                                                                          \
}

#define DEFINE_GATHER(NAME, BODY, T)                                           \
void NAME(T *dst, size_t mr, const T *src, ptrdiff_t src_rs, size_t kc,        \
          size_t npix, const T *mask, double lo, double hi)                    \
{                                                                              \
    const T tlo = (T)lo, thi = (T)hi;                                          \
    switch (mr) {                                                              \
    case 4: BODY(4, dst, src, src_rs, kc, npix, mask, tlo, thi); break;        \
    case 6: BODY(6, dst, src, src_rs, kc, npix, mask, tlo, thi); break;        \
    case 7: BODY(7, dst, src, src_rs, kc, npix, mask, tlo, thi); break;        \
    case 8: BODY(8, dst, src, src_rs, kc, npix, mask, tlo, thi); break;        \
    default: BODY(mr, dst, src, src_rs, kc, npix, mask, tlo, thi);             \
    }                                                                          \
}

DEFINE_GATHER_BODY(gather_body_f32, float)
DEFINE_GATHER_BODY(gather_body_f64, double)
DEFINE_GATHER(pw_gather_tiles_f32, gather_body_f32, float)
DEFINE_GATHER(pw_gather_tiles_f64, gather_body_f64, double)
