# The compiled drivers.  Each pass is cut into independent work items (pixel
# tiles, channel blocks) that run on several threads (pw_pool.c: OpenMP or
# pwconv's own pool) with the GIL released; every item ends in calls to the one microkernel of
# pw_kernels.h.  Arguments were validated by the Python layer: arrays arrive
# C-contiguous, of one dtype, with consistent shapes, so nothing here raises
# on bad input.
#
# This file holds what every pass shares (tuning constants, runtime facts,
# typed helpers, geometry, weight packing) and the forward and grad input
# passes; each GEMM driver and the grad weight pass are in a file of their
# own, included below (one compiled module).
cimport numpy as cnp
from libc.string cimport memset, memcpy
from libc.stdlib cimport malloc, free

import numpy as np

from pw_decl cimport *

cnp.import_array()

ctypedef fused real:
    float
    double

cdef const pw_isa *ISA = pw_isa_best()

# Bytes of packed B one kernel sweep may walk: half of Zen 3's 512 KB L2, so
# the panels stay in L2 while successive row tiles reuse them.
cdef size_t L2_BLOCK_BYTES = 256 * 1024
# Pixels a grad-weight chunk reduces before its partial is written back.
cdef Py_ssize_t DW_CHUNK = 256
# Bytes of one A row a kernel call reduces before C is written back.  A
# whole ResNet-50 or MobileNetV2 depth (up to 2048 floats) runs unblocked:
# cut into 1 KB blocks, each panel's slices were 16 KB runs 65 KB apart
# that the prefetchers had to find anew, and C went through memory once
# per block (ResNet-50 b1, one thread, in one run against XNNPACK: 0.95
# with 1 KB blocks, 1.08-1.09 with 4 KB or none; NCHW against torch 0.97
# -> 1.10).
cdef Py_ssize_t KBLOCK_BYTES = 8192
# Row shares per thread in the NHWC driver, handed out dynamically: on a
# shared host one core can run slower for a while, and a static split then
# waits for it (measured: 4 static -> 16 dynamic, 2 threads, MobileNetV2
# b1, +4% against XNNPACK in the same run).  A static hand-out where there
# is exactly one piece per thread was even with dynamic (MobileNetV2 b1, 2
# threads, variants in random order: NHWC 0.991, NCHW 0.999), so the
# dynamic one stays, with its cover for a late worker.
cdef Py_ssize_t NHWC_SHARES = 16
# ...but every share walks all the weights, so weights larger than one L2
# block (streamed from L3, or memory when other work has evicted them) get
# one share per thread, and a lone thread takes all rows in one share.
# Measured on ResNet-50 b1, one thread, interleaved: 4-11% faster with the
# weights in L3, 15-16% with them evicted (7x7/14x14 layers 13-47%);
# MobileNetV2 and two threads unchanged.
# A share also costs its hand-out from the schedule and the setup of its
# row loop, so with several threads a share gets at least this many row
# tiles, and every thread the same number of shares: 14x14 maps (28 tiles
# at batch 1) were 28 one-tile shares.  In-process A/B, MobileNetV2 b1
# NHWC forward, 2 threads: 28x28 and 14x14 layers 0.96 of the time (a
# noisier run: 28x28 0.95-0.97, 14x14 0.87-0.95), the suite 0.99;
# ResNet-50 b1 0.996, b8 even, NHWC training step b4 0.996; 4 tiles a
# share fell between (noisier run).
cdef Py_ssize_t NHWC_SHARE_MIN_TILES = 8
# NCHW reads A's rows in place, one stream per row: long chunks let the
# hardware prefetcher ramp up on each (1024-2048 measured best).
cdef Py_ssize_t DW_CHUNK_NCHW = 2048
# Shorter chunks where B is read in place, so a tile's strided rows of A
# and B stay in L1 across its panels (measured on MobileNetV2 shapes).
cdef Py_ssize_t DW_CHUNK_DIRECT = 64
# Grad weight chunks short enough that their grad output rows fit in this
# much: masked into a buffer (mask_once in dw_thread), or read again by NCHW
# grad input fused into the sweep while still in L2.  NHWC: before, rows of
# more than 32 floats were masked twice, by grad input's row tiles and by
# grad weight's regrouping, each reading grad output and the output again,
# and the swapped operand order was never used with a mask.  In-process A/B,
# MobileNetV2 b4, 1 thread, relu6 backward: 9.5% faster in all, 16->96 at
# 112x112 29%, 24->144 at 56x56 25%; 256 KB chunks 1.8% faster than 128 KB,
# 512 KB no better.
cdef Py_ssize_t MASK_ONCE_BYTES = 256 * 1024
# Grad weight packs NHWC input rows once this many output channels (row
# tiles of the GEMM) reuse them; measured on MobileNetV2 shapes.
cdef Py_ssize_t DW_PACK_MIN_ROWS = 64
# Row tiles of dW each thread must get to own them (see own_rows).
cdef Py_ssize_t OWN_MIN_TILES = 4
# Flops each thread of a team must get (about 10 us of one core).
cdef double MIN_PARALLEL_FLOPS = 1e6
# NCHW B planes are read in place only for GEMMs at most this deep.  In an
# interleaved A/B over MobileNetV2's layers, packing made the 14x14 and 7x7
# projections (K = 384-960) 5-10% faster at batch 1 and 4, while the 112x112
# and 56x56 ones (K <= 192) stayed 5-20% faster in place.
cdef Py_ssize_t NCHW_DIRECT_MAX_DEPTH = 256
# ... and only for at most this many C rows (6 row tiles of 6): each row
# tile re-reads the strip's B rows, one line from each of K rows a plane
# apart, where a packed copy is one contiguous run.  In-process A/B against
# 96 rows, forward, order rotated: 16->96 at 112x112 (b1, b4) 4-6% faster
# with 1 thread and 4-7% with 2, 64->64 at 56x56 7-10%, 96->64 at 4x28x28
# 8-11%; 192->64 at 14x14 within 1% (1 thread).  Lowering it to 16 was
# mixed (144->24 and 32->32 at 56x56 10% slower, 96->24 at 4x56x56 6%
# faster).
cdef Py_ssize_t NCHW_DIRECT_MAX_ROWS = 32
# Panels of 128 bytes (the AVX-512 tile: 32 floats, 16 doubles) read two
# whole lines of each B row per k step in place, and there the NCHW driver
# reads in place up to 96 rows and 576 deep.  In-process A/B on a Zen 4
# host, forward, 1 thread, against 32 and 256: MobileNetV2 b1 0.98 of the
# time (the 14x14 projections, 64-96 rows and K 192-576, 0.93-0.96; 16->96
# at 112x112 0.93), b8 0.98, float64 b1 0.99, ResNet-50 b1 even; grad input
# alone 64->384 and 96->576 at 4x14x14 0.93.  The AVX2 tile (64-byte
# panels) on the same host measured even with those limits (576->96 and
# 384->96 1.06, 384->64 0.96), so it keeps the ones above.  A streamed
# output with a residual beside it is an exception (shallow_streamed in
# nchw_run).
cdef Py_ssize_t NCHW_DIRECT_MAX_ROWS_WIDE = 96
cdef Py_ssize_t NCHW_DIRECT_MAX_DEPTH_WIDE = 576


# NHWC outputs past half the last-level cache (16 MB where the OS does not
# say) are written with non-temporal stores, when each value is written once
# and not read back (pw_gemm_params.stream): most of such an output leaves
# the cache before anything reads it, and the stores then skip reading every
# line in first.  Measured (in-process A/B, 1 thread, 32 MB L3): forward
# 16->96 at 4x112x112 (19 MB out) 7-9% faster and at 8x112x112 7-12%; with
# a pass over the output right after it (what the next layer does), the
# pair was still 3% and 6% faster.
def llc_bytes():
    """Bytes of one instance of the last-level cache, 0 when unknown.  Linux
    sysfs first: glibc's sysconf reports the sum over all of AMD's core
    complexes (256 MB on this project's 32 MB-per-complex EPYC)."""
    import glob
    best = (0, 0)
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            with open(index + "/level") as f:
                level = int(f.read())
            with open(index + "/size") as f:
                size = f.read().strip()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
            best = max(best, (level, int(size.rstrip("KMG")) * scale))
        except (OSError, ValueError):
            continue
    return best[1] or int(pw_llc_bytes())


cdef size_t LLC_BYTES = llc_bytes()
cdef size_t STREAM_MIN_BYTES = (LLC_BYTES // 2 if LLC_BYTES >= 8 * 1024 * 1024
                                else 16 * 1024 * 1024)
# With a residual in its own buffer the call already streams two tensors of
# the output's size (the residual in, the output out), and reading every
# output line in before overwriting it adds a third, so NHWC outputs from
# 1 MB are streamed there (never past STREAM_MIN_BYTES).  relu6 + residual,
# MobileNetV2 b1 shapes, 1 thread, in-process A/B followed by a read of the
# output as the next layer would do, on a Zen 4 host (32 MB L3): 16->96 at
# 112x112 (4.8 MB out) 0.83 of the time with a 48 MB sweep between calls
# and 0.80 without one; 24->144 at 56x56 (1.8 MB) 0.84-0.86 swept, 0.98-1.01
# not.  On Zen 3 an earlier session measured a smaller effect (0.82 on
# 16->96 alone; with the output read after it, 3% slower without the sweep,
# 3% faster with it).  Plain outputs of that size keep ordinary stores:
# streamed from 1 MB, 24->144 was 8% slower without the sweep.
cdef size_t STREAM_RESIDUAL_MIN_BYTES = 1024 * 1024


cdef inline size_t stream_from_bytes(const void *R, const void *C) noexcept nogil:
    """The output size from which C is streamed: STREAM_MIN_BYTES, or
    STREAM_RESIDUAL_MIN_BYTES (never past it) where a residual in its own
    buffer leaves C write-only beside it (in place, R is C and the call
    reads C)."""
    if R != NULL and R != C and STREAM_RESIDUAL_MIN_BYTES < STREAM_MIN_BYTES:
        return STREAM_RESIDUAL_MIN_BYTES
    return STREAM_MIN_BYTES


cdef inline void end_streamed_item(const pw_gemm_params *prm) noexcept nogil:
    # A pool worker's streamed stores must be visible before the caller
    # (another thread) reads C.
    if prm.stream:
        pw_store_fence()

# ------------------------------------------------------------ runtime facts

def select_isa(name):
    """Make `name` ('generic', 'avx2', 'neon', ...) the kernel family; None
    picks the best this CPU runs.  Returns False when `name` cannot run."""
    global ISA
    cdef const pw_isa *chosen
    if name is None:
        chosen = pw_isa_best()
    else:
        b = name.encode()
        chosen = pw_isa_by_name(b)
    if chosen == NULL:
        return False
    ISA = chosen
    return True


def isa_name():
    return ISA.name.decode()


def isa_available():
    return pw_isa_available().decode().split()


def tile_shape(itemsize):
    """(MR, NR) of the active kernel for float32 (4) or float64 (8)."""
    if itemsize == 4:
        return int(ISA.mr_f32), int(ISA.nr_f32)
    return int(ISA.mr_f64), int(ISA.nr_f64)


def openmp_enabled():
    return bool(pw_omp_enabled())


def address(object a):
    """Where a's data starts: what ndarray.ctypes.data gives, without the
    ctypes object (about 10 us a call, as much as a whole small layer)."""
    return <size_t>cnp.PyArray_DATA(<cnp.ndarray>a)


def stream_min_bytes(object value=None):
    """The output size from which C is written with non-temporal stores;
    with a value, set it (tests force the streamed path with 0) and return
    the previous one."""
    global STREAM_MIN_BYTES
    old = STREAM_MIN_BYTES
    if value is not None:
        STREAM_MIN_BYTES = value
    return old


def pool_kind():
    """What runs a call's threads (src/pw_pool.c)."""
    return pw_pool_kind().decode()


def use_pool(bint pool):
    """Run threaded calls on pwconv's pool (True) or OpenMP (False); False
    when this build cannot."""
    return bool(pw_pool_use(pool))


def pool_spin_us(object value=None):
    """How long idle pool workers spin before they sleep, in microseconds;
    with a value, set it and return the previous one."""
    old = int(pw_pool_spin_us())
    if value is not None:
        pw_pool_set_spin_us(value)
    return old


def default_threads():
    """The OpenMP default team size: honours OMP_NUM_THREADS and threadpoolctl."""
    return int(pw_omp_max_threads())


# ---------------------------------------------------------- typed helpers

cdef inline void gemm(size_t mr, size_t nc, const real *a, const real *packed,
                      real *c, const real *rb, const real *r,
                      const pw_gemm_params *p) noexcept nogil:
    if real is float:
        ISA.gemm_f32(mr, nc, a, packed, c, rb, r, p)
    else:
        ISA.gemm_f64(mr, nc, a, packed, c, rb, r, p)


cdef inline void pack(real *dst, size_t nr, size_t ps, size_t kc, size_t ncols,
                      const real *src, Py_ssize_t ks, Py_ssize_t js,
                      const Py_ssize_t *koff, const Py_ssize_t *joff,
                      const real *head, const real *mask, double lo,
                      double hi) noexcept nogil:
    if real is float:
        pw_pack_f32(dst, nr, ps, kc, ncols, src, ks, js, koff, joff, head, mask, lo, hi)
    else:
        pw_pack_f64(dst, nr, ps, kc, ncols, src, ks, js, koff, joff, head, mask, lo, hi)


cdef inline void mask_rows(real *dst, Py_ssize_t dst_rs, const real *src,
                           Py_ssize_t src_rs, size_t rows, size_t cols,
                           const real *mask, double lo, double hi,
                           double *col_sums, double *row_sums) noexcept nogil:
    if real is float:
        pw_mask_rows_f32(dst, dst_rs, src, src_rs, rows, cols, mask, lo, hi,
                         col_sums, row_sums)
    else:
        pw_mask_rows_f64(dst, dst_rs, src, src_rs, rows, cols, mask, lo, hi,
                         col_sums, row_sums)


cdef inline void transpose(real *dst, Py_ssize_t dst_rs, const real *src,
                           Py_ssize_t src_rs, size_t rows, size_t cols, const real *r,
                           Py_ssize_t r_rs, int clamp, double lo, double hi) noexcept nogil:
    if real is float:
        pw_transpose_f32(dst, dst_rs, src, src_rs, rows, cols, r, r_rs, clamp, lo, hi)
    else:
        pw_transpose_f64(dst, dst_rs, src, src_rs, rows, cols, r, r_rs, clamp, lo, hi)


cdef inline void gather_tiles(real *dst, size_t mr, const real *src, Py_ssize_t src_rs,
                              size_t kc, size_t npix, const real *mask, double lo,
                              double hi) noexcept nogil:
    if real is float:
        pw_gather_tiles_f32(dst, mr, src, src_rs, kc, npix, mask, lo, hi)
    else:
        pw_gather_tiles_f64(dst, mr, src, src_rs, kc, npix, mask, lo, hi)


cdef inline size_t tile_mr(real *dummy) noexcept nogil:
    if real is float:
        return ISA.mr_f32
    return ISA.mr_f64


cdef inline size_t tile_nr(real *dummy) noexcept nogil:
    if real is float:
        return ISA.nr_f32
    return ISA.nr_f64


cdef inline Py_ssize_t cdiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline Py_ssize_t imin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t imax(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline Py_ssize_t tile_rows(Py_ssize_t left, size_t mr) noexcept nogil:
    """Rows of the next row tile when `left` rows remain.  One row past
    whole tiles (64 outputs: 9 x 7 + 1) would end in a one-row tile, whose
    two FMA chains per k step leave the FMA units mostly waiting; the last
    MR + 1 rows go as 4 + (MR - 3) instead, tiles the AVX2 (6-row) and
    AVX-512 (7-row) kernels run on their 4-row instance.  In-process A/B,
    forward, 1 thread: AVX-512 NCHW (C_out rows), MobileNetV2's 192->64
    and 384->64 at 14x14 0.966-0.979 of the time (from 1.041-1.045 to
    1.014-1.018 of NHWC's), ResNet-50's 64->64 at 56x56 1.091 -> 1.067 of
    NHWC's; AVX2 NHWC, MobileNetV2's 7x7 layers (49 pixels, 8 x 6 + 1)
    0.981.  NEON's 6-row double tile takes the split too, at no cost or
    gain: its kernel computes every short tile at full height.  Each value
    is still one whole dot product in the same order, so results do not
    change."""
    if left == <Py_ssize_t>mr + 1 and 4 < mr <= 7:
        return 4
    return imin(<Py_ssize_t>mr, left)


cdef inline void *data(object arr):
    return cnp.PyArray_DATA(<cnp.ndarray>arr) if arr is not None else NULL


cdef inline Py_ssize_t cell_run(Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t ntiles,
                                Py_ssize_t *u0, Py_ssize_t *u1, Py_ssize_t *t0,
                                Py_ssize_t *t1) noexcept nogil:
    """The next run of a column piece's (panel, row tile) cells [c0, c1),
    numbered panel by panel, ntiles row tiles a panel: whole panels [u0, u1)
    with row tiles [0, ntiles), or part of panel u0 (u1 = u0 + 1), row tiles
    [t0, t1).  Returns the cells it takes.  The drivers that split a small
    map's panels between threads walk their pieces with it, so a panel may
    be cut between two pieces at a row tile."""
    cdef Py_ssize_t whole
    u0[0] = c0 // ntiles
    t0[0] = c0 % ntiles
    whole = (c1 - c0) // ntiles if t0[0] == 0 else 0
    if whole:
        u1[0] = u0[0] + whole
        t1[0] = ntiles
        return whole * ntiles
    u1[0] = u0[0] + 1
    t1[0] = imin(ntiles, t0[0] + (c1 - c0))
    return t1[0] - t0[0]


# ------------------------------------------------------------ geometry

cdef struct Geom:
    Py_ssize_t n, h, w, ho, wo      # batch, input and output spatial size
    Py_ssize_t sh, sw, pt, pl       # stride and top/left padding
    Py_ssize_t cin, cout, groups, kg, ng
    bint simple                     # output pixel p reads input pixel p


cdef inline bint is_f32(object arr):
    """float32 (else float64: the Python layer let nothing else through)."""
    return cnp.PyArray_TYPE(<cnp.ndarray>arr) == cnp.NPY_FLOAT32


cdef Geom make_geom(object x, object out, bint nhwc, Py_ssize_t sh,
                    Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                    Py_ssize_t groups):
    """The geometry of a call from its 4-D input-side and output-side arrays
    (read straight from the array headers: this runs on every call)."""
    cdef Geom g
    cdef cnp.npy_intp *xs = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef cnp.npy_intp *os = cnp.PyArray_DIMS(<cnp.ndarray>out)
    g.n = xs[0]
    if nhwc:
        g.h, g.w, g.cin = xs[1], xs[2], xs[3]
        g.ho, g.wo, g.cout = os[1], os[2], os[3]
    else:
        g.cin, g.h, g.w = xs[1], xs[2], xs[3]
        g.cout, g.ho, g.wo = os[1], os[2], os[3]
    g.sh, g.sw, g.pt, g.pl = sh, sw, pt, pl
    g.groups = groups
    g.kg = g.cin // groups
    g.ng = g.cout // groups
    g.simple = (sh == 1 and sw == 1 and pt == 0 and pl == 0
                and g.ho == g.h and g.wo == g.w)
    return g


cdef inline Py_ssize_t input_offset(const Geom *g, Py_ssize_t op) noexcept nogil:
    """Pixel index within the input plane read by output pixel `op` of its
    plane, or -1 when that position is padding."""
    cdef Py_ssize_t oh = op // g.wo, ow = op % g.wo
    cdef Py_ssize_t ih = oh * g.sh - g.pt, iw = ow * g.sw - g.pl
    if ih < 0 or ih >= g.h or iw < 0 or iw >= g.w:
        return -1
    return ih * g.w + iw


cdef int plan_threads(Py_ssize_t requested, double flops,
                      Py_ssize_t items) noexcept nogil:
    """Threads worth waking: each must get MIN_PARALLEL_FLOPS of work, or the
    fork/join (and, on a shared machine, waiting for a descheduled worker)
    costs more than it saves."""
    cdef Py_ssize_t useful = <Py_ssize_t>(flops / MIN_PARALLEL_FLOPS)
    return <int>imax(1, imin(imin(requested, items), useful))


# ------------------------------------------------------------ strided input

# Bytes each thread of a gather must copy (a few microseconds) to be woken.
GATHER_THREAD_BYTES = 256 * 1024


def gather_strided(object src, object dst, bint nhwc, Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t nthreads):
    """dst = the pixels of the C-contiguous map src that a (sh, sw)-strided,
    unpadded 1x1 convolution reads, as a dense map: NCHW (n, c, h, w) ->
    (n, c, ho, wo), NHWC (n, h, w, c) -> n*ho*wo pixels of c.  dst: any
    C-contiguous array of that many elements and src's dtype."""
    if sh < 1 or sw < 1:
        raise ValueError(f"strides must be >= 1, got ({sh}, {sw})")
    cdef Py_ssize_t n = src.shape[0]
    cdef Py_ssize_t maps = n if nhwc else n * src.shape[1]
    cdef Py_ssize_t h = src.shape[1] if nhwc else src.shape[2]
    cdef Py_ssize_t w = src.shape[2] if nhwc else src.shape[3]
    cdef Py_ssize_t inner = src.shape[3] if nhwc else 1
    cdef Py_ssize_t ho = (h - 1) // sh + 1 if h else 0
    cdef Py_ssize_t wo = (w - 1) // sw + 1 if w else 0
    cdef Py_ssize_t rows = maps * ho, team
    if dst.dtype != src.dtype or dst.size != rows * wo * inner:
        raise ValueError("dst must hold the gathered map in src's dtype")
    if not (src.flags.c_contiguous and dst.flags.c_contiguous):
        raise ValueError("src and dst must be C-contiguous")
    if rows * wo * inner == 0:
        return dst
    cdef bint f32 = is_f32(src)
    cdef char *ps = <char *>data(src)
    cdef char *pd = <char *>data(dst)
    cdef GatherTask task
    task.f32, task.dst, task.src, task.rows = f32, pd, ps, rows
    task.h, task.w, task.inner, task.sh, task.sw, task.ho, task.wo = h, w, inner, sh, sw, ho, wo
    team = <Py_ssize_t>imax(1, imin(imin(nthreads, rows),
                                    dst.nbytes // GATHER_THREAD_BYTES))
    task.chunk = cdiv(rows, team)
    with nogil:
        pw_pool_run(<int>team, team, gather_task, &task)
    return dst


cdef struct GatherTask:
    bint f32
    char *dst
    const char *src
    Py_ssize_t rows, chunk, h, w, inner, sh, sw, ho, wo


cdef void gather_task(void *ctx, ptrdiff_t t) noexcept nogil:
    cdef GatherTask *k = <GatherTask *>ctx
    gather_rows(k.f32, k.dst, k.src, t * k.chunk, imin(k.rows, (t + 1) * k.chunk), k.h, k.w,
                k.inner, k.sh, k.sw, k.ho, k.wo)


cdef inline void gather_rows(bint f32, char *dst, const char *src, Py_ssize_t row0,
                             Py_ssize_t row1, Py_ssize_t h, Py_ssize_t w,
                             Py_ssize_t inner, Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t ho, Py_ssize_t wo) noexcept nogil:
    if f32:
        pw_gather_f32(<float *>dst, <const float *>src, row0, row1, h, w, inner, sh, sw,
                      ho, wo)
    else:
        pw_gather_f64(<double *>dst, <const double *>src, row0, row1, h, w, inner, sh,
                      sw, ho, wo)


# ------------------------------------------------------------ weight packing

def pack_panels(object w, object bias, Py_ssize_t groups, bint transposed,
                object dst):
    """Pack a (C_out, C_in/groups) weight into the kernel's B panels.

    transposed=False: B[k=ci][j=co] per group, bias in the head (forward NHWC).
    transposed=True:  B[k=co][j=ci] per group, zero head (grad input NHWC).
    `dst` is a 64-byte aligned 1-D array of panel_stride * panels * groups."""
    if w.dtype == np.float32:
        _pack_panels[float](<float *>data(w), <float *>data(bias), <float *>data(dst),
                     w.shape[0], w.shape[1], groups, transposed)
    else:
        _pack_panels[double](<double *>data(w), <double *>data(bias), <double *>data(dst),
                     w.shape[0], w.shape[1], groups, transposed)


cdef void _pack_panels(real *w, real *bias, real *dst, Py_ssize_t cout,
                       Py_ssize_t kg, Py_ssize_t groups, bint transposed) noexcept nogil:
    cdef Py_ssize_t ng = cout // groups, g
    cdef size_t nr = tile_nr(w)
    cdef size_t kc = ng if transposed else kg
    cdef size_t ncols = kg if transposed else ng
    cdef size_t ps = pw_panel_stride(kc, nr)
    cdef size_t gs = cdiv(ncols, nr) * ps
    for g in range(groups):
        if transposed:
            pack(dst + g * gs, nr, ps, kc, ncols, w + g * ng * kg, kg, 1,
                 NULL, NULL, <real *>NULL, <real *>NULL, 0, 0)
        else:
            pack(dst + g * gs, nr, ps, kc, ncols, w + g * ng * kg, 1, kg,
                 NULL, NULL, bias + g * ng if bias != NULL else NULL,
                 <real *>NULL, 0, 0)


def packed_size(Py_ssize_t cout, Py_ssize_t kg, Py_ssize_t groups,
                bint transposed, Py_ssize_t itemsize):
    mr, nr = tile_shape(itemsize)
    ng = cout // groups
    kc, ncols = (ng, kg) if transposed else (kg, ng)
    return int(pw_panel_stride(kc, nr)) * ((ncols + nr - 1) // nr) * groups


# What a driver's work items read, for pw_pool_run: the job and its
# operands (untyped, f32 says which), `failed` shared by every item.
cdef struct Task:
    const void *job
    bint f32
    Py_ssize_t items            # the job's own; an NCHW run's tail follows them
    const void *a
    const void *b
    void *c
    const void *rowbias
    const void *r
    const void *m
    const void *packed
    const void *tail
    int *failed


# The drivers, one file each; the passes below run them.
include "nhwc_driver.pxi"
include "pixtile_driver.pxi"
include "nchw_driver.pxi"


# --------------------------------------------------------------- forward

def forward(object x, object wpacked, object weight, object bias,
            object residual, object out, bint nhwc, Py_ssize_t sh,
            Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t groups,
            bint clamp, double lo, double hi, Py_ssize_t nthreads):
    """out = act(conv(x) + bias + residual).  NHWC reads `wpacked` (panels
    with the bias in the head); NCHW reads `weight` (C_out, C_in/g) and
    `bias` directly."""
    cdef Geom g = make_geom(x, out, nhwc, sh, sw, pt, pl, groups)
    cdef void *px = data(x)
    cdef void *ppk = data(wpacked)
    cdef void *pw = data(weight)
    cdef void *pb = data(bias)
    cdef void *pr = data(residual)
    cdef void *po = data(out)
    cdef int failed
    # The caller's references keep every array alive while the GIL is out.
    if is_f32(x):
        with nogil:
            failed = _forward(&g, <float *>px, <float *>ppk, <float *>pw, <float *>pb,
                              <float *>pr, <float *>po, nhwc, clamp, lo, hi, nthreads)
    else:
        with nogil:
            failed = _forward(&g, <double *>px, <double *>ppk, <double *>pw,
                              <double *>pb, <double *>pr, <double *>po, nhwc, clamp,
                              lo, hi, nthreads)
    if failed:
        raise MemoryError("pwconv: out of memory for per-thread scratch")
    return out


cdef void pixel_job(NhwcJob *J, const Geom *g, bint grad_input) noexcept nogil:
    """The operand roles of an NHWC pixel-row GEMM: forward reads input
    pixels and writes output pixels (padding included); grad input the
    other way round, over the transposed weights."""
    memset(J, 0, sizeof(J[0]))
    J.g = g[0]
    J.a_at_input = not grad_input
    J.c_at_input = grad_input
    J.a_pix = g.cout if grad_input else g.cin
    J.c_pix = g.cin if grad_input else g.cout
    J.a_goff = g.ng if grad_input else g.kg
    J.c_goff = g.kg if grad_input else g.ng
    J.kc = g.ng if grad_input else g.kg
    J.ncg = g.kg if grad_input else g.ng
    J.border = not grad_input


cdef int _forward(const Geom *g, const real *x, const real *wpacked,
                  const real *weight, const real *bias, const real *residual,
                  real *out, bint nhwc, bint clamp, double lo, double hi,
                  Py_ssize_t nthreads) noexcept nogil:
    cdef NhwcJob J
    cdef NchwJob K
    cdef PixTileJob P
    if g.n * g.ho * g.wo == 0 or g.cout == 0:
        return 0
    if not nhwc and pixtile_forward(g, wpacked):
        pixtile_job(&P, g, False)
        P.prm.clamp = clamp
        P.prm.lo = lo
        P.prm.hi = hi
        return pixtile_run(&P, x, out, residual, <real *>NULL, wpacked, nthreads)
    if nhwc:
        pixel_job(&J, g, False)
        J.prm.clamp = clamp
        J.prm.lo = lo
        J.prm.hi = hi
        return nhwc_run(&J, x, out, residual, <real *>NULL, wpacked, nthreads)
    memset(&K, 0, sizeof(K))
    K.g = g[0]
    K.grad_input = False
    K.kc = g.kg
    K.rows_g = g.ng
    K.b_planes = g.cin
    K.b_plane = g.h * g.w
    K.c_planes = g.cout
    K.c_plane = g.ho * g.wo
    K.prm.clamp = clamp
    K.prm.lo = lo
    K.prm.hi = hi
    cdef Py_ssize_t tail = nchw_tail_pixels(g, wpacked, tile_nr(out))
    if tail == 0:
        return nchw_run(&K, weight, x, out, bias, residual, <real *>NULL, nthreads,
                        NULL, <real *>NULL)
    K.width = K.c_plane - tail
    pixtile_job(&P, g, False)
    P.first = K.width
    P.prm.clamp = clamp
    P.prm.lo = lo
    P.prm.hi = hi
    return nchw_run(&K, weight, x, out, bias, residual, <real *>NULL, nthreads, &P, wpacked)


# ------------------------------------------------------------ grad input

def grad_input(object grad_out, object wpacked_t, object weight_t,
               object output, object grad_in, bint nhwc, Py_ssize_t sh,
               Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t groups,
               bint masked, double lo, double hi, Py_ssize_t nthreads):
    """grad_in = conv^T(g(grad_out)) where g applies the activation's
    derivative read off `output`.  grad_in must arrive zeroed when the conv
    is strided or padded (pixels no output reads get no gradient)."""
    cdef Geom g = make_geom(grad_in, grad_out, nhwc, sh, sw, pt,
                            pl, groups)
    cdef void *pg = data(grad_out)
    cdef void *ppk = data(wpacked_t)
    cdef void *pwt = data(weight_t)
    cdef void *po = data(output)
    cdef void *pgi = data(grad_in)
    cdef int failed
    if is_f32(grad_out):
        with nogil:
            failed = _grad_input(&g, <float *>pg, <float *>ppk, <float *>pwt,
                                 <float *>po, <float *>pgi, nhwc, masked, lo, hi,
                                 nthreads)
    else:
        with nogil:
            failed = _grad_input(&g, <double *>pg, <double *>ppk, <double *>pwt,
                                 <double *>po, <double *>pgi, nhwc, masked, lo, hi,
                                 nthreads)
    if failed == 2:
        raise RuntimeError("pwconv internal error: NCHW grad input got NHWC panels "
                           "for a geometry that does not run on pixel tiles")
    if failed:
        raise MemoryError("pwconv: out of memory for per-thread scratch")
    return grad_in


cdef void grad_input_job(NhwcJob *J, const Geom *g, bint masked, double lo,
                         double hi) noexcept nogil:
    """NHWC grad input as a pixel-row GEMM: A = grad output (masked by the
    activation), B = the transposed weights' panels, C = grad input."""
    pixel_job(J, g, True)
    J.masked = masked
    J.mlo = lo
    J.mhi = hi


cdef int _grad_input(const Geom *g, const real *gout, const real *wpacked_t,
                     const real *weight_t, const real *output, real *gin,
                     bint nhwc, bint masked, double lo, double hi,
                     Py_ssize_t nthreads) noexcept nogil:
    cdef NhwcJob J
    cdef NchwJob K
    cdef PixTileJob P
    if g.n * g.ho * g.wo == 0 or g.cin == 0 or g.cout == 0:
        return 0
    if nhwc:
        grad_input_job(&J, g, masked, lo, hi)
        return nhwc_run(&J, gout, gin, <real *>NULL, output if masked else NULL,
                        wpacked_t, nthreads)
    if pixtile_path(g, wpacked_t):
        pixtile_job(&P, g, True)
        P.masked = masked
        P.mlo = lo
        P.mhi = hi
        return pixtile_run(&P, gout, gin, <real *>NULL, output if masked else NULL,
                         wpacked_t, nthreads)
    if weight_t == NULL:
        return 2
    memset(&K, 0, sizeof(K))
    K.g = g[0]
    K.grad_input = True
    K.kc = g.ng
    K.rows_g = g.kg
    K.b_planes = g.cout
    K.b_plane = g.ho * g.wo
    K.c_planes = g.cin
    K.c_plane = g.h * g.w
    K.masked = masked
    K.mlo = lo
    K.mhi = hi
    return nchw_run(&K, weight_t, gout, gin, <real *>NULL, <real *>NULL,
                    output if masked else NULL, nthreads, NULL, <real *>NULL)


include "grad_weight.pxi"


def transpose_weight(object w, Py_ssize_t groups, object dst):
    """dst = each group's (C_out/groups, kg) block of the C-contiguous weight
    w transposed: the NCHW grad-input A operand, (C_in, C_out/groups).
    Through pw_transpose's blocks: numpy's strided copy of the transposed
    view took 12.7 ms on a 2048 x 1024 float32 weight (ResNet-50's last
    shortcut), which an NCHW training loop pays again after every weight
    update."""
    if w.dtype not in (np.float32, np.float64) or dst.dtype != w.dtype:
        raise TypeError("w and dst must share a float32 or float64 dtype")
    if w.ndim != 2 or groups < 1 or w.shape[0] % groups:
        raise ValueError("w must be 2-D with rows a multiple of groups >= 1")
    if dst.size != w.size or not (w.flags.c_contiguous and dst.flags.c_contiguous):
        raise ValueError("w and dst must be C-contiguous, dst of w's size")
    cdef Py_ssize_t ng = w.shape[0] // groups, kg = w.shape[1]
    cdef void *pw = data(w)
    cdef void *pd = data(dst)
    if w.dtype == np.float32:
        with nogil:
            transpose_groups(<float *>pd, <const float *>pw, groups, ng, kg)
    else:
        with nogil:
            transpose_groups(<double *>pd, <const double *>pw, groups, ng, kg)
