#include "pw_pack.h"

#include <string.h>

size_t pw_panel_stride(size_t kc, size_t nr)
{
    return ((kc + 1) * nr + 15) / 16 * 16;
}

#define DEFINE_PACK(NAME, T)                                                   \
void NAME(T *dst, size_t nr, size_t panel_stride, size_t kc, size_t ncols,     \
          const T *src, ptrdiff_t k_stride, ptrdiff_t j_stride,                \
          const ptrdiff_t *k_off, const ptrdiff_t *j_off, const T *head,       \
          const T *mask, double lo, double hi)                                 \
{                                                                              \
    const T tlo = (T)lo, thi = (T)hi;                                          \
    for (size_t j0 = 0; j0 < ncols; j0 += nr) {                                \
        T *panel = dst + (j0 / nr) * panel_stride;                             \
        const size_t w = ncols - j0 < nr ? ncols - j0 : nr;                    \
        memset(panel, 0, (kc + 1) * nr * sizeof(T));                           \
        if (head)                                                              \
            for (size_t j = 0; j < w; j++) panel[j] = head[j0 + j];            \
        for (size_t k = 0; k < kc; k++) {                                      \
            const ptrdiff_t ko = k_off ? k_off[k] : (ptrdiff_t)k * k_stride;   \
            T *row = panel + (k + 1) * nr;                                     \
            if (ko < 0) continue;                                              \
            if (!j_off && !mask && j_stride == 1) {                            \
                memcpy(row, src + ko + (ptrdiff_t)j0, w * sizeof(T));          \
                continue;                                                      \
            }                                                                  \
            for (size_t j = 0; j < w; j++) {                                   \
                const ptrdiff_t jo = j_off ? j_off[j0 + j]                     \
                                           : (ptrdiff_t)(j0 + j) * j_stride;   \
                if (jo < 0) continue;                                          \
                T v = src[ko + jo];                                            \
                if (mask) {                                                    \
                    const T m = mask[ko + jo];                                 \
                    if (!(m > tlo && m < thi)) v = 0;                          \
                }                                                              \
                row[j] = v;                                                    \
            }                                                                  \
        }                                                                      \
    }                                                                          \
}

DEFINE_PACK(pw_pack_f32, float)
DEFINE_PACK(pw_pack_f64, double)

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
