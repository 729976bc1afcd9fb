# Included by _core.pyx (one module, so the fused type, the typed helpers
# and the geometry are shared): the NCHW plane driver.

# ------------------------------------------------------- NCHW plane driver
#
# Rows of the GEMM are channels, columns are pixels of one image plane, so
# every store is contiguous.  Forward: A = weights (C_out x C_in/g), B = a
# strip of input pixels gathered per channel, C = output plane rows.  Grad
# input: A = transposed weights, B = a strip of grad output (masked), C =
# grad input plane rows (scattered through a tile when strided or padded).

cdef struct NchwJob:
    Geom g
    bint grad_input
    Py_ssize_t kc, rows_g         # depth, C rows per group
    Py_ssize_t b_planes, c_planes # channels of B's / C's tensor (image stride)
    Py_ssize_t b_plane, c_plane   # pixels per plane of B's / C's tensor
    size_t mr, nr, ps
    Py_ssize_t width              # pixels of each plane run here (the rest:
                                  # a pixel-tile job, see nchw_tail_pixels)
    Py_ssize_t strip, nstrips     # pixels per strip, strips per image
    Py_ssize_t rsplit             # pieces the C rows are cut into
    bint direct                   # B's whole panels are read in place
    bint copy_b                   # ... by each group's first row tile, which
                                  # copies them into packed panels as it goes
    Py_ssize_t kblock             # depth per pass over the row tiles
    bint ahead_b                  # ask for the next strip's B rows early
    Py_ssize_t team_step          # items from one a thread takes to its next
    bint masked
    double mlo, mhi
    pw_gemm_params prm


cdef void nchw_item(const NchwJob *J, Py_ssize_t item, const real *A,
                    const real *B, real *C, const real *rowbias, const real *R,
                    const real *M, int *failed) noexcept nogil:
    cdef const Geom *g = &J.g
    # Row pieces are outermost, so a static schedule hands each thread whole
    # pieces across every strip (balanced even when strips are ragged).
    cdef Py_ssize_t rs = item // (g.n * J.nstrips), it = item % (g.n * J.nstrips)
    cdef Py_ssize_t n = it // J.nstrips, s = it % J.nstrips
    cdef Py_ssize_t p0 = s * J.strip, width = imin(J.strip, J.width - p0)
    cdef Py_ssize_t rtot = J.rows_g * g.groups
    # Row pieces start on whole tiles, so only the last piece has a short one.
    cdef Py_ssize_t r0 = (rs * rtot // J.rsplit) // J.mr * J.mr
    cdef Py_ssize_t r1 = rtot if rs + 1 == J.rsplit else ((rs + 1) * rtot // J.rsplit) // J.mr * J.mr
    cdef Py_ssize_t grp, row, rend, mr_, j, i, off, full, tail
    cdef Py_ssize_t *joff = NULL
    cdef bint scatter = J.grad_input and not g.simple
    cdef bint direct = J.direct
    cdef bint copy_b = J.copy_b, copied = False
    cdef real *tail_bp
    cdef size_t panels_bytes
    cdef char *buf
    cdef real *bp
    cdef real *tile = NULL
    cdef real *c
    cdef real *cbase
    cdef Py_ssize_t c_rs
    cdef const real *src
    cdef const real *msk
    cdef pw_gemm_params prm = J.prm
    cdef pw_gemm_params dprm = J.prm
    cdef pw_gemm_params lprm = J.prm
    cdef Py_ssize_t gstart, kblock, k0, kb
    cdef bint last
    full = (width // <Py_ssize_t>J.nr) * <Py_ssize_t>J.nr if direct or copy_b else 0
    tail = width - full
    panels_bytes = cdiv(width if copy_b else tail, J.nr) * J.ps * sizeof(real)
    buf = <char *>pw_scratch(panels_bytes + width * sizeof(Py_ssize_t)
                             + J.mr * width * sizeof(real) + 128)
    if buf == NULL:
        failed[0] = 1
        return
    bp = <real *>buf
    # Copied panels (whole ones first, then the packed tail's) start from
    # a zero head, as pack leaves them; the copy writes their rows only.
    tail_bp = bp + (full // <Py_ssize_t>J.nr) * J.ps if copy_b else bp
    if copy_b:
        for j in range(full // <Py_ssize_t>J.nr):
            memset(bp + j * J.ps, 0, J.nr * sizeof(real))
    if not g.simple:
        joff = <Py_ssize_t *>(buf + panels_bytes)
        for j in range(width):
            joff[j] = input_offset(g, p0 + j)
    if scatter:
        tile = <real *>(buf + panels_bytes + width * sizeof(Py_ssize_t) + 64)
    prm.a_rs = J.kc
    prm.panel_stride = J.ps
    lprm = prm                      # packed rows resumed past the head
    lprm.b_ks = J.nr
    dprm = prm                      # whole panels read in place
    dprm.panel_stride = J.nr
    dprm.b_ks = J.b_plane
    # The next strip's B rows (of the item this thread likely takes next),
    # a share asked for by each row tile's GEMM while it runs, only where
    # B outgrows L2 (J.ahead_b, see NCHW_AHEAD_MIN_BYTES).  Asked for
    # on every B, as an earlier version did, dropping it was 2-6% faster on
    # MobileNetV2 shapes at batch 1 to 16 (in-process A/B, forward and
    # grad input, 1 thread; strided layers within 2%).
    cdef const char *nb = NULL
    cdef Py_ssize_t nb_width = 0, nb_tiles = 0, nb_tile = 0, nb_lo, nb_hi
    cdef Py_ssize_t nit = it + J.team_step, nn
    if J.ahead_b and nit < g.n * J.nstrips:
        nn = nit // J.nstrips
        nb_width = imin(J.strip, J.width - nit % J.nstrips * J.strip)
        nb = <const char *>(B + (nn * J.b_planes + r0 // J.rows_g * J.kc) * J.b_plane
                            + nit % J.nstrips * J.strip)
        nb_tiles = cdiv(imin(r1, (r0 // J.rows_g + 1) * J.rows_g) - r0, J.mr)
    row = r0
    while row < r1:
        grp = row // J.rows_g
        rend = imin(r1, (grp + 1) * J.rows_g)
        # Pack this group's ragged tail of B once for all its rows here.
        if J.grad_input or g.simple:
            src = B + (n * J.b_planes + grp * J.kc) * J.b_plane + p0
            msk = M + (src - B) if J.masked else NULL
            copied = False
            if tail:
                pack(tail_bp, J.nr, J.ps, J.kc, tail, src + full, J.b_plane, 1, NULL,
                     NULL, <real *>NULL, msk + full if msk != NULL else NULL,
                     J.mlo, J.mhi)
        else:
            src = B + (n * J.b_planes + grp * J.kc) * J.b_plane
            pack(bp, J.nr, J.ps, J.kc, width, src, J.b_plane, 0, NULL, joff,
                 <real *>NULL, <real *>NULL, 0, 0)
        # Depth blocks as in the NHWC driver: the first adds row bias and
        # residual, later ones add onto C (B resumes past the packed head
        # with b_ks = NR, or further down the plane rows in place), only the
        # last clamps.  The scatter path keeps one block: its tile is
        # per row tile.
        gstart = row
        kblock = J.kc if scatter else J.kblock
        k0 = 0
        while True:
            kb = imin(kblock, J.kc - k0)
            last = k0 + kb >= J.kc
            prm.kc = dprm.kc = lprm.kc = kb
            prm.clamp = dprm.clamp = lprm.clamp = J.prm.clamp if last else 0
            row = gstart
            while row < rend:
                mr_ = tile_rows(rend - row, J.mr)
                if scatter:
                    cbase = tile
                    c_rs = width
                else:
                    cbase = C + (n * J.c_planes + row) * J.c_plane + p0
                    c_rs = J.c_plane
                prm.c_rs = dprm.c_rs = lprm.c_rs = c_rs
                prm.r_rs = dprm.r_rs = lprm.r_rs = c_rs
                dprm.ahead = prm.ahead = NULL
                if nb != NULL and nb_tile < nb_tiles:
                    nb_lo = nb_tile * J.kc // nb_tiles
                    nb_hi = (nb_tile + 1) * J.kc // nb_tiles
                    nb_tile += 1
                    dprm.ahead = prm.ahead = nb + nb_lo * J.b_plane * sizeof(real)
                    dprm.ahead_rows = prm.ahead_rows = nb_hi - nb_lo
                    dprm.ahead_row_bytes = prm.ahead_row_bytes = nb_width * sizeof(real)
                    dprm.ahead_rs = prm.ahead_rs = J.b_plane * sizeof(real)
                    if full and not copied:
                        prm.ahead = NULL     # the tail's call is short
                if copied:
                    # Whole panels and tail, packed (copy_b; one depth block).
                    gemm(mr_, width, A + row * J.kc, bp, cbase,
                         rowbias + row if rowbias != NULL else NULL,
                         R + (cbase - C) if R != NULL else NULL, &prm)
                    row += mr_
                    continue
                if copy_b:
                    if mr_ == <Py_ssize_t>J.mr:
                        dprm.b_copy = bp
                        dprm.b_copy_ps = J.ps
                    else:
                        # Only the kernel's whole tile copies.
                        pack(bp, J.nr, J.ps, J.kc, full, src, J.b_plane, 1, NULL, NULL,
                             <real *>NULL, <real *>NULL, 0, 0)
                    copied = True
                if full:
                    gemm(mr_, full, A + row * J.kc + k0, src + k0 * J.b_plane, cbase,
                         rowbias + row if rowbias != NULL and k0 == 0 else NULL,
                         (R + (cbase - C) if R != NULL and not scatter else NULL)
                         if k0 == 0 else cbase, &dprm)
                    dprm.b_copy = NULL
                if tail:
                    c = cbase + full
                    if k0 == 0:
                        gemm(mr_, tail, A + row * J.kc, tail_bp, c,
                             rowbias + row if rowbias != NULL else NULL,
                             R + (c - C) if R != NULL and not scatter else NULL, &prm)
                    else:
                        gemm(mr_, tail, A + row * J.kc + k0,
                             tail_bp + (1 + k0) * <Py_ssize_t>J.nr, c, NULL, c, &lprm)
                if scatter:
                    # Each input pixel is read by at most one output pixel of
                    # a 1x1 conv, so the scatter assigns; the rest stays zero.
                    c = C + (n * J.c_planes + row) * J.c_plane
                    for i in range(mr_):
                        for j in range(width):
                            off = joff[j]
                            if off >= 0:
                                c[i * J.c_plane + off] = tile[i * width + j]
                row += mr_
            k0 += kb
            if k0 >= J.kc:
                break


# B tensors past L2 come from L3 or memory, through as many streams as B
# has rows, more than the prefetchers follow; each row tile's GEMM then
# asks for its share of the next strip's rows (pw_gemm_params.ahead).  An
# earlier session's measurements kept this to B of 8 MB and 64 rows or
# more.  On a Zen 4 host, in-process A/B of 1 MB and any depth against that,
# forward, 1 thread, MobileNetV2: b4 0.99 of the time with B in cache and
# 0.95 with caches swept between calls (32->16 at 112x112 0.72-0.81,
# 96->24 and 144->24 at 56x56 0.75-0.86, 192->32 at 28x28 0.73-0.79);
# b1 1.00 / 0.98; training step b4 0.97 (in cache and swept), b16 0.97,
# 2 threads even; float64 b1 even.  Asking on every B regardless of size
# was 4-6% slower on the 14x14 projections at b1, whose B stays in L2.
cdef size_t NCHW_AHEAD_MIN_BYTES = 1 << 20


cdef inline Py_ssize_t gcd(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


cdef bint l1_holds_rows(Py_ssize_t stride_bytes, Py_ssize_t rows) noexcept nogil:
    """Whether `rows` cache lines `stride_bytes` apart (one panel of B read in
    place) mostly stay in a 32 KB, 8-way, 64-set L1.  A stride that is a
    multiple of a large power of two maps them onto a few sets: a 112x112
    float plane (50176 bytes) uses 4 sets, 32 lines.  Measured: reading such
    planes in place lost 10-20% to packing them once deeper than 1.5 times
    what the sets hold."""
    cdef Py_ssize_t sets = 64
    if stride_bytes % 64 == 0:
        sets = 64 // gcd((stride_bytes // 64) % 64 or 64, 64)
    return 2 * rows <= 3 * 8 * sets


cdef bint nchw_b_in_place(Py_ssize_t kc, Py_ssize_t rows, Py_ssize_t b_plane, size_t nr,
                          size_t elem) noexcept nogil:
    """Whether the plane driver reads a contiguous B (kc rows of b_plane
    elements of `elem` bytes, for `rows` C rows in NR-wide panels) in place
    rather than packing it: few row tiles reuse a packed copy
    (NCHW_DIRECT_MAX_ROWS), and deeper strips are narrow (a few panels
    wide), so in place they are that many short row pieces per strip, while
    packed panels stream (NCHW_DIRECT_MAX_DEPTH)."""
    cdef Py_ssize_t depth = imin(kc, KBLOCK_BYTES // <Py_ssize_t>elem)
    cdef bint wide = nr * elem >= 128
    return (rows <= (NCHW_DIRECT_MAX_ROWS_WIDE if wide else NCHW_DIRECT_MAX_ROWS)
            and depth <= (NCHW_DIRECT_MAX_DEPTH_WIDE if wide else NCHW_DIRECT_MAX_DEPTH)
            and l1_holds_rows(b_plane * elem, depth))


cdef int nchw_run(NchwJob *J, const real *A, const real *B, real *C,
                  const real *rowbias, const real *R, const real *M,
                  Py_ssize_t nthreads, PixTileJob *tail,
                  const real *tail_panels) noexcept nogil:
    """tail: NULL, or a pixel-tile job over B and C (forward) for each
    plane's pixels past J.width, with tail_panels its NHWC panels; its
    items follow the plane driver's in the same team."""
    cdef const Geom *g = &J.g
    cdef Py_ssize_t plane = g.ho * g.wo, items, rtot = J.rows_g * g.groups
    cdef Py_ssize_t tail_items = 0
    cdef double flops = 2.0 * g.n * plane * J.kc * rtot
    cdef int failed = 0, team
    if J.width == 0:
        J.width = plane
    J.mr = tile_mr(C)
    J.nr = tile_nr(C)
    J.ps = pw_panel_stride(J.kc, J.nr)
    J.kblock = KBLOCK_BYTES // sizeof(real)
    # As many panels per strip as keep one depth block of them in half the
    # L2 budget: the kernel walks all of them for each row tile of weights,
    # so the weights are read once per strip and the strip stays in L2.
    # Weights larger than the L2 budget come from L3 (or memory) for every
    # strip, so they get strips four times as wide, which then live in L3
    # (ResNet-50 b1, one thread, interleaved: 8% faster with the weights
    # evicted between calls, 2% with them in L3; the 28x28-7x7 layers
    # 8-21%; MobileNetV2, whose weights are small, unchanged).
    cdef Py_ssize_t npan = cdiv(J.width, J.nr)
    cdef size_t strip_budget = L2_BLOCK_BYTES // 2
    if rtot * J.kc * sizeof(real) > L2_BLOCK_BYTES:
        strip_budget = 2 * L2_BLOCK_BYTES
    cdef Py_ssize_t strip_max = imax(1, strip_budget //
                                     (imin(J.kc, J.kblock) * J.nr * sizeof(real) + 1))
    J.nstrips = cdiv(npan, strip_max)
    J.rsplit = 1
    # Plain outputs keep ordinary stores: streamed, 16->96 at 8x112x112 was
    # 34% slower (an earlier session's A/B), each tile's rows being lines
    # in channel planes far apart rather than one run of memory.  With a
    # residual in its own buffer, as in the NHWC driver, reading every
    # output line in before overwriting it is a third stream beside the
    # residual and the output: streamed from STREAM_RESIDUAL_MIN_BYTES.
    # relu6 + residual, in-process A/B, Zen 4 host, caches swept between
    # calls: MobileNetV2 b1 1 thread 0.97 of the time (16->96 0.89-0.95),
    # 2 threads 0.98, b8 1 thread 0.86 (16->96 0.74).  The residual is not
    # asked for ahead by the driver (the kernel asks for each panel's
    # lines): a row tile asking for its next piece's residual lines, as an
    # earlier version did, was 3-5% slower on 16->96 and 32->16 whether the
    # output was streamed or formed in place (same A/B).
    J.prm.stream = (R != NULL and R != C and J.kc <= J.kblock and
                    g.n * plane * rtot * sizeof(real) >= stream_from_bytes(R, C))
    # Where B's strip is contiguous (no stride or padding to gather through,
    # no activation mask to apply), whole panels may be read in place and
    # only the ragged tail is packed.  Not for a streamed output of a
    # shallow (16-32 deep) layer with many rows (64 or more): there the
    # residual's lines come in from memory, and a packed copy of B, which
    # the row tiles then read as one run, beat its rows read in place.
    # relu6 + residual in its own buffer, in-process A/B, 1 thread: in a
    # copy of the bench's fused table (its layers and contenders, the two
    # versions in alternating blocks), the NCHW suite went from 1.065 to
    # 1.050-1.053 of the plain calls' time (two runs), and 16->96 at
    # 112x112 from 1.22-1.29 to 1.13-1.21 (four runs of a first version
    # that took in-place calls too, the same path for this one).  Alone,
    # 16->96: 0.93-0.99 of the time in cache in five runs of six (1.03 in
    # the sixth), 0.94-0.99 swept, float64 0.93-0.95, 2 threads
    # 0.90-1.00.  Other shapes it
    # takes, 1 thread: 16->64 at 112x112 and 24->96, 32->64 at 56x56
    # 0.88-1.00 in 11 runs of 12 (1.04 in the other), 24->72 1.05 and 0.93,
    # float64 24->96 1.00-1.03, 2 threads 16->64 1.01-1.02 and 24->96
    # 0.88-0.96.  Measured and left out: depth 8 (8->48, 8->64 at 112x112:
    # 1.02-1.09), depth 40-48 (40->80, 48->96 at 28x28: 1.01-1.07), fewer
    # rows (16->32, 16->48 at 112x112: even to 1.05), and in place (not
    # streamed: 0.95-1.03 in cache, 0.93-0.99 swept).
    cdef bint shallow_streamed = (J.prm.stream and 16 <= J.kc <= 32 and rtot >= 64)
    J.direct = (not J.masked and (J.grad_input or g.simple) and not shallow_streamed
                and nchw_b_in_place(J.kc, rtot, J.b_plane, J.nr, sizeof(real)))
    # Packed B, forward, one depth block: where the kernels can, each
    # group's first row tile reads B in place and copies it into the panels
    # for the rest, so the copy rides along that tile's arithmetic instead
    # of a pass of its own (a pass bound by L2 that the arithmetic does not
    # hide: skipping it took 3-6% off ResNet-50's 256->128 at 56x56 and
    # MobileNetV2's 24->144 at 56x56).  In-process A/B on the same layer
    # objects, forward, NCHW, 1 thread: MobileNetV2 b1 56x56-14x14 layers
    # 0.99 of the time (24->144 0.97, 32->192 0.98), b8 0.99, training
    # step b4 0.99; ResNet-50 b1 0.99 (256->128 at 56x56 0.97); 2 threads
    # 0.996.  The AVX2 kernel on the same host: MobileNetV2 b1 0.99,
    # ResNet-50 b1 0.996.
    J.copy_b = (ISA.copies_b and not J.direct and not J.masked and g.simple
                and not J.grad_input and J.kc <= J.kblock)
    # Otherwise every row piece packs the strip of B it reads for itself,
    # so each piece beyond one per thread packs it again.  In-process A/B,
    # one piece per thread against two where B is packed, forward, batch 1,
    # 2 threads: MobileNetV2's 14x14 expansions 0.95-0.96 of the time,
    # ResNet-50's 14x14 layers 0.95-0.97 (its suite 0.99).
    cdef Py_ssize_t pieces = 2 if J.direct else 1
    if nthreads > 1:
        if g.n * npan >= 4 * nthreads:
            # Enough pixels: at least four strips per thread, handed out
            # dynamically like the NHWC driver's row shares.
            J.nstrips = imax(J.nstrips, imin(npan, cdiv(4 * nthreads, g.n)))
        else:
            # Small maps: cut the rows (channels) into pieces.
            J.rsplit = imax(1, imin(pieces * nthreads, rtot // (2 * <Py_ssize_t>J.mr)))
    # Equal strips of whole panels; only the last one is ragged.
    J.strip = J.nr * cdiv(npan, J.nstrips)
    J.nstrips = cdiv(J.width, J.strip)
    items = g.n * J.nstrips * J.rsplit
    if tail != NULL:
        tail_items = pixtile_plan(tail, C, nthreads)
    team = plan_threads(nthreads, flops, items + tail_items)
    # A dynamic schedule hands a thread about every team-th item.
    J.team_step = team
    J.ahead_b = ((J.grad_input or g.simple) and J.kblock >= J.kc
                 and g.n * J.b_planes * J.b_plane * sizeof(real) >= NCHW_AHEAD_MIN_BYTES)
    cdef Task task
    task.job, task.f32, task.failed, task.items = J, sizeof(real) == 4, &failed, items
    task.a, task.b, task.c, task.rowbias, task.r, task.m = A, B, C, rowbias, R, M
    task.tail, task.packed = tail, tail_panels
    pw_pool_run(team, items + tail_items, nchw_task, &task)
    return failed


cdef void nchw_task(void *ctx, ptrdiff_t item) noexcept nogil:
    """Items [0, t.items) are the plane driver's; the rest, the tail's
    pixel tiles (t.packed: their panels)."""
    cdef const Task *t = <Task *>ctx
    cdef const NchwJob *J = <const NchwJob *>t.job
    cdef const PixTileJob *tail = <const PixTileJob *>t.tail
    if item < t.items:
        if t.f32:
            nchw_item(J, item, <const float *>t.a, <const float *>t.b, <float *>t.c,
                      <const float *>t.rowbias, <const float *>t.r, <const float *>t.m,
                      t.failed)
        else:
            nchw_item(J, item, <const double *>t.a, <const double *>t.b, <double *>t.c,
                      <const double *>t.rowbias, <const double *>t.r, <const double *>t.m,
                      t.failed)
        end_streamed_item(&J.prm)
    elif t.f32:
        pixtile_item(tail, item - t.items, <const float *>t.b, <float *>t.c,
                     <const float *>t.r, <const float *>NULL, <const float *>t.packed, t.failed)
    else:
        pixtile_item(tail, item - t.items, <const double *>t.b, <double *>t.c,
                     <const double *>t.r, <const double *>NULL, <const double *>t.packed,
                     t.failed)
