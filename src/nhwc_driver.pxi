# Included by _core.pyx (one module, so the fused type, the typed helpers
# and the geometry are shared): the NHWC pixel driver.

# ------------------------------------------------------- NHWC pixel driver
#
# Rows of the GEMM are pixels, columns are channels.  Used by the forward
# pass (A = input pixels, C = output pixels) and by grad input (A = grad
# output pixels, masked by the activation, C = grad input pixels).

cdef struct NhwcJob:
    Geom g
    bint a_at_input, c_at_input   # which pixel grid A / C are addressed on
    Py_ssize_t a_pix, c_pix       # channels per pixel of A's / C's tensor
    Py_ssize_t a_goff, c_goff     # channel offset from one group to the next
    Py_ssize_t kc, ncg            # depth and columns per group
    size_t mr, nr, ps, gs         # tile, panel stride, group stride in packed
    Py_ssize_t ppg, pblock        # panels per group, panels per L2 block
    Py_ssize_t kblock             # depth per pass over a row tile
    Py_ssize_t units, nsplit      # (group, panel) column units, pieces of them
    Py_ssize_t nmchunks           # simple geometry: row shares (items)
    bint border                   # C at output: padding gets act(head + R)
    bint masked                   # A is zeroed where M is outside (mlo, mhi)
    bint prefetch_r               # ask for the next row tile's R a tile early
    bint prefetch_a               # and for its A rows (A streamed from memory)
    Py_ssize_t group_rows         # 0, or rows per block taken through all groups
    double mlo, mhi
    pw_gemm_params prm


# A tensor this large comes from memory, not L3, and a deep row tile walks
# its rows k-wise, one line per row at a time, which the hardware
# prefetchers follow too late: each row tile asks for the next one's A rows
# first.  Measured (in-process A/B, 1 thread): forward 96->16 on 4x112x112
# (19 MB of input) 24% faster, 144->24 on 4x56x56 (7.2 MB) 10%, a training
# step of 16->96 on 4x112x112 (grad output as grad input's A) 5-7%; but
# 2-8% slower where A fits in L3 (4.8 MB and less) or rows are short (32).
# Both these requests and the residual's below go to L2 only
# (pw_prefetch_rows_l2): against asking for L1, in-process A/B, 1 thread,
# forward with a 48 MB read between calls, 144->24 on 8x56x56 0.63 of the
# time, on 4x56x56 0.69, 96->24 on 8x56x56 0.75; with A in L3, 144->24 on
# 8x56x56 0.89, the others even; 2 threads 0.93-0.99; a b4 training step
# 0.87-0.99 on 144->24; the AVX2 kernel 0.55 and 0.74 on 144->24 at
# 8x56x56 (swept, in L3).  With L2 requests the limits still hold: from
# 512 KB and depth 16, 32->16 at 112x112 was 14% slower with A in L3.
cdef size_t PREFETCH_A_MIN_BYTES = 6 * 1024 * 1024
cdef Py_ssize_t PREFETCH_A_MIN_DEPTH = 64

# A residual of up to about twice L2 comes from L3 in time for the lines the
# kernel asks for at the start of each panel, so the driver's requests a row
# tile ahead only add instructions.  In-process A/B, MobileNetV2 b1 shapes,
# NHWC, 1 thread, relu6 + residual formed in place, other buffers' traffic
# between calls, threshold 1 MB against 512 KB, two runs (a third at 2 MB
# alike): 32->192 at 28x28 (602 KB) 0.93-0.95 of the time, 32->16 at
# 112x112 (802 KB) 0.94 each; residual in its own buffer 0.93-0.95 and
# 0.96-1.03; larger and smaller residuals unchanged.  Asked into L2 rather
# than L1 (same A/B, 48 MB read between calls): 16->96 at 112x112 0.92 of
# the time with the residual in its own buffer, 0.81 in place; 24->144 at
# 56x56 0.85 and 0.68; with the residual in L3, even.  From 256 KB instead,
# even as L2 requests: 4-13% slower on 32->16, 32->192 and 64->384.
cdef size_t PREFETCH_R_MIN_BYTES = 1024 * 1024

# Grouped layers walk a run of pixel rows once per group, each group
# reading and writing its own slice of every row; past L2 that streams A
# and C from L3 once per group, C's shared lines twice.  Where all groups'
# panels fit in half an L2 block, rows go in blocks of about this many
# bytes (A and C rows together), each through every group while in L2.
# In-process A/B, forward, NHWC, batch 4, 1 thread, two runs each:
# 384->96 in 8 groups at 28x28 0.90-0.91 of the time, 240->240 in 8
# 0.94-0.96, 240->60 in 3 0.93-0.95; grad input 60->240 in 3 0.86-0.90;
# 14x14 and 7x7 ShuffleNet layers and 544 in 4 groups within noise; 64 KB
# no better.
cdef size_t GROUP_ROWS_BYTES = 128 * 1024


cdef void nhwc_rows(const NhwcJob *J, const real *A, real *C, const real *R,
                    const real *M, const real *packed, Py_ssize_t a_off,
                    Py_ssize_t c_off, Py_ssize_t a_rs, Py_ssize_t c_rs,
                    Py_ssize_t rows, Py_ssize_t u0, Py_ssize_t u1, bint valid,
                    real *scratch) noexcept nogil:
    """Rows [0, rows) of one uniformly strided pixel run, columns units
    [u0, u1).  valid=False: the run lies on padding (depth 0, border only).

    Very deep layers are cut into depth blocks of J.kblock (see
    KBLOCK_BYTES): the first block starts from the panel head (bias) and
    adds R (residual), later blocks read the packed rows in place without a
    head and add onto C, and only the last clamps."""
    cdef pw_gemm_params prm = J.prm
    cdef pw_gemm_params first, later
    cdef Py_ssize_t u = u0, g, p0, p1, pb, pe, m, ncols, mr_, k0, kb
    cdef Py_ssize_t kc = J.kc if valid else 0
    cdef const real *a
    cdef const real *r
    cdef const real *pk
    cdef real *c
    cdef bint last
    prm.panel_stride = J.ps
    prm.c_rs = c_rs
    prm.r_rs = c_rs
    while u < u1:
        g = u // J.ppg
        p0 = u % J.ppg
        p1 = imin(J.ppg, p0 + (u1 - u))
        pb = p0
        while pb < p1:
            pe = imin(p1, pb + J.pblock)
            ncols = imin(J.ncg, pe * <Py_ssize_t>J.nr) - pb * <Py_ssize_t>J.nr
            pk = packed + g * J.gs + pb * J.ps
            k0 = 0
            while True:
                kb = imin(J.kblock, kc - k0)
                last = k0 + kb >= kc
                first = prm
                first.kc = kb
                first.clamp = prm.clamp if last else 0
                later = first
                later.b_ks = J.nr            # packed rows, read past the head
                m = 0
                while m < rows:
                    mr_ = tile_rows(rows - m, J.mr)
                    a = A + a_off + m * a_rs + g * J.a_goff + k0 if valid else NULL
                    first.a_rs = later.a_rs = a_rs
                    if J.masked and valid:
                        mask_rows(scratch, kb, a, a_rs, mr_, kb,
                                  M + a_off + m * a_rs + g * J.a_goff + k0,
                                  J.mlo, J.mhi, NULL, NULL)
                        a = scratch
                        first.a_rs = later.a_rs = kb
                    c = C + c_off + m * c_rs + g * J.c_goff + pb * <Py_ssize_t>J.nr
                    if J.prefetch_a and valid and pb == p0 and m + mr_ < rows \
                            and kb >= PREFETCH_A_MIN_DEPTH:
                        pw_prefetch_rows_l2(A + a_off + (m + mr_) * a_rs + g * J.a_goff + k0,
                                            imin(J.mr, rows - m - mr_), kb * sizeof(real),
                                            a_rs * sizeof(real))
                    if k0 == 0:
                        r = R + (c - C) if R != NULL else NULL
                        if J.prefetch_r and m + mr_ < rows:
                            pw_prefetch_rows_l2(r + mr_ * c_rs, imin(J.mr, rows - m - mr_),
                                                ncols * sizeof(real), c_rs * sizeof(real))
                        gemm(mr_, ncols, a, pk, c, NULL, r, &first)
                    else:
                        gemm(mr_, ncols, a, pk + (1 + k0) * <Py_ssize_t>J.nr, c,
                             NULL, c, &later)
                    m += mr_
                k0 += kb
                if k0 >= kc:
                    break
            pb = pe
        u += p1 - p0


cdef void nhwc_cells(const NhwcJob *J, Py_ssize_t s, Py_ssize_t ntiles,
                     const real *A, real *C, const real *R, const real *M,
                     const real *packed, real *scratch) noexcept nogil:
    """Column piece s of J.nsplit, over every pixel of a simple geometry:
    an equal share of the (panel, row tile) cells, taken panel by panel, so
    a panel may be cut between two pieces at a row tile.  Whole panels per
    piece left 160 output channels (5 panels) at 2 and 3 panels for two
    threads: 7x7 layers with 160 outputs ran 1.60-1.62 times as fast on two
    threads as on one, against 1.89-1.97 for those of 320 to 1280."""
    cdef Py_ssize_t pixels = J.g.n * J.g.h * J.g.w, cells = J.units * ntiles
    cdef Py_ssize_t c0 = s * cells // J.nsplit, c1 = (s + 1) * cells // J.nsplit
    cdef Py_ssize_t u0, u1, t0, t1, r0
    while c0 < c1:
        c0 += cell_run(c0, c1, ntiles, &u0, &u1, &t0, &t1)
        r0 = t0 * J.mr
        nhwc_rows(J, A, C, R, M, packed, r0 * J.a_pix, r0 * J.c_pix, J.a_pix, J.c_pix,
                  imin(pixels, t1 * J.mr) - r0, u0, u1, True, scratch)


cdef void nhwc_item(const NhwcJob *J, Py_ssize_t item, const real *A, real *C,
                    const real *R, const real *M, const real *packed,
                    int *failed) noexcept nogil:
    cdef const Geom *g = &J.g
    cdef Py_ssize_t s = item % J.nsplit, it = item // J.nsplit
    cdef Py_ssize_t u0 = s * J.units // J.nsplit, u1 = (s + 1) * J.units // J.nsplit
    cdef Py_ssize_t row0, rows, n, oh, ih, op, ip, lo_, hi_, a_rs, c_rs, ntiles, block
    cdef real *scratch = NULL
    if J.masked:
        scratch = <real *>pw_scratch(J.mr * J.kc * sizeof(real) + 64)
        if scratch == NULL:
            failed[0] = 1
            return
    if g.simple:
        # Item `it` takes an equal share of the row tiles (within one tile).
        ntiles = cdiv(g.n * g.h * g.w, J.mr)
        if J.nmchunks == 1 and J.nsplit > 1 and not J.group_rows:
            nhwc_cells(J, s, ntiles, A, C, R, M, packed, scratch)
            return
        row0 = (it * ntiles // J.nmchunks) * J.mr
        rows = imin(((it + 1) * ntiles // J.nmchunks) * J.mr, g.n * g.h * g.w) - row0
        # In row blocks (see group_rows), each block through all the groups.
        while rows > 0:
            block = imin(rows, J.group_rows) if J.group_rows else rows
            nhwc_rows(J, A, C, R, M, packed, row0 * J.a_pix, row0 * J.c_pix,
                      J.a_pix, J.c_pix, block, u0, u1, True, scratch)
            row0 += block
            rows -= block
        return
    n = it // g.ho
    oh = it % g.ho
    ih = oh * g.sh - g.pt
    op = it * g.wo                      # first output pixel of this row
    if ih < 0 or ih >= g.h:
        if J.border:
            nhwc_rows(J, A, C, R, M, packed, 0, op * J.c_pix, 0, J.c_pix,
                      g.wo, u0, u1, False, scratch)
        return
    # Output columns [lo_, hi_) read input columns ow*sw - pl inside [0, w).
    lo_ = imin(g.wo, cdiv(g.pl, g.sw))
    hi_ = imax(lo_, imin(g.wo, (g.w - 1 + g.pl) // g.sw + 1))
    if J.border and lo_ > 0:
        nhwc_rows(J, A, C, R, M, packed, 0, op * J.c_pix, 0, J.c_pix,
                  lo_, u0, u1, False, scratch)
    if J.border and hi_ < g.wo:
        nhwc_rows(J, A, C, R, M, packed, 0, (op + hi_) * J.c_pix, 0, J.c_pix,
                  g.wo - hi_, u0, u1, False, scratch)
    if hi_ > lo_:
        ip = (n * g.h + ih) * g.w + lo_ * g.sw - g.pl
        a_rs = J.a_pix * (g.sw if J.a_at_input else 1)
        c_rs = J.c_pix * (g.sw if J.c_at_input else 1)
        nhwc_rows(J, A, C, R, M, packed,
                  (ip if J.a_at_input else op + lo_) * J.a_pix,
                  (ip if J.c_at_input else op + lo_) * J.c_pix,
                  a_rs, c_rs, hi_ - lo_, u0, u1, True, scratch)


cdef void nhwc_tiling(NhwcJob *J, real *dummy) noexcept nogil:
    """The tile, panel and block sizes of J's GEMM."""
    J.mr = tile_mr(dummy)
    J.nr = tile_nr(dummy)
    J.ps = pw_panel_stride(J.kc, J.nr)
    J.ppg = cdiv(J.ncg, J.nr)
    J.gs = J.ppg * J.ps
    J.kblock = KBLOCK_BYTES // sizeof(real)
    J.pblock = imax(1, L2_BLOCK_BYTES // (imin(J.kc, J.kblock) * J.nr * sizeof(real) + 1))
    J.units = J.ppg * J.g.groups
    J.prefetch_a = (J.g.n * (J.g.h * J.g.w if J.a_at_input else J.g.ho * J.g.wo)
                    * J.a_pix * sizeof(real) > PREFETCH_A_MIN_BYTES)
    J.group_rows = 0
    if J.g.groups > 1 and J.gs * J.g.groups * sizeof(real) <= L2_BLOCK_BYTES // 2:
        J.group_rows = imax(1, GROUP_ROWS_BYTES // ((J.a_pix + J.c_pix) * sizeof(real))
                            // J.mr) * J.mr


cdef int nhwc_run(NhwcJob *J, const real *A, real *C, const real *R,
                  const real *M, const real *packed, Py_ssize_t nthreads) noexcept nogil:
    cdef const Geom *g = &J.g
    cdef Py_ssize_t mtot = g.n * g.ho * g.wo, items, rowitems, per_thread
    cdef double flops = 2.0 * mtot * J.kc * J.ncg * g.groups
    cdef int failed = 0, team
    nhwc_tiling(J, C)
    # A residual too large to stay in L2 between calls is read from L3 or
    # memory, and the kernel only needs it in its epilogue, too late for the
    # hardware prefetchers to have it there on short-K layers: each row tile
    # asks for the next one's residual rows first (on a cold 112x112x96
    # residual, about half of its extra cost).  Not below PREFETCH_R_MIN_BYTES.
    J.prefetch_r = R != NULL and mtot * J.ncg * g.groups * sizeof(real) > PREFETCH_R_MIN_BYTES
    # Split pixels when each thread gets enough row tiles to amortise its
    # walk over the weights; otherwise (7x7, 14x14 maps) split the columns so
    # each thread streams only its share of the weights.
    J.nsplit = 1
    if nthreads > 1 and mtot < 8 * <Py_ssize_t>J.mr * nthreads:
        J.nsplit = imin(J.units, nthreads)
    if g.simple:
        # NHWC_SHARES equal shares of the row tiles per thread, taken from a
        # dynamic schedule.  With the columns split too, only as many row
        # shares as still needed.
        if J.nsplit > 1:
            J.nmchunks = imax(1, imin(cdiv(mtot, J.mr), cdiv(nthreads, J.nsplit)))
        else:
            per_thread = NHWC_SHARES
            if nthreads == 1 or J.kc * J.ncg * g.groups * sizeof(real) > L2_BLOCK_BYTES:
                per_thread = 1
            J.nmchunks = imax(1, imin(cdiv(mtot, J.mr), per_thread * nthreads))
            if nthreads > 1:
                # Each share at least NHWC_SHARE_MIN_TILES row tiles, and
                # the same number of shares for every thread.
                J.nmchunks = imin(J.nmchunks, imax(nthreads, cdiv(mtot, J.mr)
                                                   // NHWC_SHARE_MIN_TILES
                                                   // nthreads * nthreads))
        rowitems = J.nmchunks
    else:
        rowitems = g.n * g.ho
    items = rowitems * J.nsplit
    team = plan_threads(nthreads, flops, items)
    # A residual in its own buffer leaves C write-only too (in place, the
    # call reads C).  relu6 + residual, 1 thread, in-process A/B: 16->96 at
    # 4x112x112 (18 MB out) 5% faster, at 8x112x112 12%; with a pass over
    # the output after it, 2% and 8%.  With such a residual, from a smaller
    # size (see STREAM_RESIDUAL_MIN_BYTES).
    J.prm.stream = (R != C and J.kc <= J.kblock and
                    mtot * J.c_pix * sizeof(real) >= stream_from_bytes(R, C))
    cdef Task task
    task.job, task.f32, task.failed = J, sizeof(real) == 4, &failed
    task.a, task.c, task.r, task.m, task.packed = A, C, R, M, packed
    pw_pool_run(team, items, nhwc_task, &task)
    return failed


cdef void nhwc_task(void *ctx, ptrdiff_t item) noexcept nogil:
    cdef const Task *t = <Task *>ctx
    cdef const NhwcJob *J = <const NhwcJob *>t.job
    if t.f32:
        nhwc_item(J, item, <const float *>t.a, <float *>t.c, <const float *>t.r,
                  <const float *>t.m, <const float *>t.packed, t.failed)
    else:
        nhwc_item(J, item, <const double *>t.a, <double *>t.c, <const double *>t.r,
                  <const double *>t.m, <const double *>t.packed, t.failed)
    end_streamed_item(&J.prm)
