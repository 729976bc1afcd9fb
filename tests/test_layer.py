"""PointwiseConv2d: the layer object against the functional API."""

import copy
import pickle

import numpy as np
import pytest

import pwconv
import reference as ref
from reference import DTYPES, LAYOUTS, assert_close, assert_unchanged, snapshot

CONFIGS = [
    dict(),
    dict(stride=2, padding=1, activation="relu"),
    dict(stride=(1, 2), padding=(0, 1, 2, 1), groups=2, activation="relu6"),
    dict(padding=(1, 0), groups=3, activation=(-0.5, 0.5), bias=False),
]
CONFIG_IDS = ["plain", "s2-p1-relu", "s12-pasym-g2-relu6", "p10-g3-clamp-nobias"]


def make_layer(rng, dtype, layout, config, c_in=12, c_out=18):
    """A layer with random weights, and the functional keyword arguments that
    describe the same convolution."""
    config = dict(config)
    has_bias = config.pop("bias", True)
    layer = pwconv.PointwiseConv2d(c_in, c_out, bias=has_bias, layout=layout,
                                   dtype=dtype, **config)
    groups = config.get("groups", 1)
    assert layer.weight.shape == (c_out, c_in // groups)
    assert layer.weight.dtype == dtype
    if has_bias:
        assert layer.bias.shape == (c_out,) and layer.bias.dtype == dtype
    else:
        assert layer.bias is None
    layer.weight = rng.standard_normal((c_out, c_in // groups)).astype(dtype)
    if has_bias:
        layer.bias = rng.standard_normal(c_out).astype(dtype)
    kw = dict(stride=config.get("stride", 1), padding=config.get("padding", 0),
              groups=groups, layout=layout,
              activation=config.get("activation"))
    return layer, kw


def make_x(rng, dtype, layout, c_in=12, n=2, h=7, w=6):
    return rng.standard_normal(ref.x_shape(n, c_in, h, w, layout)).astype(dtype)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_forward_matches_functional(rng, dtype, layout, config):
    layer, kw = make_layer(rng, dtype, layout, config)
    x = make_x(rng, dtype, layout)
    y_fn = pwconv.pointwise_conv2d(x, layer.weight, layer.bias, **kw)
    residual = rng.standard_normal(y_fn.shape).astype(dtype)
    before = snapshot(x, residual)
    y = layer(x)
    assert_close(y, y_fn, k=12)
    assert_close(y, ref.forward(x, layer.weight, layer.bias, **kw), k=12)
    np.testing.assert_array_equal(layer.forward(x), y)
    y_res = layer.forward(x, residual=residual)
    assert_close(y_res, pwconv.pointwise_conv2d(
        x, layer.weight, layer.bias, residual=residual, **kw), k=12)
    out = np.empty_like(y_fn)
    assert layer(x, residual=residual, out=out) is out
    np.testing.assert_array_equal(out, y_res)
    assert_unchanged([x, residual], before)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_backward_matches_functional(rng, dtype, layout, config):
    layer, kw = make_layer(rng, dtype, layout, config)
    x = make_x(rng, dtype, layout)
    residual_shape = pwconv.pointwise_conv2d(x, layer.weight, **{
        k: v for k, v in kw.items() if k != "activation"}).shape
    residual = rng.standard_normal(residual_shape).astype(dtype)
    y = layer(x, residual=residual)
    g = rng.standard_normal(y.shape).astype(dtype)
    before = snapshot(x, g, y)
    dx = layer.backward(g)
    assert_unchanged([x, g, y], before)
    expected = pwconv.pointwise_conv2d_backward(
        g, x, layer.weight, output=y if kw["activation"] else None, **kw)
    pixels = y.size // 18
    assert_close(dx, expected[0], k=18)
    assert layer.grad_weight.shape == layer.weight.shape
    assert_close(layer.grad_weight, expected[1], k=pixels)
    if layer.bias is not None:
        assert_close(layer.grad_bias, expected[2], k=pixels)
    ref_grads = ref.backward(g, x, layer.weight, output=y, **kw)
    assert_close(dx, ref_grads[0], k=18)
    assert_close(layer.grad_weight, ref_grads[1], k=pixels)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_backward_into_out(rng, dtype, layout, config):
    layer, kw = make_layer(rng, dtype, layout, config)
    x = make_x(rng, dtype, layout)
    y = layer(x)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(g)
    dw, db = layer.grad_weight.copy(), layer.grad_bias
    # NaN everywhere first: pixels no output reads (stride, padding) must be
    # written as zeros, not left as they were.
    for out in (np.full(x.shape, np.nan, dtype), pwconv.empty(x.shape, dtype)):
        out[...] = np.nan
        before = snapshot(x, g, y)
        for _ in range(2):    # the same buffer again, as a training loop does
            assert layer.backward(g, out=out) is out
            np.testing.assert_array_equal(out, dx)
        assert_unchanged([x, g, y], before)
        np.testing.assert_array_equal(layer.grad_weight, dw)
        if db is not None:
            np.testing.assert_array_equal(layer.grad_bias, db)
    assert_close(out, ref.backward(g, x, layer.weight, output=y, **kw)[0], k=18)


def test_backward_out_is_validated(rng):
    layer = pwconv.PointwiseConv2d(6, 6)
    x = rng.standard_normal((1, 6, 3, 3)).astype(np.float32)
    y = layer(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    read_only = np.full(x.shape, 7.0, np.float32)
    read_only.flags.writeable = False
    bad = [(np.full((1, 6, 3, 2), 7.0, np.float32), ValueError, r"\bout\b.*input shape"),
           (np.full(x.shape, 7.0, np.float64), TypeError, r"\bout\b"),
           (np.full((1, 6, 3, 6), 7.0, np.float32)[..., ::2], ValueError,
            r"\bout\b.*contiguous"),
           (read_only, ValueError, r"\bout\b.*writeable"),
           # What the pass reads (x, grad_output, the saved output: all of
           # x's shape here) may not be written while it runs.
           (x, ValueError, r"\bout\b.*\bx\b"),
           (g, ValueError, r"\bout\b.*\bgrad_output\b"),
           (y, ValueError, r"\bout\b.*\boutput\b"),
           ([[7.0]], TypeError, r"\bout\b")]
    for arr, exc, pattern in bad:
        kept = arr.copy()
        with pytest.raises(exc, match=pattern):
            layer.backward(g, out=arr)
        np.testing.assert_array_equal(arr, kept)
    assert layer.grad_weight is None     # refused before any pass ran
    # The weights' own memory (reachable through the read-only view's base):
    # 6 x 6 weights are as many values as a 1 x 6 x 2 x 3 input.
    x_small = rng.standard_normal((1, 6, 2, 3)).astype(np.float32)
    g_small = rng.standard_normal(layer(x_small).shape).astype(np.float32)
    weight_memory = layer.weight.base.reshape(x_small.shape)
    kept = weight_memory.copy()
    with pytest.raises(ValueError, match=r"\bout\b.*\bweight\b"):
        layer.backward(g_small, out=weight_memory)
    np.testing.assert_array_equal(weight_memory, kept)


def test_backward_uses_the_last_forward(rng):
    layer, kw = make_layer(rng, np.float64, "NCHW", CONFIGS[1])
    x1, x2 = make_x(rng, np.float64, "NCHW"), make_x(rng, np.float64, "NCHW")
    layer(x1)
    y2 = layer(x2)
    g = rng.standard_normal(y2.shape)
    dx = layer.backward(g)
    expected = pwconv.pointwise_conv2d_backward(g, x2, layer.weight, output=y2,
                                                **kw)
    assert_close(dx, expected[0], k=18)
    assert_close(layer.grad_weight, expected[1], k=y2.size // 18)


def test_backward_before_forward_raises(rng):
    layer = pwconv.PointwiseConv2d(4, 4)
    with pytest.raises(Exception):
        layer.backward(np.ones((1, 4, 2, 2), np.float32))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_weight_and_bias_assignment_repacks(rng, layout):
    layer, kw = make_layer(rng, np.float32, layout, CONFIGS[2])
    x = make_x(rng, np.float32, layout)
    y_old = layer(x)
    w_new = rng.standard_normal(layer.weight.shape).astype(np.float32)
    layer.weight = w_new
    y_w = layer(x)
    assert not np.allclose(y_w, y_old)
    assert_close(y_w, ref.forward(x, w_new, layer.bias, **kw), k=6)
    np.testing.assert_array_equal(layer.weight, w_new)
    b_new = rng.standard_normal(18).astype(np.float32)
    layer.bias = b_new
    y_b = layer(x)
    assert_close(y_b, ref.forward(x, w_new, b_new, **kw), k=6)
    np.testing.assert_array_equal(layer.bias, b_new)
    # The layer keeps its own copy: writing to the arrays it was given later
    # must not leak into its packed weights.
    w_new[...] = 0
    b_new[...] = 0
    assert_close(layer(x), y_b, k=6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("stride", [1, 2])
def test_backward_after_weight_assignment(rng, dtype, layout, stride):
    """A training loop assigns new weights every step: grad input must use
    them, not the packed or transposed copy made for the old ones (NCHW
    grad input reads the weight transposed; stride 2 always takes that
    path; 24 outputs leave a ragged panel for the float32 kernels)."""
    layer = pwconv.PointwiseConv2d(40, 24, stride=stride, layout=layout, dtype=dtype,
                                   num_threads=1, seed=3)
    x = np.ascontiguousarray(ref.from_nchw(rng.standard_normal((2, 40, 9, 9)), layout), dtype)
    for step in range(3):
        y = layer(x)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx = layer.backward(gy)
        e_gx, e_gw, e_gb = ref.backward(gy, x, layer.weight, stride=stride, layout=layout)
        assert_close(gx, e_gx, k=24)
        assert_close(layer.grad_weight, e_gw, k=2 * 9 * 9)
        assert_close(layer.grad_bias, e_gb, k=2 * 9 * 9)
        layer.weight = layer.weight - 0.5 * layer.grad_weight


def test_assignment_of_views(rng):
    layer = pwconv.PointwiseConv2d(6, 4, dtype=np.float64)
    w = rng.standard_normal((6, 4)).T  # a transposed, non-contiguous view
    layer.weight = w
    b = rng.standard_normal(8)[::2]
    layer.bias = b
    x = make_x(rng, np.float64, "NCHW", c_in=6)
    assert_close(layer(x), ref.forward(x, w, b), k=6)


def test_assignment_is_validated(rng):
    layer = pwconv.PointwiseConv2d(6, 4, groups=2)
    weight, bias = layer.weight.copy(), layer.bias.copy()
    with pytest.raises(ValueError, match=r"\bweight\b"):
        layer.weight = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match=r"\bweight\b"):
        layer.weight = np.ones((4, 3, 3, 3), np.float32)
    with pytest.raises(TypeError, match=r"\bweight\b"):
        layer.weight = np.ones((4, 3), np.float64)
    with pytest.raises(TypeError, match=r"\bweight\b"):
        layer.weight = np.ones((4, 3), np.int32)
    with pytest.raises(TypeError, match=r"\bweight\b"):
        layer.weight = [[1.0] * 3] * 4
    with pytest.raises(ValueError, match=r"\bbias\b"):
        layer.bias = np.ones(5, np.float32)
    with pytest.raises(TypeError, match=r"\bbias\b"):
        layer.bias = np.ones(4, np.float64)
    # A refused assignment leaves the layer as it was.
    np.testing.assert_array_equal(layer.weight, weight)
    np.testing.assert_array_equal(layer.bias, bias)


@pytest.mark.parametrize("args, kwargs, exc, name", [
    ((6, 4), dict(groups=4), ValueError, "groups"),
    ((6, 4), dict(groups=3), ValueError, "groups"),
    ((6, 4), dict(groups=0), ValueError, "groups"),
    ((-1, 4), dict(), ValueError, "in_channels"),
    ((6, -4), dict(), ValueError, "out_channels"),
    ((6, 4), dict(dtype=np.int32), TypeError, "dtype"),
    ((6, 4), dict(dtype=np.float16), TypeError, "dtype"),
    ((6, 4), dict(stride=0), ValueError, "stride"),
    ((6, 4), dict(padding=-1), ValueError, "padding"),
    ((6, 4), dict(padding=(1, 1, 1)), ValueError, "padding"),
    ((6, 4), dict(layout="NWHC"), ValueError, "layout"),
    ((6, 4), dict(activation="tanh"), ValueError, "activation"),
    ((6, 4), dict(activation=(2.0, 1.0)), ValueError, "activation"),
    ((6, 4), dict(num_threads=0), ValueError, "num_threads"),
], ids=["groups-cin", "groups-cout", "groups-0", "in-neg", "out-neg",
        "dtype-int", "dtype-f16", "stride-0", "padding-neg", "padding-len3",
        "layout", "activation", "clamp-order", "num-threads-0"])
def test_bad_construction(args, kwargs, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        pwconv.PointwiseConv2d(*args, **kwargs)


def test_bad_call_arguments(rng):
    layer = pwconv.PointwiseConv2d(6, 4)
    with pytest.raises(ValueError, match=r"\b(x|weight)\b"):
        layer(np.ones((1, 5, 3, 3), np.float32))
    with pytest.raises(TypeError, match=r"\bx\b"):
        layer(np.ones((1, 6, 3, 3), np.float64))
    with pytest.raises(ValueError, match=r"\bresidual\b"):
        layer(np.ones((1, 6, 3, 3), np.float32),
              residual=np.ones((1, 4, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"\bout\b"):
        layer(np.ones((1, 6, 3, 3), np.float32),
              out=np.ones((1, 4, 3, 2), np.float32))
    layer(np.ones((1, 6, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"\bgrad_output\b"):
        layer.backward(np.ones((1, 4, 3, 2), np.float32))


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_pickle_round_trip(rng, dtype, layout, config):
    layer, kw = make_layer(rng, dtype, layout, config)
    x = make_x(rng, dtype, layout)
    y = layer(x)
    for clone in (pickle.loads(pickle.dumps(layer)),
                  pickle.loads(pickle.dumps(layer, protocol=2)),
                  copy.deepcopy(layer)):
        assert type(clone) is pwconv.PointwiseConv2d
        np.testing.assert_array_equal(clone.weight, layer.weight)
        if layer.bias is None:
            assert clone.bias is None
        else:
            np.testing.assert_array_equal(clone.bias, layer.bias)
        y_clone = clone(x)
        assert y_clone.tobytes() == y.tobytes()
        g = np.ones_like(y)
        assert clone.backward(g).tobytes() == layer.backward(g).tobytes()


def test_pickle_after_assignment(rng):
    layer = pwconv.PointwiseConv2d(5, 7, padding=1, activation="relu6")
    layer.weight = rng.standard_normal((7, 5)).astype(np.float32)
    layer.bias = rng.standard_normal(7).astype(np.float32)
    clone = pickle.loads(pickle.dumps(layer))
    x = make_x(rng, np.float32, "NCHW", c_in=5)
    assert clone(x).tobytes() == layer(x).tobytes()
    # The clone is independent: changing one leaves the other alone.
    clone.weight = np.zeros((7, 5), np.float32)
    assert not np.array_equal(clone(x), layer(x))


# NCHW layers run planes of at most 64 pixels through pixel tiles (inputs
# regrouped per block, output transposed back); these shapes cover ragged
# tiles and panels, one pixel, the largest such plane and the first past it,
# weights beyond an L2 block (one block per image), and thread splits.
PIXEL_SHAPES = [
    # (n, c_in, c_out, h, w)
    (1, 5, 3, 1, 1),
    (2, 17, 23, 7, 7),
    (1, 40, 9, 8, 8),
    (1, 33, 41, 5, 13),      # 65 pixels: the plane driver again
    (3, 300, 250, 3, 5),     # 300 KB of float32 weights
    (1, 96, 200, 7, 7),
]


@pytest.mark.parametrize("shape", PIXEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nchw_small_planes(rng, dtype, shape, threads):
    n, c_in, c_out, h, w = shape
    case = ref.make_case(rng, dtype=dtype, layout="NCHW", n=n, c_in=c_in,
                         c_out=c_out, h=h, w=w, residual=True)
    before = snapshot(case["x"], case["residual"], case["weight"], case["bias"])
    for act in (None, "relu6", (-0.5, 0.25)):
        layer = pwconv.PointwiseConv2d(c_in, c_out, layout="NCHW", dtype=dtype,
                                       activation=act, num_threads=threads)
        layer.weight = case["weight"]
        layer.bias = case["bias"]
        for residual in (None, case["residual"]):
            y = layer(case["x"], residual=residual)
            expected = ref.forward(case["x"], case["weight"], case["bias"],
                                   residual=residual, activation=act)
            assert_close(y, expected, k=c_in)
            np.testing.assert_array_equal(layer(case["x"], residual=residual), y)
        in_place = case["residual"].copy()
        layer(case["x"], residual=in_place, out=in_place)
        np.testing.assert_array_equal(in_place, y)
    assert_unchanged([case["x"], case["residual"], case["weight"], case["bias"]], before)


# Larger NCHW planes whose last panel would hold only a few pixels (a
# quarter of the kernel's panel width or less: 14x14 = 6 x 32 + 4) leave
# those pixels of every plane to pixel tiles, in the plane driver's team.
# Panel widths differ by kernel (32, 16 or 8 floats), so these tails are
# 1-4 pixels on every path: 10x10, 14x14, 11x6 (66), 9x11 (99); a grouped
# layer, many output panels (inputs regrouped), residual in its own buffer
# and in place.
PLANE_TAIL_SHAPES = [
    # (n, c_in, c_out, groups, h, w)
    (2, 33, 70, 1, 10, 10),
    (1, 64, 400, 1, 14, 14),
    (1, 130, 260, 2, 14, 14),
    (1, 20, 40, 1, 11, 6),
    (3, 9, 5, 1, 9, 11),
]


def check_nchw_layer_across_threads(rng, dtype, n, c_in, c_out, groups, h, w):
    """An NCHW layer at 1-3 threads, with no residual, its own and in
    place, against the reference and bitwise against itself."""
    case = ref.make_case(rng, dtype=dtype, layout="NCHW", n=n, c_in=c_in,
                         c_out=c_out, h=h, w=w, groups=groups, residual=True)
    before = snapshot(case["x"], case["residual"], case["weight"], case["bias"])
    for act in (None, "relu6"):
        results = []
        for threads in (1, 2, 3):
            layer = pwconv.PointwiseConv2d(c_in, c_out, groups=groups, layout="NCHW",
                                           dtype=dtype, activation=act, num_threads=threads)
            layer.weight = case["weight"]
            layer.bias = case["bias"]
            for residual in (None, case["residual"]):
                y = layer(case["x"], residual=residual)
                expected = ref.forward(case["x"], case["weight"], case["bias"],
                                       groups=groups, residual=residual, activation=act)
                assert_close(y, expected, k=c_in // groups)
                results.append(y)
            in_place = case["residual"].copy()
            layer(case["x"], residual=in_place, out=in_place)
            np.testing.assert_array_equal(in_place, y)
        # Every value is one kernel's whole dot product, whichever thread
        # computes it: threads 2 and 3 match thread 1 bit for bit.
        for i in range(2, len(results)):
            np.testing.assert_array_equal(results[i], results[i % 2])
    assert_unchanged([case["x"], case["residual"], case["weight"], case["bias"]], before)


# NCHW planes whose input the plane driver packs (more output channels
# than it reads in place for) get the packed panels copied by each group's
# first row tile as it reads them in place, on the kernels that can: groups
# whose first tile in a thread's piece is short pack them first instead
# (50 rows a group, cut between threads), several strips, batches, tails.
COPIED_B_SHAPES = [
    # (n, c_in, c_out, groups, h, w)
    (1, 24, 144, 1, 33, 30),
    (2, 42, 150, 3, 10, 10),
    (1, 64, 200, 1, 9, 11),
    (3, 16, 112, 1, 12, 12),
]


@pytest.mark.parametrize("shape", PLANE_TAIL_SHAPES + COPIED_B_SHAPES,
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nchw_plane_driver_across_threads(rng, dtype, shape):
    check_nchw_layer_across_threads(rng, dtype, *shape)


# Larger NCHW planes of layers that cut the channels by 4 or more, where the
# plane driver would pack the input (more output channels than it reads in
# place, a depth past its limit, or plane rows that crowd a few L1 sets),
# run wholly on pixel tiles: 400->100 at 9x9, 600->40 at 10x10, 128->32 at
# 32x32 (4 KB plane rows) and at 4x12x12; every kernel path's panel width.
REDUCE_PIXEL_SHAPES = [
    # (n, c_in, c_out, h, w)
    (1, 400, 100, 9, 9),
    (2, 600, 40, 10, 10),
    (1, 128, 32, 32, 32),
    (4, 128, 32, 12, 12),
]


@pytest.mark.parametrize("shape", REDUCE_PIXEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nchw_reducing_layers_on_pixel_tiles(rng, dtype, shape):
    n, c_in, c_out, h, w = shape
    check_nchw_layer_across_threads(rng, dtype, n, c_in, c_out, 1, h, w)


# Grouped NCHW layers whose groups are wide enough (64 channels in and out)
# take the pixel tiles too, one group's planes at a time; narrower groups
# stay on the plane driver.  Off-tile channel counts per group (65, 70, 130),
# ragged planes, batches, weights past an L2 block, thread splits.
GROUPED_PIXEL_SHAPES = [
    # (n, c_in, c_out, groups, h, w)
    (1, 195, 210, 3, 7, 7),
    (3, 130, 260, 2, 5, 9),
    (2, 256, 128, 2, 8, 8),
    (1, 64, 64, 8, 7, 7),        # 8 channels a group: the plane driver
    (1, 768, 960, 3, 7, 7),      # 320 x 256 floats a group: past an L2 block
]


@pytest.mark.parametrize("shape", GROUPED_PIXEL_SHAPES,
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nchw_grouped_small_planes(rng, dtype, shape, threads):
    n, c_in, c_out, groups, h, w = shape
    case = ref.make_case(rng, dtype=dtype, layout="NCHW", n=n, c_in=c_in,
                         c_out=c_out, h=h, w=w, groups=groups, residual=True)
    before = snapshot(case["x"], case["residual"], case["weight"], case["bias"])
    k = c_in // groups
    for act in (None, "relu6"):
        layer = pwconv.PointwiseConv2d(c_in, c_out, groups=groups, layout="NCHW",
                                       dtype=dtype, activation=act, num_threads=threads)
        layer.weight = case["weight"]
        layer.bias = case["bias"]
        y = layer(case["x"], residual=case["residual"])
        expected = ref.forward(case["x"], case["weight"], case["bias"], groups=groups,
                               residual=case["residual"], activation=act)
        assert_close(y, expected, k=k)
        g = ref.grad_output_like(rng, y)
        dx = layer.backward(g)
        ref_dx, ref_dw, ref_db = ref.backward(g, case["x"], case["weight"], groups=groups,
                                              activation=act, output=y)
        assert_close(dx, ref_dx, k=c_out // groups)
        assert_close(layer.grad_weight, ref_dw, k=n * h * w)
        assert_close(layer.grad_bias, ref_db, k=n * h * w)
    assert_unchanged([case["x"], case["residual"], case["weight"], case["bias"]], before)


# Row runs one past whole tiles (8 rows on the 7-row AVX-512 tile, 7 on the
# 6-row AVX2 one) end in 4 + (MR - 3) rows rather than MR + 1 (see
# tile_rows).  Rows are output channels (NCHW forward), input channels
# (NCHW grad input, also inside the grad-weight sweep) and pixels (NHWC),
# per group; 64 channels is 9 x 7 + 1, 162 pixels 23 x 7 + 1.
ONE_PAST_TILE_SHAPES = [
    # (n, c_in, c_out, groups, h, w)
    (1, 8, 8, 1, 10, 10),
    (2, 15, 15, 1, 9, 9),
    (1, 7, 7, 1, 12, 12),
    (1, 16, 16, 2, 9, 9),
    (1, 64, 64, 1, 10, 10),
    (1, 33, 20, 1, 1, 7),
    (1, 24, 40, 1, 2, 4),
]


@pytest.mark.parametrize("shape", ONE_PAST_TILE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_one_row_past_whole_tiles(rng, dtype, layout, shape):
    n, c_in, c_out, groups, h, w = shape
    case = ref.make_case(rng, dtype=dtype, layout=layout, n=n, c_in=c_in, c_out=c_out,
                         h=h, w=w, groups=groups, residual=True)
    before = snapshot(case["x"], case["residual"], case["weight"], case["bias"])
    g = ref.grad_output_like(rng, case["residual"])
    outputs = []
    for threads in (1, 2, 3):
        layer = pwconv.PointwiseConv2d(c_in, c_out, groups=groups, layout=layout,
                                       dtype=dtype, activation="relu6", num_threads=threads)
        layer.weight = case["weight"]
        layer.bias = case["bias"]
        y = layer(case["x"], residual=case["residual"])
        expected = ref.forward(case["x"], case["weight"], case["bias"], groups=groups,
                               layout=layout, residual=case["residual"], activation="relu6")
        assert_close(y, expected, k=c_in // groups)
        outputs.append(y)
        dx = layer.backward(g)
        ref_dx, ref_dw, ref_db = ref.backward(g, case["x"], case["weight"], groups=groups,
                                              layout=layout, activation="relu6", output=y)
        assert_close(dx, ref_dx, k=c_out // groups)
        assert_close(layer.grad_weight, ref_dw, k=n * h * w)
        assert_close(layer.grad_bias, ref_db, k=n * h * w)
    for y in outputs[1:]:
        np.testing.assert_array_equal(y, outputs[0])
    assert_unchanged([case["x"], case["residual"], case["weight"], case["bias"]], before)
