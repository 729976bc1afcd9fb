# The compiled drivers.  Each pass is cut into independent work items (pixel
# tiles, channel blocks) that run on OpenMP threads with the GIL released;
# every item ends in calls to the one microkernel of pw_kernels.h.  Arguments
# were validated by the Python layer: arrays arrive C-contiguous, of one
# dtype, with consistent shapes, so nothing here raises on bad input.
cimport numpy as cnp
from cython.parallel cimport prange
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
# b1, +4% against XNNPACK in the same run).
cdef Py_ssize_t NHWC_SHARES = 16
# ...but every share walks all the weights, so weights larger than one L2
# block (streamed from L3, or memory when other work has evicted them) get
# one share per thread, and a lone thread takes all rows in one share.
# Measured on ResNet-50 b1, one thread, interleaved: 4-11% faster with the
# weights in L3, 15-16% with them evicted (7x7/14x14 layers 13-47%);
# MobileNetV2 and two threads unchanged.
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
# Flops each thread of a team must get (about 10 us of one core).
cdef double MIN_PARALLEL_FLOPS = 1e6
# NCHW B planes are read in place only for GEMMs at most this deep.  In an
# interleaved A/B over MobileNetV2's layers, packing made the 14x14 and 7x7
# projections (K = 384-960) 5-10% faster at batch 1 and 4, while the 112x112
# and 56x56 ones (K <= 192) stayed 5-20% faster in place.
cdef Py_ssize_t NCHW_DIRECT_MAX_DEPTH = 256


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


cdef inline void end_streamed_item(const pw_gemm_params *prm) noexcept nogil:
    # An OpenMP worker's streamed stores must be visible before the caller
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


cdef inline void *data(object arr):
    return cnp.PyArray_DATA(<cnp.ndarray>arr) if arr is not None else NULL


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
    double mlo, mhi
    pw_gemm_params prm


# A tensor this large comes from memory, not L3, and a deep row tile walks
# its rows k-wise, one line per row at a time, which the hardware
# prefetchers follow too late: each row tile asks for the next one's A rows
# first.  Measured (in-process A/B, 1 thread): forward 96->16 on 4x112x112
# (19 MB of input) 24% faster, 144->24 on 4x56x56 (7.2 MB) 10%, a training
# step of 16->96 on 4x112x112 (grad output as grad input's A) 5-7%; but
# 2-8% slower where A fits in L3 (4.8 MB and less) or rows are short (32).
cdef size_t PREFETCH_A_MIN_BYTES = 6 * 1024 * 1024
cdef Py_ssize_t PREFETCH_A_MIN_DEPTH = 64


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
                    mr_ = imin(J.mr, rows - m)
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
                        pw_prefetch_rows(A + a_off + (m + mr_) * a_rs + g * J.a_goff + k0,
                                         imin(J.mr, rows - m - mr_), kb * sizeof(real),
                                         a_rs * sizeof(real))
                    if k0 == 0:
                        r = R + (c - C) if R != NULL else NULL
                        if J.prefetch_r and m + mr_ < rows:
                            pw_prefetch_rows(r + mr_ * c_rs, imin(J.mr, rows - m - mr_),
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


cdef void nhwc_item(const NhwcJob *J, Py_ssize_t item, const real *A, real *C,
                    const real *R, const real *M, const real *packed,
                    int *failed) noexcept nogil:
    cdef const Geom *g = &J.g
    cdef Py_ssize_t s = item % J.nsplit, it = item // J.nsplit
    cdef Py_ssize_t u0 = s * J.units // J.nsplit, u1 = (s + 1) * J.units // J.nsplit
    cdef Py_ssize_t row0, rows, n, oh, ih, op, ip, lo_, hi_, a_rs, c_rs, ntiles
    cdef real *scratch = NULL
    if J.masked:
        scratch = <real *>pw_scratch(J.mr * J.kc * sizeof(real) + 64)
        if scratch == NULL:
            failed[0] = 1
            return
    if g.simple:
        # Item `it` takes an equal share of the row tiles (within one tile).
        ntiles = cdiv(g.n * g.h * g.w, J.mr)
        row0 = (it * ntiles // J.nmchunks) * J.mr
        rows = imin(((it + 1) * ntiles // J.nmchunks) * J.mr, g.n * g.h * g.w) - row0
        nhwc_rows(J, A, C, R, M, packed, row0 * J.a_pix, row0 * J.c_pix,
                  J.a_pix, J.c_pix, rows, u0, u1, True, scratch)
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


cdef int nhwc_run(NhwcJob *J, const real *A, real *C, const real *R,
                  const real *M, const real *packed, Py_ssize_t nthreads) noexcept nogil:
    cdef const Geom *g = &J.g
    cdef Py_ssize_t mtot = g.n * g.ho * g.wo, items, rowitems, item, per_thread
    cdef double flops = 2.0 * mtot * J.kc * J.ncg * g.groups
    cdef int failed = 0, team
    nhwc_tiling(J, C)
    # A residual too large to stay in L2 between calls is read from L3 or
    # memory, and the kernel only needs it in its epilogue, too late for the
    # hardware prefetchers to have it there on short-K layers: each row tile
    # asks for the next one's residual rows first (on a cold 112x112x96
    # residual, about half of its extra cost).
    J.prefetch_r = R != NULL and mtot * J.ncg * g.groups * sizeof(real) > 2 * L2_BLOCK_BYTES
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
        rowitems = J.nmchunks
    else:
        rowitems = g.n * g.ho
    items = rowitems * J.nsplit
    team = plan_threads(nthreads, flops, items)
    # A residual in its own buffer leaves C write-only too (in place, the
    # call reads C).  relu6 + residual, 1 thread, in-process A/B: 16->96 at
    # 4x112x112 (18 MB out) 5% faster, at 8x112x112 12%; with a pass over
    # the output after it, 2% and 8%.
    J.prm.stream = (R != C and J.kc <= J.kblock and
                    mtot * J.c_pix * sizeof(real) >= STREAM_MIN_BYTES)
    if team == 1:
        for item in range(items):
            nhwc_item(J, item, A, C, R, M, packed, &failed)
            end_streamed_item(&J.prm)
    else:
        for item in prange(items, schedule='dynamic', num_threads=team):
            nhwc_item(J, item, A, C, R, M, packed, &failed)
            end_streamed_item(&J.prm)
    return failed


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
    Py_ssize_t strip, nstrips     # pixels per strip, strips per image
    Py_ssize_t rsplit             # pieces the C rows are cut into
    Py_ssize_t kblock             # depth per pass over the row tiles
    bint b_in_l1                  # B's rows, read in place, stay in L1
    bint prefetch_r               # ask for the next row tile's R a tile early
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
    cdef Py_ssize_t p0 = s * J.strip, width = imin(J.strip, g.ho * g.wo - p0)
    cdef Py_ssize_t rtot = J.rows_g * g.groups
    # Row pieces start on whole tiles, so only the last piece has a short one.
    cdef Py_ssize_t r0 = (rs * rtot // J.rsplit) // J.mr * J.mr
    cdef Py_ssize_t r1 = rtot if rs + 1 == J.rsplit else ((rs + 1) * rtot // J.rsplit) // J.mr * J.mr
    cdef Py_ssize_t grp, row, rend, mr_, j, jw, i, off, full, tail
    cdef Py_ssize_t *joff = NULL
    cdef bint scatter = J.grad_input and not g.simple
    # B is contiguous along the strip's pixels unless it gathers through
    # stride/padding or needs the activation mask: then whole panels are read
    # in place (no copy) and only the ragged tail is packed.
    cdef bint direct = not J.masked and (J.grad_input or g.simple) and rtot <= 96 and J.b_in_l1
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
    full = (width // <Py_ssize_t>J.nr) * <Py_ssize_t>J.nr if direct else 0
    tail = width - full
    panels_bytes = cdiv(tail, J.nr) * J.ps * sizeof(real)
    buf = <char *>pw_scratch(panels_bytes + width * sizeof(Py_ssize_t)
                             + J.mr * width * sizeof(real) + 128)
    if buf == NULL:
        failed[0] = 1
        return
    bp = <real *>buf
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
    # No software prefetch of the next strip's B rows: it once made the
    # b4 forward pass 4-11% faster, but with today's strips and kernels
    # dropping it was 2-6% faster on MobileNetV2 shapes at batch 1 to 16
    # (in-process A/B, forward and grad input, 1 thread; strided layers
    # within 2%).
    row = r0
    while row < r1:
        grp = row // J.rows_g
        rend = imin(r1, (grp + 1) * J.rows_g)
        # Pack this group's ragged tail of B once for all its rows here.
        if J.grad_input or g.simple:
            src = B + (n * J.b_planes + grp * J.kc) * J.b_plane + p0
            msk = M + (src - B) if J.masked else NULL
            if tail:
                pack(bp, J.nr, J.ps, J.kc, tail, src + full, J.b_plane, 1, NULL,
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
                mr_ = imin(J.mr, rend - row)
                if scatter:
                    cbase = tile
                    c_rs = width
                else:
                    cbase = C + (n * J.c_planes + row) * J.c_plane + p0
                    c_rs = J.c_plane
                prm.c_rs = dprm.c_rs = lprm.c_rs = c_rs
                prm.r_rs = dprm.r_rs = lprm.r_rs = c_rs
                if full and J.prefetch_r and k0 == 0 and not scatter:
                    # As in the NHWC driver: a residual from memory is only
                    # read by the epilogue, too late for the prefetchers on
                    # short depths.  The row tile goes in pieces, each
                    # asking for the next piece's residual lines first.
                    j = 0
                    while j < full:
                        jw = imin(PREFETCH_R_COLS, full - j)
                        pw_prefetch_rows(R + (cbase - C) + j + jw, mr_,
                                         imin(PREFETCH_R_COLS, width - j - jw) * sizeof(real),
                                         c_rs * sizeof(real))
                        gemm(mr_, jw, A + row * J.kc, src + j, cbase + j,
                             rowbias + row if rowbias != NULL else NULL,
                             R + (cbase - C) + j, &dprm)
                        j += jw
                elif full:
                    gemm(mr_, full, A + row * J.kc + k0, src + k0 * J.b_plane, cbase,
                         rowbias + row if rowbias != NULL and k0 == 0 else NULL,
                         (R + (cbase - C) if R != NULL and not scatter else NULL)
                         if k0 == 0 else cbase, &dprm)
                if tail:
                    c = cbase + full
                    if k0 == 0:
                        gemm(mr_, tail, A + row * J.kc, bp, c,
                             rowbias + row if rowbias != NULL else NULL,
                             R + (c - C) if R != NULL and not scatter else NULL, &prm)
                    else:
                        gemm(mr_, tail, A + row * J.kc + k0,
                             bp + (1 + k0) * <Py_ssize_t>J.nr, c, NULL, c, &lprm)
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


cdef inline Py_ssize_t gcd(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


# Columns per piece of a row tile whose residual is prefetched a piece
# ahead: 6 rows of 128 floats are 48 lines, within the fill buffers' reach.
cdef Py_ssize_t PREFETCH_R_COLS = 128


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


cdef int nchw_run(NchwJob *J, const real *A, const real *B, real *C,
                  const real *rowbias, const real *R, const real *M,
                  Py_ssize_t nthreads) noexcept nogil:
    cdef const Geom *g = &J.g
    cdef Py_ssize_t plane = g.ho * g.wo, items, item, rtot = J.rows_g * g.groups
    cdef double flops = 2.0 * g.n * plane * J.kc * rtot
    cdef int failed = 0, team
    J.mr = tile_mr(C)
    J.nr = tile_nr(C)
    J.ps = pw_panel_stride(J.kc, J.nr)
    J.kblock = KBLOCK_BYTES // sizeof(real)
    J.prefetch_r = R != NULL and g.n * plane * rtot * sizeof(real) > 2 * L2_BLOCK_BYTES
    # In place only up to NCHW_DIRECT_MAX_DEPTH rows: deeper strips are
    # narrow (a few panels wide), so in place they are that many short row
    # pieces per strip, while packed panels stream.
    J.b_in_l1 = (l1_holds_rows(J.b_plane * sizeof(real), imin(J.kc, J.kblock))
                 and imin(J.kc, J.kblock) <= NCHW_DIRECT_MAX_DEPTH)
    # As many panels per strip as keep one depth block of them in half the
    # L2 budget: the kernel walks all of them for each row tile of weights,
    # so the weights are read once per strip and the strip stays in L2.
    # Weights larger than the L2 budget come from L3 (or memory) for every
    # strip, so they get strips four times as wide, which then live in L3
    # (ResNet-50 b1, one thread, interleaved: 8% faster with the weights
    # evicted between calls, 2% with them in L3; the 28x28-7x7 layers
    # 8-21%; MobileNetV2, whose weights are small, unchanged).
    cdef Py_ssize_t npan = cdiv(plane, J.nr)
    cdef size_t strip_budget = L2_BLOCK_BYTES // 2
    if rtot * J.kc * sizeof(real) > L2_BLOCK_BYTES:
        strip_budget = 2 * L2_BLOCK_BYTES
    cdef Py_ssize_t strip_max = imax(1, strip_budget //
                                     (imin(J.kc, J.kblock) * J.nr * sizeof(real) + 1))
    J.nstrips = cdiv(npan, strip_max)
    J.rsplit = 1
    if nthreads > 1:
        if g.n * npan >= 4 * nthreads:
            # Enough pixels: at least four strips per thread, handed out
            # dynamically like the NHWC driver's row shares.
            J.nstrips = imax(J.nstrips, imin(npan, cdiv(4 * nthreads, g.n)))
        else:
            # Small maps: cut the rows (channels) into two pieces per thread.
            J.rsplit = imax(1, imin(2 * nthreads, rtot // (2 * <Py_ssize_t>J.mr)))
    # Equal strips of whole panels; only the last one is ragged.
    J.strip = J.nr * cdiv(npan, J.nstrips)
    J.nstrips = cdiv(plane, J.strip)
    items = g.n * J.nstrips * J.rsplit
    team = plan_threads(nthreads, flops, items)
    # No streamed stores here: on 16->96 at 8x112x112 they made the forward
    # pass 34% slower (in-process A/B), each tile's rows being lines in six
    # channel planes far apart rather than one run of memory.
    if team == 1:
        for item in range(items):
            nchw_item(J, item, A, B, C, rowbias, R, M, &failed)
    else:
        for item in prange(items, schedule='dynamic', num_threads=team):
            nchw_item(J, item, A, B, C, rowbias, R, M, &failed)
    return failed


# ----------------------------------------------- NCHW pixel-tile driver
#
# Small NCHW planes make short GEMM rows for the plane driver: a 7x7 plane is
# 49 columns, three panels of 16 and a ragged fourth, so a quarter of its
# arithmetic lands on padding, and deep GEMMs pack B on every call.  Here a
# block of pixels takes the NHWC roles instead: its values are regrouped
# into A tiles (each channel's MR pixels side by side; grad output masked by
# the activation on the way), run against NHWC panels (forward: weights,
# bias in the head; grad input: transposed weights), and the C block is
# transposed into the output planes.  Only per-block copies, never a
# whole-tensor transpose.  Used for groups == 1, stride 1, no padding, small
# planes (nchw_pixel_tiles), where the caller passes the panels.

cdef Py_ssize_t PIXEL_MAX_PLANE = 64
# A block's regrouped pixels and its C rows stay in L2 while the panel
# blocks stream past (C is then transposed out of L2, not memory).
cdef size_t PIXEL_BLOCK_BYTES = 160 * 1024


cdef inline bint pixtile_shape(Py_ssize_t groups, Py_ssize_t plane) noexcept nogil:
    return groups == 1 and plane <= PIXEL_MAX_PLANE


def fuse_grad_input(bint nhwc, Py_ssize_t groups, Py_ssize_t plane, Py_ssize_t ng):
    """Whether an unstrided, unpadded backward pass computes grad input
    inside the grad-weight sweep (grad_weight_bias's grad_in): always in
    NHWC; in NCHW off pixel tiles and up to NCHW_DIRECT_MAX_DEPTH output
    channels per group, where its B (grad output rows in place) reads well.
    In-process A/B, MobileNetV2 b4, 1 thread: NCHW backward 3-19% faster
    on 16->96 to 96->24 at 112x112 and 56x56, 22% with relu6 on 16->96;
    5-10% slower on 64->384 and 96->576 at 14x14 without a mask."""
    return nhwc or (not pixtile_shape(groups, plane) and ng <= NCHW_DIRECT_MAX_DEPTH)


def nchw_pixel_tiles(Py_ssize_t groups, Py_ssize_t plane):
    """Whether an unstrided, unpadded NCHW pass with these groups and
    plane size runs on pixel tiles (and so wants NHWC panels)."""
    return pixtile_shape(groups, plane)


cdef struct PixTileJob:
    Py_ssize_t n, plane
    Py_ssize_t kc, ncol           # depth (A's planes), columns (C's planes)
    bint masked                   # A zeroed where M is outside (mlo, mhi)
    double mlo, mhi
    size_t mr, nr, ps
    Py_ssize_t ppg, pblock        # panels, panels per L2 block
    Py_ssize_t block, nblocks     # pixels per block, blocks per image
    Py_ssize_t nsplit             # pieces the panels are cut into
    pw_gemm_params prm


cdef void pixtile_item(const PixTileJob *J, Py_ssize_t item, const real *A, real *C,
                       const real *R, const real *M, const real *packed,
                       int *failed) noexcept nogil:
    cdef Py_ssize_t plane = J.plane
    cdef Py_ssize_t s = item % J.nsplit, it = item // J.nsplit
    cdef Py_ssize_t n = it // J.nblocks, p0 = (it % J.nblocks) * J.block
    cdef Py_ssize_t rows = imin(J.block, plane - p0)
    cdef Py_ssize_t u0 = s * J.ppg // J.nsplit, u1 = (s + 1) * J.ppg // J.nsplit
    cdef Py_ssize_t col0 = u0 * <Py_ssize_t>J.nr
    cdef Py_ssize_t cols = imin(J.ncol, u1 * <Py_ssize_t>J.nr) - col0
    cdef Py_ssize_t cw = (u1 - u0) * <Py_ssize_t>J.nr   # C block row stride
    cdef Py_ssize_t ntiles = cdiv(rows, J.mr), t, pb, pe, ncols
    cdef Py_ssize_t a_off = n * J.kc * plane + p0
    cdef size_t a_bytes = ntiles * J.mr * J.kc * sizeof(real)
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
    dst = C + (n * J.ncol + col0) * plane + p0
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
                 at + t * J.kc * <Py_ssize_t>J.mr, packed + pb * J.ps, c, NULL,
                 NULL, &prm)
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
    return panels != NULL and g.simple and pixtile_shape(g.groups, g.h * g.w)


cdef int pixtile_run(PixTileJob *J, const real *A, real *C, const real *R,
                     const real *M, const real *packed, Py_ssize_t nthreads) noexcept nogil:
    cdef Py_ssize_t plane = J.plane, mtot = J.n * plane, items, item, ntiles
    cdef double flops = 2.0 * mtot * J.kc * J.ncol
    cdef int failed = 0, team
    J.mr = tile_mr(C)
    J.nr = tile_nr(C)
    J.ps = pw_panel_stride(J.kc, J.nr)
    J.ppg = cdiv(J.ncol, J.nr)
    J.pblock = imax(1, L2_BLOCK_BYTES // (J.kc * J.nr * sizeof(real) + 1))
    J.prm.kc = J.kc
    J.prm.panel_stride = J.ps
    J.prm.a_rs = 1
    J.prm.a_ks = J.mr
    J.prm.b_ks = 0
    # As the NHWC driver: few pixels per thread split the panels instead.
    J.nsplit = 1
    if nthreads > 1 and mtot < 8 * <Py_ssize_t>J.mr * nthreads:
        J.nsplit = imin(J.ppg, nthreads)
    ntiles = cdiv(plane, J.mr)
    # Every block streams all the weights: past an L2 block of them, one
    # block per image (per thread), as the NHWC driver does with its shares.
    if J.kc * J.ncol * sizeof(real) > L2_BLOCK_BYTES:
        J.nblocks = 1
    else:
        J.nblocks = cdiv(plane, imax(<Py_ssize_t>J.mr,
                                     PIXEL_BLOCK_BYTES // ((J.kc + J.ncol) * sizeof(real))))
    if nthreads > 1 and J.nsplit == 1:
        J.nblocks = imax(J.nblocks, cdiv(2 * nthreads, J.n))
    J.nblocks = imin(J.nblocks, ntiles)
    J.block = J.mr * cdiv(ntiles, J.nblocks)
    J.nblocks = cdiv(plane, J.block)
    items = J.n * J.nblocks * J.nsplit
    team = plan_threads(nthreads, flops, items)
    if team == 1:
        for item in range(items):
            pixtile_item(J, item, A, C, R, M, packed, &failed)
    else:
        for item in prange(items, schedule='dynamic', num_threads=team):
            pixtile_item(J, item, A, C, R, M, packed, &failed)
    return failed


cdef void pixtile_job(PixTileJob *P, const Geom *g, bint grad_input) noexcept nogil:
    """Forward reads C_in planes of x into C_out planes; grad input C_out
    planes of grad output into C_in planes."""
    memset(P, 0, sizeof(P[0]))
    P.n = g.n
    P.plane = g.h * g.w
    P.kc = g.cout if grad_input else g.cin
    P.ncol = g.cin if grad_input else g.cout


# --------------------------------------------------------------- forward

def forward(object x, object wpacked, object weight, object bias,
            object residual, object out, bint nhwc, Py_ssize_t sh,
            Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t groups,
            bint clamp, double lo, double hi, Py_ssize_t nthreads):
    """out = act(conv(x) + bias + residual).  NHWC reads `wpacked` (panels
    with the bias in the head); NCHW reads `weight` (C_out, C_in/g) and
    `bias` directly."""
    cdef Geom g = make_geom(x, out, nhwc, sh, sw, pt, pl, groups)
    if is_f32(x):
        failed = _forward(&g, <float *>data(x), <float *>data(wpacked),
                          <float *>data(weight), <float *>data(bias),
                          <float *>data(residual), <float *>data(out), nhwc,
                          clamp, lo, hi, nthreads)
    else:
        failed = _forward(&g, <double *>data(x), <double *>data(wpacked),
                          <double *>data(weight), <double *>data(bias),
                          <double *>data(residual), <double *>data(out), nhwc,
                          clamp, lo, hi, nthreads)
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
    if not nhwc and pixtile_path(g, wpacked):
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
    return nchw_run(&K, weight, x, out, bias, residual, <real *>NULL, nthreads)


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
    if is_f32(grad_out):
        failed = _grad_input(&g, <float *>data(grad_out), <float *>data(wpacked_t),
                             <float *>data(weight_t), <float *>data(output),
                             <float *>data(grad_in), nhwc, masked, lo, hi, nthreads)
    else:
        failed = _grad_input(&g, <double *>data(grad_out), <double *>data(wpacked_t),
                             <double *>data(weight_t), <double *>data(output),
                             <double *>data(grad_in), nhwc, masked, lo, hi, nthreads)
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
                    output if masked else NULL, nthreads)


# ------------------------------------------------------- grad weight, bias
#
# dW[co, ci] = sum over output pixels q of g(dY)[q, co] * X[in(q), ci]: a
# GEMM with rows co, columns ci and the pixels as its depth.  Pixels are cut
# into chunks; thread t owns a fixed, contiguous run of chunks and its own
# partial dW, and the partials are summed in thread order afterwards, so the
# result depends on the thread count but never on scheduling.

cdef struct DwJob:
    Geom g
    bint nhwc, masked, want_w, want_b
    bint tmode        # NCHW with fewer output than input channels: compute
                      # dW^T = X . g(dY)^T, transposing the smaller operand
    double mlo, mhi
    size_t mr, nr, ps
    Py_ssize_t chunk, nchunks_img, nchunks, team, pblock, ppg
    bint direct_b     # NHWC input read in place as B (see DW_PACK_MIN_ROWS)
    bint fuse_gx      # pixels in place: each chunk's grad input is computed
    NhwcJob gx        # here too, while its grad output is hot (gx: NHWC's
                      # driver job; NCHW uses dw_nchw_grad_input)


cdef inline void pack_a(real *dst, size_t mr, const real *src, Py_ssize_t src_ps,
                        size_t kq, size_t nch, const real *mask, double lo,
                        double hi, double *col_sums) noexcept nogil:
    if real is float:
        pw_pack_a_f32(dst, mr, src, src_ps, kq, nch, mask, lo, hi, col_sums)
    else:
        pw_pack_a_f64(dst, mr, src, src_ps, kq, nch, mask, lo, hi, col_sums)


cdef void dw_swapped_chunk(const DwJob *J, const real *src, const real *a,
                           Py_ssize_t kq, Py_ssize_t grp, real *part, real *bp,
                           bint first, const pw_gemm_params *prm) noexcept nogil:
    """One chunk of NHWC grad weight with the operands swapped: dW^T's rows
    are input channels (A: the input's short rows read in place, a k step
    one pixel on), its columns output channels (B: grad output's rows read
    in place as whole panels, kq rows of one chunk, L1-sized; a ragged last
    panel is packed into bp).  Packing every panel instead cost 6-12% of a
    backward pass on 16->96, 24->144 and 32->192 at batch 4 (in-process
    A/B, 1 thread): the packed copy was read by only ceil(C_in/MR) row
    tiles."""
    cdef const Geom *g = &J.g
    cdef Py_ssize_t nr = J.nr, full = (g.ng // nr) * nr, co = 0
    cdef real *c
    cdef pw_gemm_params dprm = prm[0]
    dprm.panel_stride = nr
    dprm.b_ks = g.cout
    if g.ng > full:
        pack(bp, nr, J.ps, kq, g.ng - full, src + full, g.cout, 1, NULL, NULL,
             <real *>NULL, <real *>NULL, 0, 0)
    while co < g.kg:
        c = part + (grp * g.kg + co) * g.ng
        if full:
            gemm(imin(J.mr, g.kg - co), full, a + co, src, c, NULL,
                 NULL if first else c, &dprm)
        if g.ng > full:
            gemm(imin(J.mr, g.kg - co), g.ng - full, a + co, bp, c + full, NULL,
                 NULL if first else c + full, prm)
        co += J.mr


cdef void dw_nchw_grad_input(const DwJob *J, const real *src, Py_ssize_t src_rs,
                             Py_ssize_t kq, real *gin, const real *weight_t,
                             real *tail_panel) noexcept nogil:
    """NCHW grad input for one chunk of kq pixels of one image, inside the
    grad-weight sweep: dX[ci, q] = sum over co of W^T[ci, co] g(dY)[co, q].
    src holds the chunk's grad output rows, all C_out channels src_rs apart,
    already masked; gin points at the chunk's first pixel in input channel
    0.  A = weight_t's rows (C_in x C_out/groups, as the plane driver takes
    them), B = the grad output rows in place as whole panels of NR pixels;
    a ragged last panel is packed into tail_panel."""
    cdef const Geom *g = &J.g
    cdef Py_ssize_t nr = J.nr, full = kq // nr * nr, grp, row, r1, mr_
    cdef const real *b
    cdef real *c
    cdef pw_gemm_params prm, dprm
    memset(&prm, 0, sizeof(prm))
    prm.kc = g.ng
    prm.a_rs = g.ng
    prm.a_ks = 1
    prm.c_rs = g.h * g.w
    prm.panel_stride = pw_panel_stride(g.ng, nr)
    dprm = prm
    dprm.panel_stride = nr
    dprm.b_ks = src_rs
    for grp in range(g.groups):
        b = src + grp * g.ng * src_rs
        if kq > full:
            pack(tail_panel, nr, prm.panel_stride, g.ng, kq - full, b + full, src_rs, 1,
                 NULL, NULL, <real *>NULL, <real *>NULL, 0, 0)
        row = grp * g.kg
        r1 = row + g.kg
        while row < r1:
            mr_ = imin(J.mr, r1 - row)
            c = gin + row * prm.c_rs
            if full:
                gemm(mr_, full, weight_t + row * g.ng, b, c, NULL, NULL, &dprm)
            if kq > full:
                gemm(mr_, kq - full, weight_t + row * g.ng, tail_panel, c + full, NULL,
                     NULL, &prm)
            row += mr_


cdef void dw_thread(const DwJob *J, Py_ssize_t t, const real *gout,
                    const real *x, const real *output, real *partials,
                    double *bsums, real *gin, const real *wpacked_t,
                    int *failed) noexcept nogil:
    cdef const Geom *g = &J.g
    cdef Py_ssize_t c0 = t * J.nchunks // J.team, c1 = (t + 1) * J.nchunks // J.team
    cdef Py_ssize_t plane = g.ho * g.wo, ci, n, q0, kq, grp, q, co, pb, pe, ncols
    cdef Py_ssize_t full, tail
    cdef Py_ssize_t kca = J.chunk + 8   # masked A row stride, off 4 KB aliasing
    cdef real *part = partials + t * g.cout * g.kg
    cdef double *bs = bsums + t * g.cout
    # With a mask (NHWC, or NCHW with grad input fused): each chunk of grad
    # output is masked once into its own buffer (at most MASK_ONCE_BYTES),
    # which grad input and grad weight then both read as plain rows, as they
    # read grad output without a mask.
    cdef bint mask_once = J.masked and (J.nhwc or J.fuse_gx)
    # `at`, grad output as A: NHWC regroups long rows into it, NCHW masks
    # row tiles into it where there is no mask-once buffer.
    cdef size_t a_bytes = 0
    if not J.tmode and J.nhwc:
        a_bytes = J.chunk * J.mr * cdiv(g.ng, J.mr) * sizeof(real)
    elif not J.tmode and J.masked and not mask_once:
        a_bytes = g.ng * kca * sizeof(real)
    cdef size_t b_bytes = J.ppg * J.ps * sizeof(real)
    cdef size_t k_bytes = J.chunk * sizeof(Py_ssize_t)
    cdef size_t m_bytes = (J.chunk if J.nhwc else kca) * g.cout * sizeof(real) if mask_once else 0
    # NCHW grad input's ragged last panel (dw_nchw_grad_input).
    cdef size_t gxt_bytes = (pw_panel_stride(g.ng, J.nr) * sizeof(real)
                             if J.fuse_gx and not J.nhwc else 0)
    cdef real *gx_tail
    cdef const real *gsrc
    cdef real *mbuf
    cdef char *buf = <char *>pw_scratch(a_bytes + b_bytes + k_bytes + m_bytes + gxt_bytes
                                        + 256)
    cdef real *at
    cdef real *bp
    cdef const real *a
    cdef const real *a_tile
    cdef const real *bsrc = NULL
    cdef Py_ssize_t *koff
    cdef const real *src
    cdef real *c
    cdef bint first = True
    cdef bint direct = J.direct_b
    cdef const char *x_next = NULL
    cdef Py_ssize_t x_next_bytes = 0, q_next, lo_b, hi_b
    cdef Py_ssize_t ntile_g = cdiv(g.ng, J.mr)     # row tiles sharing x_next
    cdef pw_gemm_params prm, dprm
    if buf == NULL:
        failed[0] = 1
        return
    bp = <real *>buf
    at = <real *>(buf + b_bytes + 64)
    koff = <Py_ssize_t *>(buf + b_bytes + a_bytes + 64)
    mbuf = <real *>(buf + b_bytes + a_bytes + k_bytes + 128)
    gx_tail = <real *>(buf + b_bytes + a_bytes + k_bytes + m_bytes + 192)
    memset(&prm, 0, sizeof(prm))
    prm.c_rs = g.kg
    prm.r_rs = g.kg
    prm.panel_stride = J.ps
    full = (g.kg // <Py_ssize_t>J.nr) * <Py_ssize_t>J.nr if direct else 0
    tail = g.kg - full
    if J.tmode:
        prm.c_rs = g.ng
        prm.r_rs = g.ng
        prm.a_rs = 1 if J.nhwc else plane
        prm.a_ks = g.cin if J.nhwc else 1
    # NCHW grad input reads grad output's rows as panels, one line from each
    # of C_out rows a plane apart: from memory, more streams than the
    # prefetchers follow.  Unmasked and unswapped, grad weight reads them
    # first instead (six whole rows a row tile, which the prefetchers
    # follow), and grad input then finds them in L2.  In-process A/B,
    # backward, 1 thread: 16->96 at 4x112x112 14% faster, 24->144 at
    # 4x56x56 2-3%, at 16x56x56 10%, 32->192 at 28x28 within 1%; with the
    # operands swapped (fewer outputs than inputs, grad output packed)
    # 2-3% slower, so those keep grad input first.
    cdef bint gx_last = J.fuse_gx and not J.nhwc and not mask_once and not J.tmode
    for ci in range(c0, c1):
        n = ci // J.nchunks_img
        q0 = (ci % J.nchunks_img) * J.chunk
        kq = imin(J.chunk, plane - q0)
        # NHWC input read in place as B comes from memory at the pace of
        # the chunk's first row tile; instead, every row tile asks for its
        # share of this thread's next chunk (contiguous rows) while its
        # GEMM runs (pw_gemm_params.ahead).  In-process A/B, 1 thread,
        # backward: 144->24 at 4x56x56 20-27% faster, 96->24 1-13%, 32->16
        # at 4x112x112 4-9%, 192->32 at 16x28x28 16-18%; input in L3
        # (28x28 at batch 4, 56x56 at batch 1) within 3%.
        x_next = NULL
        if J.nhwc and direct and not J.tmode and ci + 1 < c1:
            q_next = ((ci + 1) % J.nchunks_img) * J.chunk
            x_next = <const char *>(x + (((ci + 1) // J.nchunks_img) * plane + q_next) * g.cin)
            x_next_bytes = imin(J.chunk, plane - q_next) * g.cin * sizeof(real)
        if not J.nhwc:
            if J.fuse_gx and not gx_last:
                # This chunk's grad output rows (all channels), masked once
                # into mbuf (the bias sums ride along) or read in place; grad
                # input first, so grad weight then finds them in L2.
                gsrc = gout + n * g.cout * plane + q0
                if mask_once:
                    mask_rows(mbuf, kca, gsrc, plane, g.cout, kq, output + (gsrc - gout),
                              J.mlo, J.mhi, NULL, bs if J.want_b else NULL)
                    gsrc = mbuf
                dw_nchw_grad_input(J, gsrc, kca if mask_once else plane, kq,
                                   gin + n * g.cin * plane + q0, wpacked_t, gx_tail)
        else:
            gsrc = gout + (n * plane + q0) * g.cout
            if mask_once:
                # The bias sums ride along (all groups' channels at once).
                mask_rows(mbuf, g.cout, gsrc, g.cout, kq, g.cout, output + (gsrc - gout),
                          J.mlo, J.mhi, bs if J.want_b else NULL, NULL)
                gsrc = mbuf
            if J.fuse_gx:
                nhwc_rows(&J.gx, gsrc, gin, <real *>NULL, <real *>NULL, wpacked_t, 0,
                          (n * plane + q0) * g.cin, g.cout, g.cin, kq, 0, J.gx.units,
                          True, <real *>NULL)
        if J.tmode and J.nhwc:
            prm.kc = kq
            for grp in range(g.groups):
                src = gsrc + grp * g.ng
                if J.want_b and not mask_once:
                    mask_rows(<real *>NULL, 0, src, g.cout, kq, g.ng, <real *>NULL,
                              0, 0, bs + grp * g.ng, NULL)
                if J.want_w:
                    dw_swapped_chunk(J, src, x + (n * plane + q0) * g.cin + grp * g.kg,
                                     kq, grp, part, bp, first, &prm)
            first = False
            continue
        if J.tmode:
            prm.kc = kq
            for grp in range(g.groups):
                src = gout + (n * g.cout + grp * g.ng) * plane + q0
                if mask_once:
                    if J.want_w:
                        pack(bp, J.nr, J.ps, kq, g.ng, mbuf + grp * g.ng * kca, 1, kca,
                             NULL, NULL, <real *>NULL, <real *>NULL, 0, 0)
                else:
                    if J.want_b:
                        mask_rows(<real *>NULL, 0, src, plane, g.ng, kq,
                                  output + (src - gout) if J.masked else NULL,
                                  J.mlo, J.mhi, NULL, bs + grp * g.ng)
                    if J.want_w:
                        pack(bp, J.nr, J.ps, kq, g.ng, src, 1, plane, NULL, NULL,
                             <real *>NULL, output + (src - gout) if J.masked else NULL,
                             J.mlo, J.mhi)
                if not J.want_w:
                    continue
                a = x + (n * g.cin + grp * g.kg) * plane + q0
                pb = 0
                while pb < J.ppg:
                    pe = imin(J.ppg, pb + J.pblock)
                    ncols = imin(g.ng, pe * <Py_ssize_t>J.nr) - pb * <Py_ssize_t>J.nr
                    co = 0      # here: rows are input channels
                    while co < g.kg:
                        c = part + (grp * g.kg + co) * g.ng + pb * <Py_ssize_t>J.nr
                        gemm(imin(J.mr, g.kg - co), ncols, a + co * plane,
                             bp + pb * J.ps, c, NULL, NULL if first else c, &prm)
                        co += J.mr
                    pb = pe
            first = False
            continue
        if not g.simple:
            for q in range(kq):
                koff[q] = input_offset(g, q0 + q)
                if J.nhwc and koff[q] >= 0:
                    koff[q] *= g.cin
        prm.kc = kq
        for grp in range(g.groups):
            # A: grad output for these pixels, rows = output channels, read
            # in place unless the activation's mask must be applied first;
            # the bias gradient is summed on the same pass.
            if J.nhwc:
                # Pixels are the rows of grad output here: regroup each tile
                # of MR channels so a k step reads MR adjacent values.
                src = gsrc + grp * g.ng     # masked already, where there is a mask
                prm.a_rs = 1
                if g.cout * sizeof(real) <= 128:
                    # Short rows: in place, as in the swapped case above.
                    if J.want_b and not mask_once:
                        mask_rows(<real *>NULL, 0, src, g.cout, kq, g.ng,
                                  <real *>NULL, 0, 0, bs + grp * g.ng, NULL)
                    a = src
                    prm.a_ks = g.cout
                else:
                    pack_a(at, J.mr, src, g.cout, kq, g.ng, <real *>NULL, 0, 0,
                           bs + grp * g.ng if J.want_b and not mask_once else NULL)
                    a = at
                    prm.a_ks = J.mr
            else:
                # Grad output rows are masked and summed for the bias one row
                # tile at a time, next to the tile's first GEMM, while they
                # are in L2: a whole chunk's rows would not fit there, and
                # grad output would be read from memory twice.
                src = gout + (n * g.cout + grp * g.ng) * plane + q0
                if mask_once:
                    # Masked and summed at the chunk's start (see above).
                    if not J.want_w:
                        continue
                    src = mbuf + grp * g.ng * kca
                elif not J.want_w:
                    mask_rows(<real *>NULL, 0, src, plane, g.ng, kq,
                              output + (src - gout) if J.masked else NULL,
                              J.mlo, J.mhi, NULL, bs + grp * g.ng)
                    continue
                a = at if J.masked and not mask_once else src
                prm.a_rs = kca if J.masked else plane
                prm.a_ks = 1
            if not J.want_w:
                continue
            # B: the input pixels these outputs read, one row per pixel.
            if J.nhwc:
                if direct:
                    bsrc = x + (n * plane + q0) * g.cin + grp * g.kg
                    if tail:
                        pack(bp, J.nr, J.ps, kq, tail, bsrc + full, g.cin, 1,
                             NULL, NULL, <real *>NULL, <real *>NULL, 0, 0)
                elif g.simple:
                    bsrc = x + (n * plane + q0) * g.cin + grp * g.kg
                else:
                    bsrc = x + n * g.h * g.w * g.cin + grp * g.kg
            else:
                if g.simple:
                    pack(bp, J.nr, J.ps, kq, g.kg,
                         x + (n * g.cin + grp * g.kg) * plane + q0, 1, plane,
                         NULL, NULL, <real *>NULL, <real *>NULL, 0, 0)
                else:
                    pack(bp, J.nr, J.ps, kq, g.kg,
                         x + (n * g.cin + grp * g.kg) * g.h * g.w, 1, g.h * g.w,
                         koff, NULL, <real *>NULL, <real *>NULL, 0, 0)
            dprm = prm
            dprm.panel_stride = J.nr
            dprm.b_ks = g.cin
            # Column blocks sized for L2, then every row tile over the block.
            pb = 0
            while pb < J.ppg:
                pe = imin(J.ppg, pb + J.pblock)
                ncols = imin(g.kg, pe * <Py_ssize_t>J.nr) - pb * <Py_ssize_t>J.nr
                if J.nhwc and not direct:
                    # NHWC input is packed one L2 block at a time, right
                    # before its row tiles use it, so it is still in L2.
                    pack(bp + pb * J.ps, J.nr, J.ps, kq, ncols,
                         bsrc + pb * <Py_ssize_t>J.nr, g.cin, 1,
                         NULL if g.simple else koff, NULL, <real *>NULL,
                         <real *>NULL, 0, 0)
                co = 0
                while co < g.ng:
                    a_tile = a + (co * kq if J.nhwc and a == at else co * prm.a_rs)
                    if pb == 0 and not J.nhwc and J.masked and not mask_once:
                        mask_rows(at + co * kca, kca, src + co * plane, plane,
                                  imin(J.mr, g.ng - co), kq,
                                  output + (src - gout) + co * plane, J.mlo, J.mhi,
                                  NULL, bs + grp * g.ng + co if J.want_b else NULL)
                    c = part + (grp * g.ng + co) * g.kg + pb * <Py_ssize_t>J.nr
                    if direct and pb * <Py_ssize_t>J.nr < full:
                        # whole panels in place; a ragged last panel is packed
                        ncols = imin(ncols, full - pb * <Py_ssize_t>J.nr)
                        dprm.ahead = NULL
                        if x_next != NULL and pb == 0 and grp == 0:
                            lo_b = (co // J.mr) * x_next_bytes // ntile_g // 64 * 64
                            hi_b = ((co // J.mr + 1) * x_next_bytes // ntile_g // 64 * 64
                                    if co + J.mr < g.ng else x_next_bytes)
                            dprm.ahead = x_next + lo_b
                            dprm.ahead_rows = 1
                            dprm.ahead_row_bytes = hi_b - lo_b
                        gemm(imin(J.mr, g.ng - co), ncols, a_tile,
                             bsrc + pb * <Py_ssize_t>J.nr, c, NULL,
                             NULL if first else c, &dprm)
                        if pe * <Py_ssize_t>J.nr > full and tail:
                            c = c + ncols
                            gemm(imin(J.mr, g.ng - co), tail, a_tile,
                                 bp, c, NULL, NULL if first else c, &prm)
                    elif direct:
                        gemm(imin(J.mr, g.ng - co), tail, a_tile,
                             bp, c, NULL, NULL if first else c, &prm)
                    else:
                        gemm(imin(J.mr, g.ng - co), ncols, a_tile,
                             bp + pb * J.ps, c, NULL, NULL if first else c, &prm)
                    if pb == 0 and not J.nhwc and J.want_b and not J.masked:
                        # After the GEMM, which streamed these rows in from
                        # memory overlapped with its arithmetic: they are
                        # in L2 now, and the sum costs little.
                        mask_rows(<real *>NULL, 0, a_tile, plane, imin(J.mr, g.ng - co),
                                  kq, <real *>NULL, 0, 0, NULL, bs + grp * g.ng + co)
                    co += J.mr
                    ncols = imin(g.kg, pe * <Py_ssize_t>J.nr) - pb * <Py_ssize_t>J.nr
                pb = pe
        first = False
        if gx_last:
            dw_nchw_grad_input(J, gout + n * g.cout * plane + q0, plane, kq,
                               gin + n * g.cin * plane + q0, wpacked_t, gx_tail)


def grad_weight_bias(object grad_out, object x, object output, object gw,
                     object gb, bint nhwc, Py_ssize_t sh, Py_ssize_t sw,
                     Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t groups,
                     bint masked, double lo, double hi, Py_ssize_t nthreads,
                     object grad_in=None, object wpacked_t=None):
    """Fill gw (C_out, C_in/g) and/or gb (C_out,), either may be None.

    With grad_in (stride 1, no padding only) the same sweep over grad output
    also fills grad_in from wpacked_t (NHWC: the transposed weights' panels;
    NCHW: the transposed weights, C_in x C_out/groups): grad output is then
    read from memory once, not twice, and masked once."""
    cdef Geom g = make_geom(x, grad_out, nhwc, sh, sw, pt, pl, groups)
    cdef DwJob J
    cdef Py_ssize_t plane = g.ho * g.wo
    memset(&J, 0, sizeof(J))
    J.g = g
    J.nhwc = nhwc
    J.masked = masked
    J.mlo = lo
    J.mhi = hi
    J.want_w = gw is not None
    J.want_b = gb is not None
    if grad_in is not None:
        if not g.simple:
            raise ValueError("fused grad input needs pixels in place")
        J.fuse_gx = True
        if nhwc:
            # Unmasked: dw_thread hands it rows masked already.
            grad_input_job(&J.gx, &g, False, 0, 0)
            if is_f32(x):
                nhwc_tiling(&J.gx, <float *>NULL)
            else:
                nhwc_tiling(&J.gx, <double *>NULL)
            if masked:
                J.gx.prefetch_a = False     # its A is the L1-sized mask buffer
    # Transpose (or regroup) whichever operand has fewer channels.  NHWC
    # swaps only when the input rows are then read in place (short rows, see
    # dw_swapped_chunk; grad output, masked or not, is read in place too)
    # and the copy that saves per pixel (ng - kg values) outweighs the
    # transpose of the result at the end (about 3 copies of dW).  With
    # longer input rows both ways copy both operands,
    # and swapping only added a separate pass for the bias sums and the
    # final transpose: in-process A/B, 1 thread, not swapping was 1-5%
    # faster on 64->384 and 96->576 at 14x14 (batch 4 to 16) and 160->960
    # at 7x7.
    mr, nr = tile_shape(x.dtype.itemsize)
    pixels = g.n * plane
    J.tmode = g.simple and ((not nhwc and g.ng < g.kg) or
                            (nhwc and g.kg < g.ng and
                             g.cin * x.dtype.itemsize <= 128 and
                             pixels * (g.ng - g.kg) > 3 * g.ng * g.kg))
    # NHWC input rows are read in place as B (whole panels, rows C_in apart)
    # when every output pixel reads the input pixel of the same index and
    # few row tiles would reuse a packed copy; otherwise packed panels,
    # whose rows are contiguous, read faster than long-strided rows.  With
    # the operands swapped, B is grad output, read in place likewise (see
    # dw_swapped_chunk).
    J.direct_b = nhwc and g.simple and (J.tmode or g.ng < DW_PACK_MIN_ROWS)
    if nhwc:
        chunk = DW_CHUNK_DIRECT if J.direct_b else DW_CHUNK
        if masked:
            chunk = min(chunk, max(DW_CHUNK_DIRECT,
                                   MASK_ONCE_BYTES // (g.cout * x.dtype.itemsize)))
    else:
        # Long, but with the packed operand held to about 2 MB.
        chunk = max(DW_CHUNK, min(DW_CHUNK_NCHW, (2 << 20) //
                                  ((g.ng if J.tmode else g.kg) * x.dtype.itemsize)))
        if J.fuse_gx:
            # Grad input and grad weight both read the chunk's grad output
            # rows (or the mask-once buffer), one after the other: held to
            # what stays in L2, in whole panels.
            chunk = min(chunk, max(DW_CHUNK_DIRECT,
                                   MASK_ONCE_BYTES // (g.cout * x.dtype.itemsize)))
            chunk = max(nr, chunk // nr * nr)
    # Equal chunks of at most `chunk` pixels per image; a single (tall)
    # image gets a multiple of the thread count, so every thread reduces
    # the same number of pixels.
    J.nchunks_img = (plane + chunk - 1) // chunk if plane else 0
    if g.n == 1 and nthreads > 1 and J.nchunks_img:
        J.nchunks_img = min(plane, (J.nchunks_img + nthreads - 1) // nthreads * nthreads)
    J.chunk = (plane + J.nchunks_img - 1) // J.nchunks_img if plane else chunk
    if J.fuse_gx and not nhwc:
        J.chunk = (J.chunk + nr - 1) // nr * nr     # whole panels for grad input's B
    # Rounding the chunk up can leave fewer chunks than asked for; never
    # hand out one that starts past the end.
    J.nchunks_img = (plane + J.chunk - 1) // J.chunk if plane else 0
    J.nchunks = g.n * J.nchunks_img
    J.mr, J.nr = mr, nr
    J.ps = pw_panel_stride(J.chunk, J.nr)
    J.ppg = ((g.ng if J.tmode else g.kg) + J.nr - 1) // J.nr
    J.pblock = max(1, L2_BLOCK_BYTES // (J.ps * x.dtype.itemsize))
    flops = 2.0 * g.n * plane * g.cin * g.ng * (2 if J.fuse_gx else 1)
    J.team = plan_threads(nthreads, flops, J.nchunks) if J.nchunks else 1
    if J.team == 1 and gw is not None and not J.tmode:
        partials = gw.reshape(1, g.cout, g.kg)   # one thread writes in place
    else:
        # Every thread's first chunk overwrites its whole partial (no R).
        partials = np.empty((J.team, g.cout, g.kg if J.want_w else 0), dtype=x.dtype)
    bsums = np.zeros((J.team, g.cout), dtype=np.float64)
    if J.nchunks:
        if is_f32(x):
            failed = _dw_run(&J, <float *>data(grad_out), <float *>data(x),
                             <float *>data(output), <float *>data(partials),
                             <double *>data(bsums), <float *>data(grad_in),
                             <float *>data(wpacked_t))
        else:
            failed = _dw_run(&J, <double *>data(grad_out), <double *>data(x),
                             <double *>data(output), <double *>data(partials),
                             <double *>data(bsums), <double *>data(grad_in),
                             <double *>data(wpacked_t))
        if failed:
            raise MemoryError("pwconv: out of memory for per-thread scratch")
    if gw is not None and J.nchunks == 0:
        gw[...] = 0
    elif gw is not None and J.tmode:
        total = partials[0] if J.team == 1 else partials.sum(axis=0)
        # Through pw_transpose: numpy's strided copy of dW^T took 7% of a
        # 960->160 7x7 NCHW backward pass at batch 4 (perf); in-process A/B,
        # NCHW backward with fewer outputs than inputs: 1-3% faster at batch
        # 4, 13% at batch 1 on 960->160 7x7.
        if is_f32(x):
            transpose_groups(<float *>data(gw), <float *>data(total), groups, g.kg, g.ng)
        else:
            transpose_groups(<double *>data(gw), <double *>data(total), groups, g.kg, g.ng)
    elif gw is not None and J.team > 1:
        # Fixed order, so the result does not depend on scheduling.
        np.sum(partials, axis=0, out=gw.reshape(g.cout, g.kg))
    if gb is not None:
        gb[...] = bsums.sum(axis=0)


cdef void transpose_groups(real *dst, const real *src, Py_ssize_t groups,
                           Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """dst[g] = src[g]^T for each group: (rows x cols) into (cols x rows)."""
    cdef Py_ssize_t grp
    for grp in range(groups):
        transpose(dst + grp * rows * cols, rows, src + grp * rows * cols, cols, rows, cols,
                  NULL, 0, 0, 0, 0)


cdef int _dw_run(DwJob *J, const real *gout, const real *x, const real *output,
                 real *partials, double *bsums, real *gin,
                 const real *wpacked_t) noexcept nogil:
    cdef int failed = 0
    cdef Py_ssize_t t
    if J.team == 1:
        dw_thread(J, 0, gout, x, output, partials, bsums, gin, wpacked_t, &failed)
    else:
        for t in prange(J.team, schedule='static', num_threads=J.team):
            dw_thread(J, t, gout, x, output, partials, bsums, gin, wpacked_t, &failed)
    return failed
