"""A float64 numpy reference for pwconv, and the helpers the tests share.

The reference is written straight from the contract (DESIGN.md section 3) with
np.pad, slicing and einsum, and shares no code with the package: an oracle that
reused pwconv's argument handling would inherit its bugs.
"""

import math
import os
import subprocess
import sys

import numpy as np
from numpy.testing import assert_allclose

DTYPES = (np.float32, np.float64)
LAYOUTS = ("NCHW", "NHWC")
ACTIVATIONS = (None, "relu", "relu6", (-0.5, 0.5))


# --------------------------------------------------------------------------
# Argument normalisation, as the contract defines it.


def norm_stride(stride):
    if isinstance(stride, (int, np.integer)):
        return int(stride), int(stride)
    sh, sw = stride
    return int(sh), int(sw)


def norm_padding(padding):
    """(top, bottom, left, right) from an int, (ph, pw) or a 4-tuple."""
    if isinstance(padding, (int, np.integer)):
        p = int(padding)
        return p, p, p, p
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        ph, pw = padding
        return ph, ph, pw, pw
    return padding


def activation_bounds(activation):
    if activation is None:
        return -math.inf, math.inf
    if activation == "relu":
        return 0.0, math.inf
    if activation == "relu6":
        return 0.0, 6.0
    lo, hi = activation
    return float(lo), float(hi)


def output_hw(h, w, stride=1, padding=0):
    sh, sw = norm_stride(stride)
    top, bottom, left, right = norm_padding(padding)
    return (h + top + bottom - 1) // sh + 1, (w + left + right - 1) // sw + 1


def to_nchw(a, layout):
    return a if layout == "NCHW" else a.transpose(0, 3, 1, 2)


def from_nchw(a, layout):
    return a if layout == "NCHW" else a.transpose(0, 2, 3, 1)


# --------------------------------------------------------------------------
# The reference itself.


def _padded_strided(x, stride, padding):
    """x (NCHW, float64) zero-padded, then subsampled; also the padded array."""
    sh, sw = norm_stride(stride)
    top, bottom, left, right = norm_padding(padding)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    return xp[:, :, ::sh, ::sw], xp


def forward(x, weight, bias=None, *, stride=1, padding=0, groups=1,
            layout="NCHW", activation=None, residual=None):
    """y = act(conv1x1(pad(x)[::sh, ::sw], w) + bias + residual), in float64."""
    x = to_nchw(np.asarray(x, dtype=np.float64), layout)
    w = np.asarray(weight, dtype=np.float64)
    w = w.reshape(w.shape[0], -1)
    xs, _ = _padded_strided(x, stride, padding)
    n, c_in, ho, wo = xs.shape
    c_out = w.shape[0]
    cig, cog = c_in // groups, c_out // groups
    y = np.einsum("ngihw,goi->ngohw",
                  xs.reshape(n, groups, cig, ho, wo),
                  w.reshape(groups, cog, cig)).reshape(n, c_out, ho, wo)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)[:, None, None]
    if residual is not None:
        y = y + to_nchw(np.asarray(residual, dtype=np.float64), layout)
    lo, hi = activation_bounds(activation)
    if activation is not None:
        y = np.clip(y, lo, hi)
    return np.ascontiguousarray(from_nchw(y, layout))


def backward(grad_output, x, weight, *, stride=1, padding=0, groups=1,
             layout="NCHW", activation=None, output=None):
    """(grad_input, grad_weight, grad_bias) in float64, PyTorch conventions.

    The activation mask is taken from `output` so that a caller can hand the
    reference the very output pwconv produced: a pre-activation that lands on a
    threshold then gets the same mask in both, whatever the rounding.
    """
    g = to_nchw(np.asarray(grad_output, dtype=np.float64), layout)
    if activation is not None:
        # Compare in the output's own dtype, as PyTorch does: a float32 output
        # clamped to float32(lo) must count as at the bound, even when lo
        # itself is not representable in float32.
        o = to_nchw(np.asarray(output), layout)
        lo, hi = (o.dtype.type(b) for b in activation_bounds(activation))
        g = g * ((o > lo) & (o < hi))
    x = to_nchw(np.asarray(x, dtype=np.float64), layout)
    w_shape = np.shape(weight)
    w = np.asarray(weight, dtype=np.float64).reshape(w_shape[0], -1)
    n, c_in, h, wd = x.shape
    xs, xp = _padded_strided(x, stride, padding)
    _, _, ho, wo = xs.shape
    c_out = w.shape[0]
    cig, cog = c_in // groups, c_out // groups
    gg = g.reshape(n, groups, cog, ho, wo)
    grad_w = np.einsum("ngohw,ngihw->goi", gg,
                       xs.reshape(n, groups, cig, ho, wo)).reshape(w_shape)
    grad_b = g.sum(axis=(0, 2, 3))
    dxs = np.einsum("ngohw,goi->ngihw", gg,
                    w.reshape(groups, cog, cig)).reshape(n, c_in, ho, wo)
    sh, sw = norm_stride(stride)
    top, _, left, _ = norm_padding(padding)
    dxp = np.zeros(xp.shape)
    dxp[:, :, ::sh, ::sw] = dxs
    dx = dxp[:, :, top:top + h, left:left + wd]
    return np.ascontiguousarray(from_nchw(dx, layout)), grad_w, grad_b


# --------------------------------------------------------------------------
# Helpers shared by the tests.


def tolerance(dtype, k):
    """(rtol, atol) for a sum of k products of O(1) values in `dtype`.

    Rounding errors of a k-term sum grow like sqrt(k) for random data, and the
    sum itself is O(sqrt(k)), so both bounds scale with sqrt(k).
    """
    base = 1e-4 if np.dtype(dtype) == np.float32 else 1e-10
    s = math.sqrt(max(int(k), 1))
    return base * s, base * s


def assert_close(actual, expected, k, dtype=None, err_msg=""):
    dtype = actual.dtype if dtype is None else dtype
    rtol, atol = tolerance(dtype, k)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=err_msg)


def x_shape(n, c, h, w, layout):
    return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)


def make_case(rng, *, dtype=np.float32, layout="NCHW", n=2, c_in=6, c_out=10,
              h=5, w=7, groups=1, stride=1, padding=0, bias=True,
              residual=False, weight_4d=False):
    """Random inputs for one call, as a dict of pointwise_conv2d's arguments."""
    ho, wo = output_hw(h, w, stride, padding)
    wshape = (c_out, c_in // groups) + ((1, 1) if weight_4d else ())
    case = {
        "x": rng.standard_normal(x_shape(n, c_in, h, w, layout)).astype(dtype),
        "weight": rng.standard_normal(wshape).astype(dtype),
        "bias": rng.standard_normal(c_out).astype(dtype) if bias else None,
        "residual": (rng.standard_normal(x_shape(n, c_out, ho, wo, layout))
                     .astype(dtype) if residual else None),
    }
    return case


def grad_output_like(rng, y):
    return rng.standard_normal(y.shape).astype(y.dtype)


def snapshot(*arrays):
    """Copies to compare against later, to prove that nothing was written."""
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def assert_unchanged(arrays, copies):
    for a, c in zip(arrays, copies):
        if a is not None:
            np.testing.assert_array_equal(a, c)


# (n, c_in, c_out, h, w, groups): 1x1 spatial, C=1, channel counts off the 8/16
# tile grid, N > 1, K large, one-channel groups, and shapes big enough to need
# several row and column tiles.
EDGE_SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (1, 1, 1, 4, 3, 1),
    (1, 3, 1, 4, 4, 1),
    (1, 1, 17, 3, 3, 1),
    (2, 17, 23, 3, 5, 1),
    (1, 33, 17, 1, 1, 1),
    (3, 23, 33, 2, 3, 1),
    (1, 16, 16, 8, 8, 1),
    (1, 8, 48, 6, 6, 4),
    (1, 64, 3, 7, 7, 1),
    (1, 3, 64, 13, 1, 1),
    (4, 17, 17, 1, 13, 1),
    (1, 24, 24, 6, 6, 24),
    (1, 300, 40, 3, 3, 1),
    (1, 150, 70, 9, 11, 1),
    (2, 150, 70, 9, 11, 2),
    (2, 34, 46, 9, 11, 2),
    # Groups of 16 channels in: NHWC grad weight swaps its operands (a
    # group's short input rows in place) in both dtypes; ragged both ways.
    (2, 48, 150, 9, 11, 3),
]


def shape_id(shape):
    n, c_in, c_out, h, w, g = shape
    return f"n{n}-ci{c_in}-co{c_out}-{h}x{w}-g{g}"


def restride(a, kind, layout="NCHW"):
    """An array equal to `a` whose memory is laid out according to `kind`."""
    if a is None:
        return None
    if kind == "slice":
        # Every other element of a NaN-filled buffer, so that reading a wrong
        # element poisons the result instead of passing by luck.
        buf = np.full(tuple(2 * s + 1 for s in a.shape), np.nan, a.dtype)
        view = buf[tuple(slice(1, 1 + 2 * s, 2) for s in a.shape)]
    elif kind == "reversed":
        buf = np.empty(a.shape, a.dtype)
        view = buf[(slice(None, None, -1),) * a.ndim]
    elif kind == "fortran":
        return np.asfortranarray(a)
    elif kind == "transposed":
        # A 4-D array stored in the other layout: NCHW data viewed as NHWC and
        # the other way round; 2-D arrays are stored transposed.
        if a.ndim == 4:
            perm = (0, 2, 3, 1) if layout == "NCHW" else (0, 3, 1, 2)
        else:
            perm = tuple(reversed(range(a.ndim)))
        inverse = tuple(np.argsort(perm))
        return np.ascontiguousarray(a.transpose(perm)).transpose(inverse)
    elif kind == "readonly":
        view = np.array(a, copy=True)
        view.setflags(write=False)
        return view
    elif kind == "channel_reversed":
        # Negative stride on the channel axis only, as x[:, ::-1] gives.
        axis = 1 if (a.ndim == 4 and layout == "NCHW") else a.ndim - 1
        buf = np.empty(a.shape, a.dtype)
        index = [slice(None)] * a.ndim
        index[axis] = slice(None, None, -1)
        view = buf[tuple(index)]
    else:
        raise AssertionError(kind)
    view[...] = a
    return view


VIEW_KINDS = ("slice", "reversed", "channel_reversed", "fortran", "transposed",
              "readonly")


def run_python(script, cwd, env=None):
    """Run `script` in a fresh interpreter that can import `reference`.

    cwd is a scratch folder so that a source checkout cannot shadow the
    installed package.
    """
    full_env = dict(os.environ)
    paths = [os.path.dirname(os.path.abspath(__file__))]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    full_env["PYTHONPATH"] = os.pathsep.join(paths)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", script], cwd=cwd,
                          env=full_env, capture_output=True, text=True,
                          timeout=300)


def conv_problems():
    """A hypothesis strategy for (make_case kwargs, activation, seed)."""
    from hypothesis import strategies as st

    small = st.integers(0, 2)
    strides = st.one_of(st.integers(1, 3),
                        st.tuples(st.integers(1, 3), st.integers(1, 3)))
    paddings = st.one_of(small, st.tuples(small, small),
                         st.tuples(small, small, small, small))
    # Clamps are drawn as (lo, lo + width) so that min <= max always holds.
    activations = st.one_of(
        st.sampled_from([None, "relu", "relu6"]),
        st.tuples(st.floats(-2, 1), st.floats(0, 3)).map(
            lambda t: (t[0], t[0] + t[1])))

    @st.composite
    def problems(draw):
        groups = draw(st.integers(1, 3))
        params = dict(
            dtype=draw(st.sampled_from(DTYPES)),
            layout=draw(st.sampled_from(LAYOUTS)),
            n=draw(st.integers(1, 3)),
            c_in=groups * draw(st.integers(1, 20)),
            c_out=groups * draw(st.integers(1, 20)),
            h=draw(st.integers(1, 9)),
            w=draw(st.integers(1, 9)),
            groups=groups,
            stride=draw(strides),
            padding=draw(paddings),
            bias=draw(st.booleans()),
            residual=draw(st.booleans()),
            weight_4d=draw(st.booleans()),
        )
        return params, draw(activations), draw(st.integers(0, 2**32 - 1))

    return problems()
