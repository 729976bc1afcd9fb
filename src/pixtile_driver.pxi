# Included by _core.pyx (one module, so the fused type, the typed helpers
# and the geometry are shared): the NCHW pixel-tile driver.

# ----------------------------------------------- NCHW pixel-tile driver
#
# Small NCHW planes make short GEMM rows for the plane driver: a 7x7 plane is
# 49 columns, three panels of 16 and a ragged fourth, so a quarter of its
# arithmetic lands on padding, and deep GEMMs pack B on every call.  Here a
# block of pixels takes the NHWC roles instead: MR adjacent pixels of a
# plane are an A tile (read in place, k stepping a plane, or regrouped, with
# grad output masked by the activation on the way), run
# against NHWC panels (forward: weights, bias in the head; grad input:
# transposed weights), and the C block is transposed into the output
# planes.  Only per-block copies, never a whole-tensor transpose.  Used for
# stride 1, no padding, small planes and one group or wide ones
# (nchw_pixel_tiles), where the caller passes the panels; in a forward pass
# also for larger planes of layers that cut the channels by 4 or more
# (pixtile_forward), and for the last few pixels of each larger plane
# (nchw_tail_pixels).

cdef Py_ssize_t PIXEL_MAX_PLANE = 64
# Channels (in and out) each group needs for pixel tiles.  In-process A/B
# against the plane driver, grouped 7x7 forward, order rotated, 1 thread:
# 960 -> 960 in 3 groups 0.86 of the time (2 threads 0.80), 480 in 3 0.92,
# 544 in 4 and 1088 in 8 0.94-0.97, 240 in 3 at batch 4 0.97 (training
# step 0.92-0.98); but 32 channels a group 1.03, 24 1.21, 16 1.04-1.41,
# 12 2.2, 1-4 2.2-2.4: each group's tiles, gather and transpose are then
# too small to pay for themselves.
cdef Py_ssize_t PIXEL_MIN_GROUP_CHANNELS = 64
# A block's A rows (in place or regrouped) and its C rows
# stay in L2 while the panel blocks stream past (C is then transposed out
# of L2, not memory).
cdef size_t PIXEL_BLOCK_BYTES = 160 * 1024
# An A tile read in place spans a line per k step (MR pixels of each plane),
# several times what its regrouped copy takes in L1, and is read again for
# every panel; the copy is one more pass over A.  In place for at most this
# many panels (unmasked): in-process A/B on MobileNetV2's 7x7 layers, NCHW,
# 1 thread, AVX-512, in place for all: 576->160 and 960->160 (5 panels)
# 0.90-0.97 of the time, 960->320 (10) 0.97-1.02, 160->960 and 320->1280
# (30-40) 1.01-1.05; the AVX2 tile (16 wide, twice the panels) 1.15 over
# the six layers.
cdef Py_ssize_t PIXEL_A_IN_PLACE_MAX_PANELS = 8


cdef inline bint pixtile_groups(Py_ssize_t groups, Py_ssize_t kg,
                                Py_ssize_t ng) noexcept nogil:
    """Whether groups of kg in and ng out channels are wide enough for
    pixel tiles (one group always is)."""
    return groups == 1 or imin(kg, ng) >= PIXEL_MIN_GROUP_CHANNELS


cdef inline bint pixtile_shape(Py_ssize_t groups, Py_ssize_t plane, Py_ssize_t kg,
                               Py_ssize_t ng) noexcept nogil:
    return plane <= PIXEL_MAX_PLANE and pixtile_groups(groups, kg, ng)


def fuse_grad_input(bint nhwc, Py_ssize_t groups, Py_ssize_t plane, Py_ssize_t kg,
                    Py_ssize_t ng):
    """Whether an unstrided, unpadded backward pass computes grad input
    inside the grad-weight sweep (grad_weight_bias's grad_in): always in
    NHWC; in NCHW off pixel tiles and up to NCHW_DIRECT_MAX_DEPTH output
    channels per group, where its B (grad output rows in place) reads well.
    In-process A/B, MobileNetV2 b4, 1 thread: NCHW backward 3-19% faster
    on 16->96 to 96->24 at 112x112 and 56x56, 22% with relu6 on 16->96;
    5-10% slower on 64->384 and 96->576 at 14x14 without a mask."""
    return nhwc or (not pixtile_shape(groups, plane, kg, ng)
                    and ng <= NCHW_DIRECT_MAX_DEPTH)


def nchw_pixel_tiles(Py_ssize_t groups, Py_ssize_t plane, Py_ssize_t kg, Py_ssize_t ng):
    """Whether an unstrided, unpadded NCHW pass with these groups, plane
    size and channels per group (in, out) runs on pixel tiles (and so wants
    NHWC panels)."""
    return pixtile_shape(groups, plane, kg, ng)


cdef struct PixTileJob:
    Py_ssize_t n, plane, groups
    Py_ssize_t kc, ncol           # per group: depth (A's planes), columns (C's planes)
    bint masked                   # A zeroed where M is outside (mlo, mhi)
    double mlo, mhi
    size_t mr, nr, ps
    Py_ssize_t ppg, pblock        # panels per group, panels per L2 block
    size_t gs                     # elements from one group's panels to the next
    Py_ssize_t first              # the first pixel of each plane covered
    Py_ssize_t block, nblocks     # pixels per block, blocks per image
    Py_ssize_t nsplit             # pieces the panels are cut into
    pw_gemm_params prm


cdef void pixtile_item(const PixTileJob *J, Py_ssize_t item, const real *A, real *C,
                       const real *R, const real *M, const real *packed,
                       int *failed) noexcept nogil:
    cdef Py_ssize_t s = item % J.nsplit, it = item // J.nsplit
    cdef Py_ssize_t grp = it % J.groups
    cdef Py_ssize_t n = it // J.groups // J.nblocks
    cdef Py_ssize_t p0 = J.first + (it // J.groups % J.nblocks) * J.block
    cdef Py_ssize_t rows = imin(J.block, J.plane - p0)
    cdef Py_ssize_t ntiles = cdiv(rows, J.mr), cells = J.ppg * ntiles
    cdef Py_ssize_t c0, c1, u0, u1, t0, t1
    if J.nsplit == 1:
        pixtile_block(J, n, grp, p0, rows, 0, J.ppg, A, C, R, M, packed, failed)
        return
    # Panels split between pieces: an equal share of the block's (panel,
    # row tile) cells each (see cell_run; whole panels left 160 outputs,
    # 5 panels, at 2 and 3 for two threads).
    c0 = s * cells // J.nsplit
    c1 = (s + 1) * cells // J.nsplit
    while c0 < c1:
        c0 += cell_run(c0, c1, ntiles, &u0, &u1, &t0, &t1)
        pixtile_block(J, n, grp, p0 + t0 * J.mr, imin(rows, t1 * J.mr) - t0 * J.mr,
                      u0, u1, A, C, R, M, packed, failed)


cdef void pixtile_block(const PixTileJob *J, Py_ssize_t n, Py_ssize_t grp, Py_ssize_t p0,
                        Py_ssize_t rows, Py_ssize_t u0, Py_ssize_t u1, const real *A,
                        real *C, const real *R, const real *M, const real *packed,
                        int *failed) noexcept nogil:
    """Pixels [p0, p0 + rows) of image n's plane in group grp, panels
    [u0, u1)."""
    cdef Py_ssize_t plane = J.plane
    cdef Py_ssize_t col0 = u0 * <Py_ssize_t>J.nr
    cdef Py_ssize_t cols = imin(J.ncol, u1 * <Py_ssize_t>J.nr) - col0
    cdef Py_ssize_t cw = (u1 - u0) * <Py_ssize_t>J.nr   # C block row stride
    cdef Py_ssize_t ntiles = cdiv(rows, J.mr), t, pb, pe, ncols
    cdef Py_ssize_t a_off = ((n * J.groups + grp) * J.kc) * plane + p0
    # A read in place (see PIXEL_A_IN_PLACE_MAX_PANELS): tile t's row i at
    # step k is A[a_off + k*plane + t*MR + i], the kernels' strided-k
    # broadcast.
    cdef bint a_in_place = not J.masked and u1 - u0 <= PIXEL_A_IN_PLACE_MAX_PANELS
    cdef size_t a_bytes = 0 if a_in_place else ntiles * J.mr * J.kc * sizeof(real)
    cdef char *buf
    cdef real *at
    cdef real *ct
    cdef real *c
    cdef real *dst
    cdef pw_gemm_params prm = J.prm
    if rows <= 0 or cols <= 0:
        return
    buf = <char *>pw_scratch(a_bytes + rows * cw * sizeof(real) + 128)
    if buf == NULL:
        failed[0] = 1
        return
    at = <real *>buf
    ct = <real *>(buf + a_bytes + 64)
    dst = C + ((n * J.groups + grp) * J.ncol + col0) * plane + p0
    packed = packed + grp * J.gs
    if a_in_place:
        prm.a_ks = plane
    else:
        # Tile t holds A[i][k] at t*kc*MR + k*MR + i.
        gather_tiles(at, J.mr, A + a_off, plane, J.kc, rows,
                     M + a_off if J.masked else NULL, J.mlo, J.mhi)
    # With a residual, the kernel stops at conv + bias and the move out to
    # the planes adds the residual and clamps, reading it in the order the
    # output is written: transposing it in beside C first, for the kernel,
    # made fused 7x7 layers 15% slower than plain ones.
    if R != NULL:
        prm.clamp = 0
    prm.c_rs = cw
    pb = u0
    while pb < u1:
        pe = imin(u1, pb + J.pblock)
        ncols = imin(J.ncol, pe * <Py_ssize_t>J.nr) - pb * <Py_ssize_t>J.nr
        for t in range(ntiles):
            c = ct + t * <Py_ssize_t>J.mr * cw + (pb - u0) * <Py_ssize_t>J.nr
            gemm(imin(J.mr, rows - t * <Py_ssize_t>J.mr), ncols,
                 A + a_off + t * <Py_ssize_t>J.mr if a_in_place
                 else at + t * J.kc * <Py_ssize_t>J.mr,
                 packed + pb * J.ps, c, NULL, NULL, &prm)
        pb = pe
    if R != NULL:
        transpose(dst, plane, ct, cw, rows, cols, R + (dst - C), plane, J.prm.clamp,
                  J.prm.lo, J.prm.hi)
    else:
        transpose(dst, plane, ct, cw, rows, cols, NULL, 0, 0, 0, 0)


cdef bint pixtile_path(const Geom *g, const real *panels) noexcept nogil:
    """Planes of at most PIXEL_MAX_PLANE pixels, where the plane driver's
    padded panels cost most.  On 14x14 (196 pixels, 6% padding) the
    regrouping and the output transpose cost more than they save:
    MobileNetV2's 14x14 layers ran 5-30% slower this way (interleaved A/B,
    one thread), its 7x7 layers 3-10% faster."""
    return panels != NULL and g.simple and pixtile_shape(g.groups, g.h * g.w, g.kg, g.ng)


# Larger planes whose B the plane driver packs (see nchw_b_in_place) copy
# the whole input, C_in x pixels, on every call, a pass bound by L2 that
# the arithmetic does not hide; pixel tiles copy the output instead, C_out x
# pixels, out of L2.  Where the input has at least this many times the
# output's channels, that is the smaller copy.  In-process A/B on the same
# layer objects, ResNet-50 b1 forward, NCHW: 1 thread 256->64 at 56x56
# 0.93 of the time, 512->128 at 28x28 0.94, 1024->256 at 14x14 0.98, the
# suite 0.99; 2 threads 0.93, 0.96, 0.96 and 0.99.  At twice (256->128,
# 512->256, 1024->512) even to 6% slower; where the plane driver reads
# the input in place (MobileNetV2's 56x56 and 28x28 projections) 9-15%
# slower.
cdef Py_ssize_t PIXEL_REDUCE_MIN_RATIO = 4


cdef bint pixtile_forward(const Geom *g, const real *panels) noexcept nogil:
    """Whether an NCHW forward pass runs wholly on pixel tiles: small
    planes (pixtile_path), and larger ones of one group that reduce the
    channels PIXEL_REDUCE_MIN_RATIO times or more where the plane driver
    would pack the input."""
    if pixtile_path(g, panels):
        return True
    return (panels != NULL and g.simple and g.groups == 1
            and PIXEL_REDUCE_MIN_RATIO * g.ng <= g.kg
            and not nchw_b_in_place(g.kg, g.ng, g.h * g.w, tile_nr(panels), sizeof(real)))


cdef Py_ssize_t nchw_tail_pixels(const Geom *g, const real *panels,
                                 size_t nr) noexcept nogil:
    """Pixels at the end of each plane that the NCHW plane driver leaves to
    pixel tiles: a ragged last panel of at most a quarter of NR columns
    (14x14 planes: 196 = 6 x 32 + 4), which the plane driver computes at
    the cost of a whole row of broadcasts per k step.  Forward, 1 thread,
    14x14 against 12x16 planes (2.1% fewer flops): 64->384, 96->576,
    256->1024 and 1024->256 took 1.064-1.070 times as long; 28x28's 16-
    pixel tail cost nothing (1.021-1.028).  Needs the panels (a layer's)
    and what pixel tiles need of the groups; 0 where it does not apply."""
    cdef Py_ssize_t plane = g.h * g.w, tail = plane % <Py_ssize_t>nr
    if (panels == NULL or not g.simple or plane <= PIXEL_MAX_PLANE or tail == 0
            or 4 * tail > <Py_ssize_t>nr
            or not pixtile_groups(g.groups, g.kg, g.ng)):
        return 0
    return tail


cdef int pixtile_run(PixTileJob *J, const real *A, real *C, const real *R,
                     const real *M, const real *packed, Py_ssize_t nthreads) noexcept nogil:
    cdef Py_ssize_t items = pixtile_plan(J, C, nthreads)
    cdef double flops = 2.0 * J.n * J.plane * J.kc * J.ncol * J.groups
    cdef int failed = 0
    cdef int team = plan_threads(nthreads, flops, items)
    cdef Task task
    task.job, task.f32, task.failed = J, sizeof(real) == 4, &failed
    task.a, task.c, task.r, task.m, task.packed = A, C, R, M, packed
    pw_pool_run(team, items, pixtile_task, &task)
    return failed


cdef void pixtile_task(void *ctx, ptrdiff_t item) noexcept nogil:
    cdef const Task *t = <Task *>ctx
    cdef const PixTileJob *J = <const PixTileJob *>t.job
    if t.f32:
        pixtile_item(J, item, <const float *>t.a, <float *>t.c, <const float *>t.r,
                     <const float *>t.m, <const float *>t.packed, t.failed)
    else:
        pixtile_item(J, item, <const double *>t.a, <double *>t.c, <const double *>t.r,
                     <const double *>t.m, <const double *>t.packed, t.failed)


cdef Py_ssize_t pixtile_plan(PixTileJob *J, real *dummy, Py_ssize_t nthreads) noexcept nogil:
    """Tiles, panels, blocks and pieces of J's pixels [first, plane) of
    every plane; returns the number of items."""
    cdef Py_ssize_t pixels = J.plane - J.first, mtot = J.n * pixels, ntiles
    J.mr = tile_mr(dummy)
    J.nr = tile_nr(dummy)
    J.ps = pw_panel_stride(J.kc, J.nr)
    J.ppg = cdiv(J.ncol, J.nr)
    J.gs = J.ppg * J.ps
    J.pblock = imax(1, L2_BLOCK_BYTES // (J.kc * J.nr * sizeof(real) + 1))
    J.prm.kc = J.kc
    J.prm.panel_stride = J.ps
    J.prm.a_rs = 1
    J.prm.a_ks = J.mr
    J.prm.b_ks = 0
    # As the NHWC driver: few pixels per thread split the panels instead
    # (unless groups already give every thread its own).
    J.nsplit = 1
    if nthreads > 1 and mtot < 8 * <Py_ssize_t>J.mr * nthreads and J.groups < nthreads:
        J.nsplit = imin(J.ppg, nthreads)
    ntiles = cdiv(pixels, J.mr)
    # Every block streams all the weights: past an L2 block of them, one
    # block per image (per thread), as the NHWC driver does with its shares.
    if J.kc * J.ncol * sizeof(real) > L2_BLOCK_BYTES:
        J.nblocks = 1
    else:
        J.nblocks = cdiv(pixels, imax(<Py_ssize_t>J.mr,
                                      PIXEL_BLOCK_BYTES // ((J.kc + J.ncol) * sizeof(real))))
    if nthreads > 1 and J.nsplit == 1:
        J.nblocks = imax(J.nblocks, cdiv(2 * nthreads, J.n * J.groups))
    J.nblocks = imin(J.nblocks, ntiles)
    J.block = J.mr * cdiv(ntiles, J.nblocks)
    J.nblocks = cdiv(pixels, J.block)
    return J.n * J.nblocks * J.groups * J.nsplit


cdef void pixtile_job(PixTileJob *P, const Geom *g, bint grad_input) noexcept nogil:
    """Forward reads C_in planes of x into C_out planes; grad input C_out
    planes of grad output into C_in planes."""
    memset(P, 0, sizeof(P[0]))
    P.n = g.n
    P.plane = g.h * g.w
    P.groups = g.groups
    P.kc = g.ng if grad_input else g.kg
    P.ncol = g.kg if grad_input else g.ng
