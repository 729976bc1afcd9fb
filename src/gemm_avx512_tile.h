/* One element type's AVX-512 kernel, included by gemm_avx512.c once for
 * float and once for double, inside its x86 block (after INLINE, TARGET,
 * UNROLL_ROWS, mask8/mask16 and pw_tile_parts.h).  The includer defines:
 *
 *   T, SFX         element type and the suffix of the names made here (f32)
 *   L              lanes per zmm (16 floats, 8 doubles)
 *   V512, V256     zmm and ymm vector types
 *   OP512, OP256   intrinsic of an operation: OP512(loadu) is
 *                  _mm512_loadu_ps / _pd
 *   SET1, BCAST256 broadcasts of one value to a zmm, to a ymm
 *   LO256, HI512   the low ymm of a zmm, a ymm widened to a zmm
 *   MASK           lane mask of the first n lanes (mask16, mask8)
 *   K_UNROLL       pragma over the unit-stride k loops (or nothing)
 *   MID_INSTANCES  1 if a one-zmm last panel gets epilogue instances
 *
 * Panels are 2L columns wide: two zmm per row.  A last panel takes the
 * narrowest width class that holds its columns: 2L (two zmm), 3L/2 (a zmm
 * and a ymm), L (one zmm), L/2 (one ymm), so C_out % 32 == 24 (MobileNet's
 * 24-channel layers, a quarter of their FMAs on padding at full width) and
 * NCHW planes' short tails (14x14 leaves 4 pixels, 7x7 leaves 17) do not
 * pay for padding.  The arithmetic per element is the same FMA chain in
 * every class, so results do not depend on it.  Masked loads and stores
 * handle ragged column counts: masked-off lanes are neither read nor
 * written (and cannot fault). */

#define PW_CAT2(a, b) a##b
#define PW_CAT(a, b) PW_CAT2(a, b)
#define NAMED(base) PW_CAT(base, SFX)
#define NR (2 * L)
#define PANEL_CLASS(ncols)                                                     \
    ((ncols) > 3 * L / 2 ? NR : (ncols) > L ? 3 * L / 2 : (ncols) > L / 2 ? L : L / 2)

/* The first n (n <= L/2) values at p in a ymm, the rest zero, through a
 * zmm mask (AVX-512F alone has no ymm masked load). */
INLINE V256 NAMED(load_upto_half_)(const T *p, ptrdiff_t n)
{
    return LO256(OP512(maskz_loadu)(MASK(n), p));
}

INLINE void NAMED(store_upto_half_)(T *p, V256 v, ptrdiff_t n)
{
    OP512(mask_storeu)(p, MASK(n), HI512(v));
}

/* One row's epilogue.  z0 holds columns 0..L-1 (W >= L), z1 L..2L-1
 * (W == 2L), y L..3L/2-1 (W == 3L/2) or 0..L/2-1 (W == L/2).  WHOLE: known
 * at compile time that ncols == W, so no row tests for masks. */
INLINE void NAMED(epilogue_)(const int W, const int WHOLE, T *c, const T *r, V512 z0, V512 z1,
                             V256 y, size_t ncols, const T *row_bias_i, int clamp,
                             V512 lo, V512 hi, int stream)
{
    const V256 ylo = LO256(lo), yhi = LO256(hi);
    if (row_bias_i) {
        const V512 rb = SET1(*row_bias_i);
        z0 = OP512(add)(z0, rb);
        z1 = OP512(add)(z1, rb);
        y = OP256(add)(y, LO256(rb));
    }
    const ptrdiff_t n = (ptrdiff_t)ncols;
    const int whole = WHOLE || ncols == (size_t)W;
    if (r) {
        if (W == L / 2) {
            y = OP256(add)(y, whole ? OP256(loadu)(r) : NAMED(load_upto_half_)(r, n));
        } else {
            z0 = OP512(add)(z0, W > L || whole ? OP512(loadu)(r)
                                               : OP512(maskz_loadu)(MASK(n), r));
            if (W == NR)
                z1 = OP512(add)(z1, whole ? OP512(loadu)(r + L)
                                          : OP512(maskz_loadu)(MASK(n - L), r + L));
            if (W == 3 * L / 2)
                y = OP256(add)(y, whole ? OP256(loadu)(r + L)
                                        : NAMED(load_upto_half_)(r + L, n - L));
        }
    }
    if (clamp) {
        /* min/max return their second operand when one is NaN, so the
         * accumulator goes second to keep a NaN result. */
        z0 = OP512(max)(lo, OP512(min)(hi, z0));
        z1 = OP512(max)(lo, OP512(min)(hi, z1));
        y = OP256(max)(ylo, OP256(min)(yhi, y));
    }
    if (W == L / 2) {
        if (whole) OP256(storeu)(c, y);
        else NAMED(store_upto_half_)(c, y, n);
        return;
    }
    /* A one-zmm last panel is a whole line too: left to ordinary stores,
     * 24->144's 16 channels past its 4 panels read every ninth line of a
     * streamed output in first (relu6 + residual on a cold 56x56 map
     * 0.98-0.99 of the time streamed, in-process A/B). */
    if ((W == NR || W == L) && whole && stream && !((size_t)c & 63)) {
        OP512(stream)(c, z0);
        if (W == NR) OP512(stream)(c + L, z1);
        return;
    }
    if (W > L || whole) OP512(storeu)(c, z0);
    else OP512(mask_storeu)(c, MASK(n), z0);
    if (W == NR) {
        if (whole) OP512(storeu)(c + L, z1);
        else OP512(mask_storeu)(c + L, MASK(n - L), z1);
    }
    if (W == 3 * L / 2) {
        if (whole) OP256(storeu)(c + L, y);
        else NAMED(store_upto_half_)(c + L, y, n - L);
    }
}

/* One panel of W-class width (see PANEL_CLASS) for MRC rows; WHOLE as in
 * the epilogue. */
INLINE void NAMED(panel_)(const size_t MRC, const int W, const int WHOLE, const int epi, size_t mr,
                          const T *const *rows, const T *panel,
                          T *c, const T *r, size_t ncols,
                          const T *row_bias, const pw_gemm_params *p, T *copy)
{
    /* epi (see EPI_ANY): unless EPI_ANY, known at compile time, so the
     * epilogue carries no tests for what it rules out. */
    EPI_OPERANDS(epi);
    V512 z0[7], z1[7];
    V256 y[7];
    /* Direct B (read in place, rows b_ks apart) has no head row. */
    const int direct = p->b_ks != 0;
    const ptrdiff_t bstep = direct ? p->b_ks : NR;
    const V512 zero = OP512(setzero)();
    const V512 h0 = direct || W == L / 2 ? zero : OP512(loadu)(panel);
    const V512 h1 = direct || W != NR ? zero : OP512(loadu)(panel + L);
    const V256 hy = direct || (W != 3 * L / 2 && W != L / 2) ? OP256(setzero)()
                    : OP256(loadu)(panel + (W == 3 * L / 2 ? L : 0));
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) { z0[i] = h0; z1[i] = h1; y[i] = hy; }
    const T *b = direct ? panel : panel + NR;
    const size_t kc = p->kc;
    /* Ask for the C (and residual) lines now so the epilogue at the end of
     * this panel rarely waits on a fill; not when C is streamed, which
     * never reads its lines.  A whole panel's row is two lines: asking for
     * the residual's second one too made relu6 + residual 2-3% faster on
     * 32->192 and 64->384 (K <= 64, the least time to hide a fill), the
     * MobileNetV2 b1 NHWC suite 0.995 of the time (in-process A/B); C's
     * second line, asked for too, measured even. */
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr) {
            if (!stream) __builtin_prefetch(c + i * p->c_rs, 1, 3);
            if (r && r != c) __builtin_prefetch(r + i * p->r_rs, 0, 3);
            if (W == NR && r && r != c) __builtin_prefetch(r + i * p->r_rs + L, 0, 3);
        }
    }
    const ptrdiff_t aks = p->a_ks ? p->a_ks : 1;
    /* The float k loops run four steps per iteration and the unit A stride
     * keeps one shared index (see gemm_avx2.c for the measurements behind
     * both). */
#define K_STEP(A_AT) K_STEP_COPY(A_AT, (T *)0)
#define K_STEP_COPY(A_AT, CP)                                                 \
    do {                                                                      \
        const V512 b0 = W >= L ? OP512(loadu)(b) : zero;                      \
        const V512 b1 = W == NR ? OP512(loadu)(b + L) : zero;                 \
        if (CP) {                                                             \
            OP512(storeu)(CP, b0);                                            \
            OP512(storeu)(CP + L, b1);                                        \
        }                                                                     \
        const V256 by = W == 3 * L / 2 ? OP256(loadu)(b + L)                  \
                        : W == L / 2 ? OP256(loadu)(b) : OP256(setzero)();    \
        UNROLL_ROWS                                                           \
        for (size_t i = 0; i < MRC; i++) {                                    \
            if (W == L / 2) {                                                 \
                y[i] = OP256(fmadd)(BCAST256(A_AT), by, y[i]);                \
            } else {                                                          \
                const V512 a = SET1(*(A_AT));                                 \
                z0[i] = OP512(fmadd)(a, b0, z0[i]);                           \
                if (W == NR) z1[i] = OP512(fmadd)(a, b1, z1[i]);              \
                if (W == 3 * L / 2)                                           \
                    y[i] = OP256(fmadd)(LO256(a), by, y[i]);                  \
            }                                                                 \
        }                                                                     \
    } while (0)
    if (W == NR && WHOLE && MRC == 7 && copy && aks == 1) {
        /* Direct B copied into packed panels while it is read (b_copy). */
        T *cp = copy + NR;
        K_UNROLL
        for (size_t k = 0; k < kc; k++, b += bstep, cp += NR)
            K_STEP_COPY(rows[i] + k, cp);
    } else if (aks == 1) {
        K_UNROLL
        for (size_t k = 0; k < kc; k++, b += bstep)
            K_STEP(rows[i] + k);
    } else if (p->a_rs == 1 && mr == MRC) {
        /* Grad weight's A: a tile's rows are adjacent channels of one
         * pixel and k steps to the next pixel, so one pointer serves every
         * row at a constant offset. */
        const T *ap = rows[0];
        K_UNROLL
        for (size_t k = 0; k < kc; k++, b += bstep, ap += aks)
            K_STEP(ap + i);
    } else {
        for (size_t k = 0, ak = 0; k < kc; k++, b += bstep, ak += (size_t)aks)
            K_STEP(rows[i] + ak);
    }
#undef K_STEP
#undef K_STEP_COPY
    const V512 lo = SET1((T)p->lo), hi = SET1((T)p->hi);
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++) {
        if (i < mr)
            NAMED(epilogue_)(W, WHOLE, c + i * p->c_rs, r ? r + i * p->r_rs : NULL, z0[i], z1[i],
                             y[i], ncols, row_bias ? row_bias + i : NULL, p->clamp, lo,
                             hi, stream);
    }
}

INLINE void NAMED(tile_)(const size_t MRC, const int AHEAD, size_t mr, size_t nc,
                         const T *a, const T *packed, T *c,
                         const T *row_bias, const T *r, const pw_gemm_params *p)
{
    /* Rows past mr alias the last real row: they are computed (the tile
     * shape is fixed) but never stored, and read only valid memory. */
    const T *rows[7];
    UNROLL_ROWS
    for (size_t i = 0; i < MRC; i++)
        rows[i] = a + (i < mr ? i : mr - 1) * p->a_rs;
    const int epi = EPI_OF(p, r, row_bias);
    ahead_lines ah;
    if (AHEAD) ah = ahead_begin(p, (nc + NR - 1) / NR);
    for (size_t j0 = 0; j0 < nc; j0 += NR) {
        const size_t ncols = nc - j0 < NR ? nc - j0 : NR;
        if (AHEAD) ahead_panel(&ah);
        const T *panel = packed + (j0 / NR) * p->panel_stride;
        const T *rj = r ? r + j0 : NULL;
        T *cp = p->b_copy ? (T *)p->b_copy + (j0 / NR) * p->b_copy_ps : NULL;
        switch (PANEL_CLASS(ncols)) {
        case NR:
            /* Whole panels (all but a ragged last one) know it at compile
             * time: the per-row tests and masks of a ragged row took 1% of
             * a relu6 + residual MobileNetV2 b1 NHWC pass (in-process A/B). */
            if (ncols == NR)
                WITH_EPI_INSTANCE(epi, NAMED(panel_)(MRC, NR, 1, EPI_NOW, mr, rows, panel,
                                                     c + j0, rj, ncols, row_bias, p, cp));
            else
                NAMED(panel_)(MRC, NR, 0, EPI_ANY, mr, rows, panel, c + j0, rj, ncols,
                              row_bias, p, NULL);
            break;
        case 3 * L / 2:
            WITH_EPI_INSTANCE(epi, NAMED(panel_)(MRC, 3 * L / 2, 0, EPI_NOW, mr, rows, panel,
                                                 c + j0, rj, ncols, row_bias, p, NULL));
            break;
        case L:
            if (MID_INSTANCES)
                WITH_EPI_INSTANCE(epi, NAMED(panel_)(MRC, L, 0, EPI_NOW, mr, rows, panel,
                                                     c + j0, rj, ncols, row_bias, p, NULL));
            else
                NAMED(panel_)(MRC, L, 0, EPI_ANY, mr, rows, panel, c + j0, rj, ncols,
                              row_bias, p, NULL);
            break;
        default:
            NAMED(panel_)(MRC, L / 2, 0, EPI_ANY, mr, rows, panel, c + j0, rj, ncols,
                          row_bias, p, NULL);
        }
    }
}

#define GEMM_AHEAD PW_CAT(NAMED(gemm_), _ahead)
#define GEMM_PLAIN PW_CAT(NAMED(gemm_), _plain)
GEMM_ENTRY(NOINLINE, GEMM_AHEAD, T, NAMED(tile_), 1, 7)
GEMM_ENTRY(INLINE, GEMM_PLAIN, T, NAMED(tile_), 0, 7)

/* pw_gemm_f32_avx512, pw_gemm_f64_avx512 (pw_kernels.h). */
TARGET void PW_CAT(NAMED(pw_gemm_), _avx512)(size_t mr, size_t nc, const T *a,
                                            const T *packed, T *c,
                                            const T *row_bias, const T *r,
                                            const pw_gemm_params *p)
{
    if (p->ahead) GEMM_AHEAD(mr, nc, a, packed, c, row_bias, r, p);
    else GEMM_PLAIN(mr, nc, a, packed, c, row_bias, r, p);
}

#undef GEMM_AHEAD
#undef GEMM_PLAIN

#undef PW_CAT2
#undef PW_CAT
#undef NAMED
#undef NR
#undef PANEL_CLASS
