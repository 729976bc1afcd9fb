"""The functional API: validate, normalise, pack, call the compiled core."""
import numpy as np

from . import _core, _guard
from . import _validate as v
from ._alloc import aligned_array, aligned_empty

__all__ = ["pointwise_conv2d", "pointwise_conv2d_backward"]


def pack_panels(w2d, groups, bias=None, transposed=False):
    """B panels of an NHWC GEMM: the forward pass's (k = C_in, bias in each
    panel's head) or, transposed, grad input's (k = C_out, zero head)."""
    c_out, kg = w2d.shape
    size = _core.packed_size(c_out, kg, groups, transposed, w2d.itemsize)
    dst = aligned_empty(size, w2d.dtype)
    _core.pack_panels(w2d, bias, groups, transposed, dst)
    return dst


# Weights from which float64 goes through the core's transpose too; below
# it numpy's strided copy was as fast or faster (0.049 against 0.064 ms on
# 576 x 96, 0.317 against 0.278 on 512 x 256).  Float32 is faster through
# the core at every size measured (2048 x 1024: 3.5 ms against 12.8).
CORE_TRANSPOSE_MIN_F64_BYTES = 1 << 20


def transpose_weight(w2d, groups):
    """(C_in, C_out/groups): the A operand of the NCHW grad-input GEMM, each
    group's block of the (C-contiguous) weight transposed.  A layer makes it
    again after every weight update."""
    c_out, kg = w2d.shape
    ng = c_out // groups
    if w2d.dtype == np.float64 and w2d.nbytes < CORE_TRANSPOSE_MIN_F64_BYTES:
        return np.ascontiguousarray(w2d.reshape(groups, ng, kg).transpose(0, 2, 1)).reshape(
            groups * kg, ng)
    dst = np.empty((groups * kg, ng), w2d.dtype)
    _core.transpose_weight(w2d, groups, dst)
    return dst


class Call:
    """The checked, normalised form of one call's arguments."""

    def __init__(self, x, weight, bias, stride, padding, groups, layout, activation,
                 num_threads):
        self.layout = v.check_layout(layout)
        v.check_array("x", x, 4)
        self.dtype = x.dtype
        self.type_num = x.dtype.num
        self.stride = v.check_stride(stride)
        self.pad = v.check_padding(padding)
        self.groups = v.check_groups(groups)
        self.clamp, self.lo, self.hi = v.check_activation(activation)
        self.activation = activation
        # None is resolved per call, so OMP_NUM_THREADS and threadpoolctl
        # limits set after this object was made still apply.
        self.threads = v.check_threads(num_threads)
        n, c_in, h, w = v.spatial(x, self.layout)
        self.w2d = v.check_weight(weight, c_in, self.groups, self.dtype)
        self.weight_shape = weight.shape
        self.c_out = self.w2d.shape[0]
        self.bias = v.check_bias(bias, self.c_out, self.dtype)
        self.in_shape = x.shape
        self.out_shape = v.output_shape(n, self.c_out, h, w, self.stride, self.pad, self.layout)
        self.nhwc = self.layout == "NHWC"
        ho, wo = self.out_shape[1:3] if self.nhwc else self.out_shape[2:]
        # When no pixel moves (stride 1, no padding, or a single pixel in and
        # out), the core sees the whole batch as one tall NHWC image: its row
        # tiles and grad-weight chunks then run across image boundaries.  An
        # NCHW map of one pixel is already NHWC in memory.
        one_pixel = (h * w == 1 and ho * wo == 1 and self.pad[0] == 0
                     and self.pad[2] == 0)
        identity = (self.stride == (1, 1) and self.pad == (0, 0, 0, 0)) or one_pixel
        self.core_nhwc = self.nhwc or one_pixel
        if self.core_nhwc and identity:
            self.core_in = (1, n * h * w, 1, c_in)
            self.core_out = (1, n * h * w, 1, self.c_out)
            self.core_geom = (True, 1, 1, 0, 0, self.groups)
        else:
            self.core_in, self.core_out = self.in_shape, self.out_shape
            sh, sw = self.stride
            self.core_geom = (self.nhwc, sh, sw, self.pad[0], self.pad[2], self.groups)
        self.identity = identity
        # Forward on a strided, unpadded map: the pixels the output reads are
        # gathered into a dense, output-sized copy that then runs at stride 1,
        # so the weights stay in L2 across all of its row tiles instead of
        # being walked once per output row.
        self.gather = None
        self.fwd_in, self.fwd_out, self.fwd_geom = self.core_in, self.core_out, self.core_geom
        if not identity and self.pad == (0, 0, 0, 0):
            sh, sw = self.stride
            every = slice(None)
            if self.nhwc:
                self.gather = (every, slice(None, None, sh), slice(None, None, sw), every)
                self.fwd_in = (1, n * ho * wo, 1, c_in)
                self.fwd_out = (1, n * ho * wo, 1, self.c_out)
            else:
                self.gather = (every, every, slice(None, None, sh), slice(None, None, sw))
                self.fwd_in, self.fwd_out = (n, c_in, ho, wo), self.out_shape
            self.fwd_geom = (self.nhwc, 1, 1, 0, 0, self.groups)

    def bound_to(self, w2d, bias):
        """This call's checked geometry with another weight and bias (already
        normalised): a shallow copy, 0.8 us where copy.copy takes 3."""
        call = Call.__new__(Call)
        call.__dict__.update(self.__dict__)
        call.w2d, call.bias = w2d, bias
        return call

    def pack(self, packs, kind):
        """The packed weight operand `kind`, cached in the dict `packs`
        (a layer's, kept until its weights change, or a fresh one)."""
        packed = packs.get(kind)
        if packed is None:
            if kind == "forward":
                packed = pack_panels(self.w2d, self.groups, bias=self.bias)
            elif kind == "grad_input_nhwc":
                packed = pack_panels(self.w2d, self.groups, transposed=True)
            else:
                packed = transpose_weight(self.w2d, self.groups)
            packs[kind] = packed
        return packed


def _plain(v):
    """Whether v's own value says everything a check would: None, an int, a
    str or a tuple of ints (True == 1 and 1.0 == 1 hash alike, so a bool or a
    float must never find the entry an int made, which skipped its check)."""
    return (v is None or type(v) is int or type(v) is str
            or (type(v) is tuple and all(type(e) is int for e in v)))


_CALLS = {}   # the geometry of recent functional calls, by their arguments' form


def functional_call(x, weight, bias, stride, padding, groups, layout, activation,
                    num_threads):
    """The checked Call for these arguments.  Calls alike in everything a
    check looks at (the arrays' types, shapes and dtypes and the plain
    settings) share one checked geometry; only the weight and bias are bound
    afresh, since they are data.  Checking costs as much as the core's work
    on a 7x7 layer's worth of pixels per call, and a loop over one network's
    layers repeats a few forms."""
    key = None
    if (type(x) is np.ndarray and type(weight) is np.ndarray
            and (bias is None or type(bias) is np.ndarray)
            and _plain(stride) and _plain(padding) and _plain(groups)
            and _plain(layout) and _plain(activation) and _plain(num_threads)):
        key = (x.shape, x.dtype, weight.shape, weight.dtype,
               None if bias is None else (bias.shape, bias.dtype),
               stride, padding, groups, layout, activation, num_threads)
        known = _CALLS.get(key)
        if known is not None:
            return known.bound_to(v.weight_2d(weight),
                                  None if bias is None else np.ascontiguousarray(bias))
    call = Call(x, weight, bias, stride, padding, groups, layout, activation, num_threads)
    if key is not None:
        if len(_CALLS) >= 64:
            _CALLS.clear()
        _CALLS[key] = call.bound_to(None, None)   # keeps no caller's data alive
    return call


def pointwise_conv2d(x, weight, bias=None, *, stride=1, padding=0, groups=1,
                     layout="NCHW", activation=None, residual=None, out=None,
                     num_threads=None):
    """Pointwise (1x1) convolution: ``act(conv1x1(x) + bias + residual)``.

    Parameters
    ----------
    x : ndarray, float32 or float64
        ``(N, C_in, H, W)`` for ``layout="NCHW"``, ``(N, H, W, C_in)`` for
        ``"NHWC"``; any strides.  Never modified.
    weight : ndarray
        ``(C_out, C_in // groups)`` or ``(C_out, C_in // groups, 1, 1)``.
    bias : ndarray or None
        ``(C_out,)``.
    stride : int or (int, int)
    padding : int, (ph, pw) or (top, bottom, left, right)
        Padded positions give ``act(bias + residual)``.
    groups : int
        Divides C_in and C_out.
    layout : {"NCHW", "NHWC"}
    activation : None, "relu", "relu6" or (min, max)
        Applied last.
    residual : ndarray or None
        Output-shaped array added before the activation.
    out : ndarray or None
        C-contiguous output-shaped array to write into.  It must not overlap
        any input, except that it may be ``residual`` itself (exactly the
        same elements): the sum is then formed in place, as a network's skip
        connection can, and no separate residual stream is read.
    num_threads : int or None
        None uses the OpenMP default (``OMP_NUM_THREADS``, threadpoolctl).

    Returns
    -------
    ndarray
        The output, ``out`` itself when given.
    """
    call = functional_call(x, weight, bias, stride, padding, groups, layout, activation,
                           num_threads)
    if not _guard.forward_args_ok(residual, out, call.out_shape, call.type_num,
                                  (x, weight, bias)):
        residual = v.check_like("residual", residual, call.out_shape, call.dtype, "output")
        v.check_out(out, call.out_shape, call.dtype,
                    {"x": x, "weight": weight, "bias": bias, "residual": residual},
                    in_place="residual")
    return run_forward(call, x, residual, out, {})


def run_forward(call, x, residual, out, packs):
    """Forward on checked arguments (shared with the layer object)."""
    threads = call.threads or _core.default_threads()
    if call.gather is None:
        xc = np.ascontiguousarray(x)
    elif x.flags.c_contiguous:
        # pwconv's own gather (see src/pw_gather.c), on the call's threads.
        xc = _core.gather_strided(x, np.empty(call.fwd_in, x.dtype), call.nhwc,
                                  *call.stride, threads)
    else:
        xc = np.ascontiguousarray(x[call.gather])
    rc = np.ascontiguousarray(residual) if residual is not None else None
    if out is None:
        out = aligned_array(call.out_shape, call.dtype)
    oc = out
    if call.gather is not None or (call.core_nhwc and not call.nhwc):
        # A gathered strided map, or a one-pixel NCHW map (NHWC in memory).
        xc = xc.reshape(call.fwd_in)
        oc = out.reshape(call.fwd_out)
        rc = rc.reshape(call.fwd_out) if rc is not None else None
    nhwc, sh, sw, top, left, groups = call.fwd_geom
    # NCHW runs small planes, and the few pixels past a larger plane's last
    # whole panel, on the forward panels when a layer object keeps them (a
    # one-off call would pay the packing for little gain).
    wpacked = packs.get("forward")
    if nhwc and wpacked is None:
        wpacked = call.pack(packs, "forward")
    _core.forward(xc, wpacked, call.w2d, call.bias, rc, oc, nhwc, sh, sw, top, left,
                  groups, call.clamp, call.lo, call.hi, threads)
    return out


def pointwise_conv2d_backward(grad_output, x, weight, *, stride=1, padding=0, groups=1,
                              layout="NCHW", activation=None, output=None,
                              output_mask=(True, True, True), num_threads=None):
    """Gradients of :func:`pointwise_conv2d` with respect to x, weight, bias.

    Parameters
    ----------
    grad_output : ndarray
        Gradient of the loss with respect to the forward output.
    x, weight, stride, padding, groups, layout, activation, num_threads
        As passed to the forward call.
    output : ndarray or None
        The forward result; required when ``activation`` is not None, since
        the gradient passes through the activation's derivative (PyTorch's
        convention: where ``min < output < max``).
    output_mask : (bool, bool, bool)
        Which of (grad_input, grad_weight, grad_bias) to compute.

    Returns
    -------
    (grad_input, grad_weight, grad_bias)
        None where masked off; ``grad_weight`` has the shape of ``weight``.
    """
    call = functional_call(x, weight, None, stride, padding, groups, layout, activation,
                           num_threads)
    mask = v.check_output_mask(output_mask)
    v.check_array("grad_output", grad_output)
    v.check_like("grad_output", grad_output, call.out_shape, call.dtype, "forward output")
    if activation is not None and output is None:
        raise ValueError("output (the forward result) is required when activation is "
                         f"{activation!r}: its derivative is read off the output")
    output = v.check_like("output", output, call.out_shape, call.dtype, "forward output")
    return run_backward(call, grad_output, x, output, mask, {})


# Strided, unpadded NHWC grad input runs per output row, each row's few
# pixels walking all the weights.  With weights this large it runs instead as
# one dense GEMM over the gathered pixels (as the forward pass does), scattered
# back.  In-process A/B, 1 thread, NHWC, stride 2: grad input of 1024->2048 at
# 4x14x14 0.71 of the time (batch 1 0.72), 512->1024 at 4x28x28 0.89; but
# 256->512 at 56x56 (512 KB of weights) 1.03-1.06, the copy costing more
# than the walks.
DENSE_GRAD_INPUT_MIN_WEIGHT_BYTES = 1 << 20


def run_backward(call, grad_output, x, output, mask, packs, grad_input=None):
    """Backward on checked arguments (shared with the layer object), grad
    input written into `grad_input` when given (checked: C-contiguous, the
    input's shape, apart from every operand)."""
    go = np.ascontiguousarray(grad_output).reshape(call.core_out)
    xc = np.ascontiguousarray(x).reshape(call.core_in)
    masked = call.activation is not None
    oc = np.ascontiguousarray(output).reshape(call.core_out) if masked else None
    nhwc, sh, sw, top, left, groups = call.core_geom
    threads = call.threads or _core.default_threads()
    gx = gw = gb = None
    plane = call.core_in[2] * call.core_in[3]   # NCHW's; NHWC decides without it
    # Small unstrided NCHW planes run grad input on pixel tiles, over NHWC
    # panels.
    kg, ng = call.w2d.shape[1], call.c_out // groups
    panels = nhwc or (call.identity and _core.nchw_pixel_tiles(groups, plane, kg, ng))
    # With pixels in place, grad input can ride along the grad-weight sweep,
    # so grad output is read from memory, and masked, once.
    fused = (call.identity and mask[0] and (mask[1] or mask[2])
             and _core.fuse_grad_input(nhwc, groups, plane, kg, ng))
    if mask[0]:
        # Pixels that no output reads get a zero gradient.
        if grad_input is None:
            gx = aligned_array(call.in_shape, call.dtype, zero=not call.identity)
        else:
            gx = grad_input
            if not call.identity:
                gx.fill(0)
        packed = call.pack(packs, "grad_input_nhwc" if panels else "grad_input_nchw")
        if (not fused and nhwc and call.gather is not None
                and call.w2d.nbytes >= DENSE_GRAD_INPUT_MIN_WEIGHT_BYTES):
            dense = aligned_array(call.fwd_in, call.dtype)
            _core.grad_input(go.reshape(call.fwd_out), packed, None,
                             oc.reshape(call.fwd_out) if masked else None, dense,
                             *call.fwd_geom, masked, call.lo, call.hi, threads)
            picked = gx[call.gather]
            picked[...] = dense.reshape(picked.shape)
        elif not fused:
            _core.grad_input(go, packed if panels else None, None if panels else packed, oc,
                             gx.reshape(call.core_in), nhwc, sh, sw, top, left, groups,
                             masked, call.lo, call.hi, threads)
    if mask[1] or mask[2]:
        gw = np.empty(call.w2d.shape, call.dtype) if mask[1] else None
        gb = np.empty(call.c_out, call.dtype) if mask[2] else None
        _core.grad_weight_bias(go, xc, oc, gw, gb, nhwc, sh, sw, top, left, groups,
                               masked, call.lo, call.hi, threads,
                               gx.reshape(call.core_in) if fused else None,
                               packed if fused else None)
        if gw is not None:
            gw = gw.reshape(call.weight_shape)
    return gx, gw, gb
