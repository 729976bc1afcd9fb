#include "pw_pack.h"

#include <string.h>

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

#define DEFINE_PACK(NAME, T, COPY_ROW)                                         \
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
                    if (mask) {                                                \
                        const T m = mask[ko + jo];                             \
                        if (!(m > tlo && m < thi)) v = 0;                      \
                    }                                                          \
                }                                                              \
                row[j] = v;                                                    \
            }                                                                  \
            for (size_t j = w; j < nr; j++) row[j] = 0;                        \
        }                                                                      \
    }                                                                          \
}

DEFINE_PACK(pw_pack_f32, float, copy_row_f32)
DEFINE_PACK(pw_pack_f64, double, copy_row_f64)

#define DEFINE_COPY_GRAD(NAME, T)                                              \
void NAME(T *dst, ptrdiff_t dst_ps, ptrdiff_t dst_cs, const T *src,            \
          ptrdiff_t src_ps, ptrdiff_t src_cs, size_t np, size_t nch,           \
          const T *mask, double lo, double hi, double *sums)                   \
{                                                                              \
    const T tlo = (T)lo, thi = (T)hi;                                          \
    for (size_t p = 0; p < np; p++) {                                          \
        const T *s = src + (ptrdiff_t)p * src_ps;                              \
        const T *m = mask ? mask + (ptrdiff_t)p * src_ps : NULL;               \
        T *d = dst + (ptrdiff_t)p * dst_ps;                                    \
        for (size_t c = 0; c < nch; c++) {                                     \
            T v = s[(ptrdiff_t)c * src_cs];                                    \
            if (m) {                                                           \
                const T mv = m[(ptrdiff_t)c * src_cs];                         \
                if (!(mv > tlo && mv < thi)) v = 0;                            \
            }                                                                  \
            d[(ptrdiff_t)c * dst_cs] = v;                                      \
            if (sums) sums[c] += v;                                            \
        }                                                                      \
    }                                                                          \
}

DEFINE_COPY_GRAD(pw_copy_grad_f32, float)
DEFINE_COPY_GRAD(pw_copy_grad_f64, double)
