"""pointwise_conv2d_backward against the reference and finite differences."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings

import pwconv
import reference as ref
from reference import (ACTIVATIONS, DTYPES, EDGE_SHAPES, LAYOUTS, VIEW_KINDS,
                       assert_close, assert_unchanged, make_case, restride,
                       shape_id, snapshot)

STRIDES = (1, 2, (1, 2))
PADDINGS = (0, 1, (1, 0), (0, 1, 2, 1))


def forward_and_grad(rng, case, **kw):
    """pwconv's forward output for `case` and a random grad_output for it."""
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                residual=case["residual"], **kw)
    return y, rng.standard_normal(y.shape).astype(y.dtype)


def run_backward(g, case, y, *, activation=None, **kw):
    """pwconv's gradients and the reference's, after checking no input changed.

    Both get pwconv's own forward output, so the activation masks agree even
    where a pre-activation rounds onto a threshold.
    """
    output = y if activation is not None else None
    arrays = [g, case["x"], case["weight"], output]
    before = snapshot(*arrays)
    got = pwconv.pointwise_conv2d_backward(
        g, case["x"], case["weight"], activation=activation, output=output,
        **kw)
    assert_unchanged(arrays, before)
    expected = ref.backward(g, case["x"], case["weight"], activation=activation,
                            output=output, **kw)
    return got, expected


def check_grads(got, expected, case, y, groups):
    """Compare the three gradients; k is each one's reduction length."""
    assert isinstance(got, tuple) and len(got) == 3
    dx, dw, db = got
    c_out = np.shape(case["weight"])[0]
    pixels = y.size // c_out if c_out else 0
    dtype = case["x"].dtype
    for a in got:
        assert a.dtype == dtype
    assert dx.shape == case["x"].shape
    assert dw.shape == np.shape(case["weight"])
    assert db.shape == (c_out,)
    assert_close(dx, expected[0], k=c_out // groups, err_msg="grad_input")
    assert_close(dw, expected[1], k=pixels, err_msg="grad_weight")
    assert_close(db, expected[2], k=pixels, err_msg="grad_bias")


# 2 x 2 x 3 x 4 x 2 x 4 = 384 cases. Bias and residual only reach the backward
# pass through `output`, so they are always given, to spread the outputs
# across every side of the activation thresholds.
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("groups", [1, 2], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("padding", PADDINGS, ids=lambda p: f"p{p}")
@pytest.mark.parametrize("stride", STRIDES, ids=lambda s: f"s{s}")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_grid(rng, dtype, layout, stride, padding, groups, activation):
    kw = dict(stride=stride, padding=padding, groups=groups, layout=layout)
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=6, c_out=10,
                     h=5, w=7, groups=groups, stride=stride, padding=padding,
                     residual=True)
    y, g = forward_and_grad(rng, case, activation=activation, **kw)
    got, expected = run_backward(g, case, y, activation=activation, **kw)
    check_grads(got, expected, case, y, groups)


@pytest.mark.parametrize("config", [
    dict(),
    dict(stride=2, padding=1, activation="relu"),
    dict(stride=(1, 2), padding=(1, 0, 0, 1), activation=(-1.0, 1.0)),
], ids=["plain", "s2-p1-relu", "s12-pasym-clamp"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=shape_id)
def test_edge_shapes(rng, shape, dtype, layout, config):
    n, c_in, c_out, h, w, groups = shape
    kw = dict(stride=config.get("stride", 1), padding=config.get("padding", 0),
              groups=groups, layout=layout)
    activation = config.get("activation")
    case = make_case(rng, dtype=dtype, layout=layout, n=n, c_in=c_in,
                     c_out=c_out, h=h, w=w, groups=groups, stride=kw["stride"],
                     padding=kw["padding"])
    y, g = forward_and_grad(rng, case, activation=activation, **kw)
    got, expected = run_backward(g, case, y, activation=activation, **kw)
    check_grads(got, expected, case, y, groups)


# Shapes past the masked copies' internal blocks: over 256 output channels
# (NHWC grad weight masks a row's channels in blocks of that size, and cuts
# pixels into chunks whose masked rows fit MASK_ONCE_BYTES: 16x16 makes two),
# planes of 49 (pixel tiles), 81 and 196 (row sums in 32 lanes plus a
# ragged end), few input channels (NHWC then swaps the operands), and odd
# channel counts so vector runs end mid-way.  Each output is pushed onto a
# threshold in places, where the mask must drop it.
@pytest.mark.parametrize("activation", ["relu", "relu6", (-0.5, 0.5)], ids=str)
@pytest.mark.parametrize("shape", [(1, 13, 301, 3, 5), (2, 37, 29, 7, 7),
                                   (1, 9, 67, 9, 9), (1, 20, 131, 14, 14),
                                   (1, 40, 301, 16, 16)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_masked_wide(rng, dtype, layout, shape, activation):
    n, c_in, c_out, h, w = shape
    case = make_case(rng, dtype=dtype, layout=layout, n=n, c_in=c_in,
                     c_out=c_out, h=h, w=w, residual=True)
    layer = pwconv.PointwiseConv2d(c_in, c_out, activation=activation,
                                   layout=layout, dtype=dtype)
    layer.weight = case["weight"]
    layer.bias = case["bias"]
    y = layer(case["x"])
    lo, hi = ref.activation_bounds(activation)
    y.flat[::7] = lo
    y.flat[3::11] = hi
    g = rng.standard_normal(y.shape).astype(dtype)
    got, expected = run_backward(g, case, y, activation=activation, layout=layout)
    check_grads(got, expected, case, y, groups=1)
    gx = layer.backward(g)
    assert_close(gx, expected[0], k=c_out, err_msg="layer grad_input")
    assert_close(layer.grad_weight, expected[1], k=n * h * w, err_msg="layer grad_weight")
    assert_close(layer.grad_bias, expected[2], k=n * h * w, err_msg="layer grad_bias")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_weight_4d_grad_shape(rng, layout):
    case = make_case(rng, dtype=np.float64, layout=layout, c_in=6, c_out=4,
                     groups=2, weight_4d=True)
    kw = dict(groups=2, layout=layout, padding=(1, 0))
    y, g = forward_and_grad(rng, case, **kw)
    got, expected = run_backward(g, case, y, **kw)
    assert got[1].shape == (4, 3, 1, 1)
    check_grads(got, expected, case, y, groups=2)
    flat = pwconv.pointwise_conv2d_backward(g, case["x"],
                                            case["weight"][:, :, 0, 0], **kw)
    assert flat[1].shape == (4, 3)
    np.testing.assert_array_equal(flat[1], got[1][:, :, 0, 0])


# --------------------------------------------------------------------------
# Finite differences.

FD_KW = dict(stride=(1, 2), padding=(1, 0, 0, 1), groups=2)
FD_EPS = 1e-6


def kink_free_case(layout, activation, margin=0.05):
    """A tiny float64 case whose pre-activations all stay `margin` away from
    the activation's thresholds, so that central differences of size FD_EPS
    see a linear function.

    The residual is free to choose, so it pushes every pre-activation that
    lies near a threshold away from it.
    """
    lo, hi = ref.activation_bounds(activation)
    thresholds = [t for t in (lo, hi) if np.isfinite(t)]
    rng = np.random.default_rng(7)
    case = make_case(rng, dtype=np.float64, layout=layout, n=2, c_in=4,
                     c_out=6, h=3, w=4, residual=True, **FD_KW)

    def pre_activation():
        return ref.forward(case["x"], case["weight"], case["bias"],
                           residual=case["residual"], layout=layout, **FD_KW)

    for t in thresholds:
        d = pre_activation() - t
        away = np.where(d >= 0, 2 * margin, -2 * margin)
        case["residual"] += np.where(np.abs(d) < margin, away, 0.0)
    pre = pre_activation()
    for t in thresholds:
        assert np.abs(pre - t).min() > margin
    return rng, case


def numeric_grad(loss, a):
    grad = np.zeros(a.shape)
    for idx in np.ndindex(*a.shape):
        old = a[idx]
        a[idx] = old + FD_EPS
        up = loss()
        a[idx] = old - FD_EPS
        down = loss()
        a[idx] = old
        grad[idx] = (up - down) / (2 * FD_EPS)
    return grad


def finite_difference_grads(forward, case, g):
    """d sum(g * forward(case)) / d (x, weight, bias), by central differences."""
    def loss():
        return float(np.sum(g * forward(case)))
    return tuple(numeric_grad(loss, case[name])
                 for name in ("x", "weight", "bias"))


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_finite_differences(layout, activation):
    rng, case = kink_free_case(layout, activation)
    kw = dict(layout=layout, **FD_KW)

    def forward(c):
        return pwconv.pointwise_conv2d(c["x"], c["weight"], c["bias"],
                                       residual=c["residual"],
                                       activation=activation, **kw)

    y = forward(case)
    g = rng.standard_normal(y.shape)
    numeric = finite_difference_grads(forward, case, g)
    got = pwconv.pointwise_conv2d_backward(
        g, case["x"], case["weight"], activation=activation,
        output=y if activation is not None else None, **kw)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got,
                          numeric):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_matches_finite_differences(layout, activation):
    # The oracle checks itself, so that a wrong reference cannot hide a bug.
    rng, case = kink_free_case(layout, activation)
    kw = dict(layout=layout, **FD_KW)

    def forward(c):
        return ref.forward(c["x"], c["weight"], c["bias"],
                           residual=c["residual"], activation=activation, **kw)

    y = forward(case)
    g = rng.standard_normal(y.shape)
    numeric = finite_difference_grads(forward, case, g)
    expected = ref.backward(g, case["x"], case["weight"], activation=activation,
                            output=y, **kw)
    for a, e in zip(expected, numeric):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------
# output_mask, strides, zero sizes.


@pytest.mark.parametrize("mask", list(itertools.product([True, False],
                                                        repeat=3)),
                         ids=lambda m: "".join("1" if b else "0" for b in m))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_output_mask(rng, layout, mask):
    kw = dict(stride=2, padding=1, groups=1, layout=layout)
    case = make_case(rng, dtype=np.float32, layout=layout, n=2, c_in=17,
                     c_out=9, h=6, w=5, **{k: kw[k] for k in ("stride",
                                                              "padding")})
    y, g = forward_and_grad(rng, case, activation="relu", **kw)
    full = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"],
                                            activation="relu", output=y, **kw)
    before = snapshot(g, case["x"], case["weight"], y)
    got = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"],
                                           activation="relu", output=y,
                                           output_mask=mask, **kw)
    assert_unchanged([g, case["x"], case["weight"], y], before)
    assert isinstance(got, tuple) and len(got) == 3
    for wanted, a, f in zip(mask, got, full):
        if wanted:
            assert a is not None
            assert_close(a, f, k=1)
        else:
            assert a is None


@pytest.mark.parametrize("which", ["grad_output", "x", "weight", "output",
                                   "all"])
@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_strided_inputs(rng, dtype, layout, kind, which):
    kw = dict(stride=(2, 1), padding=(0, 1), groups=1, layout=layout)
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=19, c_out=21,
                     h=7, w=6, stride=kw["stride"], padding=kw["padding"])
    y, g = forward_and_grad(rng, case, activation="relu6", **kw)
    contig = pwconv.pointwise_conv2d_backward(
        g, case["x"], case["weight"], activation="relu6", output=y, **kw)
    arrays = {"grad_output": g, "x": case["x"], "weight": case["weight"],
              "output": y}
    for name in (arrays if which == "all" else [which]):
        arrays[name] = restride(arrays[name], kind, layout)
    before = snapshot(*arrays.values())
    got = pwconv.pointwise_conv2d_backward(
        arrays["grad_output"], arrays["x"], arrays["weight"],
        activation="relu6", output=arrays["output"], **kw)
    assert_unchanged(list(arrays.values()), before)
    expected = ref.backward(g, case["x"], case["weight"], activation="relu6",
                            output=y, **kw)
    pixels = y.size // 21
    for a, c, e, k in zip(got, contig, expected, (21, pixels, pixels)):
        assert_close(a, c, k=k)
        assert_close(a, e, k=k)


@pytest.mark.parametrize("padding", [0, 1], ids=["p0", "p1"])
@pytest.mark.parametrize("empty", ["n", "h", "w"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_zero_size(rng, dtype, layout, empty, padding):
    dims = dict(n=2, h=3, w=4)
    dims[empty] = 0
    kw = dict(padding=padding, layout=layout)
    case = make_case(rng, dtype=dtype, layout=layout, c_in=5, c_out=6, **dims,
                     padding=padding)
    ho, wo = ref.output_hw(dims["h"], dims["w"], padding=padding)
    y = np.ones(ref.x_shape(dims["n"], 6, ho, wo, layout), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    got, expected = run_backward(g, case, y, activation="relu", **kw)
    dx, dw, db = got
    assert dx.shape == case["x"].shape
    assert dw.shape == (6, 5)
    assert db.shape == (6,)
    for a, e in zip(got, expected):
        assert a.dtype == dtype
        assert_close(a, e, k=max(g.size, 1))
    if empty == "n" or padding == 0:
        # No output pixel at all: the weight and bias gradients are zeros.
        assert not dw.any() and not db.any()


@settings(max_examples=50)
@given(ref.conv_problems())
def test_hypothesis_backward(problem):
    params, activation, seed = problem
    rng = np.random.default_rng(seed)
    case = make_case(rng, **params)
    kw = {k: params[k] for k in ("stride", "padding", "groups", "layout")}
    y, g = forward_and_grad(rng, case, activation=activation, **kw)
    got, expected = run_backward(g, case, y, activation=activation, **kw)
    check_grads(got, expected, case, y, params["groups"])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("activation", [None, "relu6"], ids=str)
@pytest.mark.parametrize("groups,c_in,c_out", [(1, 20, 70), (1, 70, 20), (2, 40, 34)],
                         ids=["short-in", "short-out", "groups"])
def test_nhwc_fused_grad_input_matches_alone(rng, dtype, threads, activation, groups, c_in,
                                            c_out):
    # With NHWC pixels in place, grad input is computed inside the grad-weight
    # sweep; asking for grad input alone takes the plain forward-driver path.
    # Both must give the same bits.
    kw = dict(layout="NHWC", groups=groups, activation=activation, num_threads=threads)
    case = make_case(rng, dtype=dtype, layout="NHWC", n=3, c_in=c_in, c_out=c_out,
                     h=11, w=13, groups=groups, stride=1, padding=0)
    y, g = forward_and_grad(rng, case, **kw)
    fused = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"], output=y, **kw)
    alone = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"], output=y,
                                             output_mask=(True, False, False), **kw)
    assert np.array_equal(fused[0], alone[0])
    expected = ref.backward(g, case["x"], case["weight"], layout="NHWC", groups=groups,
                            activation=activation, output=y)
    assert_close(fused[0], expected[0], k=c_out // groups)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nchw_planes_packed_when_their_stride_crowds_l1(rng, dtype):
    # A 64x64 plane is a multiple of 4 KB apart in both dtypes: its rows all
    # map to one L1 set, so the NCHW driver packs B instead of reading it in
    # place, in the forward pass (K = C_in) and in grad input (K = C_out).
    # No activation: a masked grad output is packed anyway.
    kw = dict(layout="NCHW")
    case = make_case(rng, dtype=dtype, layout="NCHW", n=1, c_in=40, c_out=30, h=64, w=64)
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"], **kw)
    assert_close(y, ref.forward(case["x"], case["weight"], case["bias"], **kw), k=40)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"], **kw)
    want = ref.backward(g, case["x"], case["weight"], **kw)
    for a, b, k in zip(got, want, (30, 64 * 64, 64 * 64)):
        assert_close(a, b, k=k)


@pytest.mark.parametrize("activation", ["relu6", (-0.5, 0.5)], ids=str)
@pytest.mark.parametrize("groups,c_in,c_out", [(1, 40, 14), (1, 14, 40), (2, 22, 34)],
                         ids=["fewer-out", "fewer-in", "groups"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nchw_grad_weight_masked_over_long_planes(rng, dtype, groups, c_in, c_out, activation):
    # Planes of 156 pixels: NCHW grad weight transposes grad output (fewer
    # output channels) or masks and sums it per row tile (fewer input
    # channels) over several 64-pixel blocks, with the activation's mask.
    kw = dict(layout="NCHW", groups=groups, activation=activation)
    case = make_case(rng, dtype=dtype, layout="NCHW", n=2, c_in=c_in, c_out=c_out, h=13,
                     w=12, groups=groups)
    # Outputs of order one, so that both activations keep some and drop some.
    case["weight"] = (case["weight"] / np.sqrt(c_in // groups)).astype(dtype)
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"], **kw)
    lo, hi = (0.0, 6.0) if activation == "relu6" else activation
    # The mask must keep some gradients and drop others.
    assert 0.1 < np.mean((y > lo) & (y < hi)) < 0.9
    g = rng.standard_normal(y.shape).astype(dtype)
    got = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"], output=y, **kw)
    want = ref.backward(g, case["x"], case["weight"], output=y, **kw)
    for a, b, k in zip(got, want, (c_out // groups, 2 * 13 * 12, 2 * 13 * 12)):
        assert_close(a, b, k=k)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("activation", [None, "relu6"], ids=str)
@pytest.mark.parametrize("n,h,w,groups,c_in,c_out", [
    (1, 3, 3, 1, 70, 33), (1, 3, 3, 2, 70, 34), (2, 13, 12, 1, 40, 14)],
    ids=["dw-large", "dw-large-groups", "pixels-many"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nchw_grad_weight_either_side_of_the_swap(rng, dtype, n, h, w, groups, c_in, c_out,
                                                 activation, threads):
    # With fewer output than input channels NCHW grad weight packs grad
    # output and transposes dW^T at the end, unless dW outweighs the pixels
    # (a 3x3 map of 70 -> 33 channels): then it packs the input instead.
    # Channel counts off the 6x16 tile on both sides.
    kw = dict(layout="NCHW", groups=groups, activation=activation, num_threads=threads)
    case = make_case(rng, dtype=dtype, layout="NCHW", n=n, c_in=c_in, c_out=c_out, h=h,
                     w=w, groups=groups)
    case["weight"] = (case["weight"] / np.sqrt(c_in // groups)).astype(dtype)
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"], **kw)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"], output=y, **kw)
    kw.pop("num_threads")
    want = ref.backward(g, case["x"], case["weight"], output=y, **kw)
    for a, b, k in zip(got, want, (c_out // groups, n * h * w, n * h * w)):
        assert_close(a, b, k=k)


# Inputs and grad outputs over 8 MB, 160 deep: the NHWC driver then asks
# for each next row tile's A rows ahead (forward: x; grad input: grad
# output), the NCHW plane driver for each next strip's B rows (forward).
# 10000 pixels an image leave a ragged last tile and strip, whose successor
# the prefetch must not reach for.  A prefetch cannot change a result; this
# checks that the path runs and stays right at that size.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_large_streamed_operands(rng, dtype, layout, threads):
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=160, c_out=168,
                     h=100, w=100)
    assert case["x"].nbytes > 8 * 1024 * 1024
    layer = pwconv.PointwiseConv2d(160, 168, layout=layout, dtype=dtype, num_threads=threads)
    layer.weight = case["weight"]
    layer.bias = case["bias"]
    y = layer(case["x"])
    assert_close(y, ref.forward(case["x"], case["weight"], case["bias"], layout=layout),
                 k=160)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert g.nbytes > 8 * 1024 * 1024
    gx = layer.backward(g)
    expected = ref.backward(g, case["x"], case["weight"], layout=layout)
    assert_close(gx, expected[0], k=168, err_msg="grad_input")
    assert_close(layer.grad_weight, expected[1], k=20000, err_msg="grad_weight")
    assert_close(layer.grad_bias, expected[2], k=20000, err_msg="grad_bias")


# Strided, unpadded NHWC grad input with weights of a megabyte or more runs
# as one dense GEMM over the gathered pixels, scattered back into a zeroed
# grad input (DENSE_GRAD_INPUT_MIN_WEIGHT_BYTES); smaller weights take the
# per-row path (here the float32 s23 case: 0.5 MB).  Both dtypes, groups, a
# clamp, both stride axes, 1 and 2 threads, off-tile channel counts.
@pytest.mark.parametrize("config", [
    dict(c_in=520, c_out=530, groups=1, stride=2, activation=None),
    dict(c_in=1040, c_out=530, groups=2, stride=(1, 2), activation="relu6"),
    dict(c_in=370, c_out=362, groups=1, stride=(2, 3), activation=(-0.5, 0.5)),
], ids=["s2", "g2-s12-relu6", "s23-clamp"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nhwc_strided_grad_input_large_weights(rng, dtype, threads, config):
    c_in, c_out, groups = config["c_in"], config["c_out"], config["groups"]
    kw = dict(stride=config["stride"], groups=groups, layout="NHWC")
    activation = config["activation"]
    case = make_case(rng, dtype=dtype, layout="NHWC", n=2, c_in=c_in, c_out=c_out,
                     h=7, w=9, groups=groups, stride=kw["stride"])
    y, g = forward_and_grad(rng, case, activation=activation, **kw)
    output = y if activation is not None else None
    got = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"],
                                           activation=activation, output=output,
                                           num_threads=threads, **kw)
    expected = ref.backward(g, case["x"], case["weight"], activation=activation,
                            output=output, **kw)
    check_grads(got, expected, case, y, groups)


# NCHW reads B planes in place up to a number of C rows and a depth that
# depend on the kernel's panel width (wider with the AVX-512 tile): these
# shapes sit between the narrow and the wide limits, as C rows and depth
# of the forward pass (300 -> 50) and of grad input (50 -> 300), on a plane
# whose rows a panel reads without crowding L1.  Grad input reads its B in
# place only without an activation mask, hence both.
@pytest.mark.parametrize("activation", [None, "relu6"], ids=str)
@pytest.mark.parametrize("c_in,c_out", [(300, 50), (50, 300), (90, 90)])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nchw_planes_read_in_place_up_to_the_wide_limits(rng, dtype, c_in, c_out,
                                                         activation):
    case = make_case(rng, dtype=dtype, layout="NCHW", n=2, c_in=c_in, c_out=c_out,
                     h=14, w=14, residual=True)
    kw = dict(layout="NCHW", activation=activation)
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                residual=case["residual"], **kw)
    expected = ref.forward(case["x"], case["weight"], case["bias"],
                           residual=case["residual"], **kw)
    assert_close(y, expected, k=c_in)
    g = rng.standard_normal(y.shape).astype(dtype)
    got, expected = run_backward(g, case, y, **kw)
    check_grads(got, expected, case, y, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c_out, kg, groups", [
    (1, 1, 1), (17, 5, 1), (65, 17, 1), (96, 16, 1),
    (530, 520, 1),   # 2.2 MB in float64: the core's transpose
    (60, 80, 3), (1024, 300, 4)])
def test_transposed_weight_matches_numpy(dtype, c_out, kg, groups):
    """NCHW grad input's A operand (each group's weight block transposed),
    made by the core's transpose (numpy's below 1 MB of float64) on ragged
    sizes (the transpose's 4x4 squares and their edges, its 64 x 16 blocks
    and one past them) and groups: exactly numpy's transpose."""
    from pwconv._functional import transpose_weight
    w = np.random.default_rng(c_out * kg).standard_normal((c_out, kg)).astype(dtype)
    before = w.copy()
    got = transpose_weight(w, groups)
    ng = c_out // groups
    expected = w.reshape(groups, ng, kg).transpose(0, 2, 1).reshape(groups * kg, ng)
    assert got.shape == expected.shape and got.dtype == w.dtype
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(w, before)


@pytest.mark.parametrize("w, groups, dst, exc", [
    (np.ones((4, 3), np.int32), 1, np.empty((3, 4), np.int32), TypeError),
    (np.ones((4, 3), np.float32), 1, np.empty((3, 4), np.float64), TypeError),
    (np.ones((4, 3, 1), np.float32), 1, np.empty((3, 4), np.float32), ValueError),
    (np.ones((4, 3), np.float32), 3, np.empty((3, 4), np.float32), ValueError),
    (np.ones((4, 3), np.float32), 0, np.empty((3, 4), np.float32), ValueError),
    (np.ones((4, 3), np.float32), 1, np.empty((3, 3), np.float32), ValueError),
    (np.ones((3, 4), np.float32).T, 1, np.empty((3, 4), np.float32), ValueError),
    (np.ones((4, 3), np.float32), 1, np.empty((4, 3), np.float32).T, ValueError),
])
def test_core_transpose_rejects_bad_arguments(w, groups, dst, exc):
    """The core's weight transpose writes through raw pointers: anything
    but matching C-contiguous float arrays is refused before it runs."""
    from pwconv import _core
    with pytest.raises(exc):
        _core.transpose_weight(w, groups, dst)
