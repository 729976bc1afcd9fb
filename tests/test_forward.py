"""pointwise_conv2d against the float64 reference."""

import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pwconv
import reference as ref
from reference import (ACTIVATIONS, DTYPES, EDGE_SHAPES, LAYOUTS, VIEW_KINDS,
                       assert_close, assert_unchanged, grad_output_like, make_case,
                       restride, shape_id, snapshot)

STRIDES = (1, 2, (1, 2))
PADDINGS = (0, 1, (1, 0), (0, 1, 2, 1))


def run_forward(case, **kw):
    """pwconv's result and the reference's, after checking no input changed."""
    arrays = [case["x"], case["weight"], case["bias"], case["residual"]]
    before = snapshot(*arrays)
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                residual=case["residual"], **kw)
    assert_unchanged(arrays, before)
    expected = ref.forward(case["x"], case["weight"], case["bias"],
                           residual=case["residual"], **kw)
    return y, expected


# 2 x 2 x 3 x 4 x 2 x 2 x 4 x 2 = 1536 cases: small enough to run in full.
@pytest.mark.parametrize("residual", [False, True], ids=["nores", "res"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("groups", [1, 2], ids=lambda g: f"g{g}")
@pytest.mark.parametrize("padding", PADDINGS, ids=lambda p: f"p{p}")
@pytest.mark.parametrize("stride", STRIDES, ids=lambda s: f"s{s}")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_grid(rng, dtype, layout, stride, padding, groups, bias, activation,
              residual):
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=6, c_out=10,
                     h=5, w=7, groups=groups, stride=stride, padding=padding,
                     bias=bias, residual=residual)
    y, expected = run_forward(case, stride=stride, padding=padding,
                              groups=groups, layout=layout,
                              activation=activation)
    assert y.dtype == dtype
    assert_close(y, expected, k=6 // groups)


@pytest.mark.parametrize("config", [
    dict(),
    dict(stride=2, padding=1, activation="relu6", residual=True),
    dict(stride=(2, 1), padding=(0, 1, 1, 0), activation=(-1.0, 2.0)),
], ids=["plain", "s2-p1-relu6-res", "s21-pasym-clamp"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=shape_id)
def test_edge_shapes(rng, shape, dtype, layout, config):
    n, c_in, c_out, h, w, groups = shape
    config = dict(config)
    residual = config.pop("residual", False)
    case = make_case(rng, dtype=dtype, layout=layout, n=n, c_in=c_in,
                     c_out=c_out, h=h, w=w, groups=groups,
                     stride=config.get("stride", 1),
                     padding=config.get("padding", 0), residual=residual)
    y, expected = run_forward(case, groups=groups, layout=layout, **config)
    assert_close(y, expected, k=c_in // groups)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_weight_4d(rng, dtype, layout):
    case = make_case(rng, dtype=dtype, layout=layout, c_in=6, c_out=4,
                     groups=2, weight_4d=True)
    assert case["weight"].shape == (4, 3, 1, 1)
    y4, expected = run_forward(case, groups=2, layout=layout, padding=1)
    y2 = pwconv.pointwise_conv2d(case["x"], case["weight"][:, :, 0, 0],
                                 case["bias"], groups=2, layout=layout,
                                 padding=1)
    assert_close(y4, expected, k=3)
    np.testing.assert_array_equal(y4, y2)


def test_default_arguments(rng):
    # Only x and weight given: NCHW, stride 1, no padding, no bias.
    x = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)
    w = rng.standard_normal((7, 5)).astype(np.float32)
    y = pwconv.pointwise_conv2d(x, w)
    assert y.shape == (2, 7, 3, 4)
    assert_close(y, ref.forward(x, w), k=5)


def test_activation_clamp_accepts_list_and_equal_bounds(rng):
    case = make_case(rng, c_in=5, c_out=4)
    y, expected = run_forward(case, activation=(0.25, 0.25))
    assert_close(y, expected, k=5)
    assert np.all(y == np.float32(0.25))


# --------------------------------------------------------------------------
# Inputs with any strides.


@pytest.mark.parametrize("which", ["x", "weight", "bias", "residual", "all"])
@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_strided_inputs(rng, dtype, layout, kind, which):
    kw = dict(stride=(1, 2), padding=(1, 0, 0, 1), groups=1, layout=layout,
              activation="relu")
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=19, c_out=21,
                     h=6, w=9, stride=kw["stride"], padding=kw["padding"],
                     residual=True)
    y_contig, expected = run_forward(case, **kw)
    viewed = dict(case)
    for name in (case if which == "all" else [which]):
        viewed[name] = restride(case[name], kind, layout)
        if kind in ("slice", "reversed", "transposed", "channel_reversed") \
                and viewed[name].ndim > 1:
            assert not viewed[name].flags.c_contiguous
    y, _ = run_forward(viewed, **kw)
    assert_close(y, y_contig, k=19)
    assert_close(y, expected, k=19)


def test_broadcast_zero_stride_input(rng):
    # np.broadcast_to gives read-only arrays with zero strides.
    row = rng.standard_normal((1, 6, 1, 5)).astype(np.float32)
    x = np.broadcast_to(row, (3, 6, 4, 5))
    w = np.broadcast_to(rng.standard_normal((1, 6)).astype(np.float32), (4, 6))
    b = np.broadcast_to(np.float32(0.5), (4,))
    y = pwconv.pointwise_conv2d(x, w, b, padding=1)
    assert_close(y, ref.forward(x, w, b, padding=1), k=6)


def test_unaligned_inputs_subprocess(tmp_path):
    # Arrays whose data pointer is not even element-aligned; run in a child so
    # that a kernel doing aligned loads fails this test instead of killing the
    # whole session.
    script = textwrap.dedent("""
        import numpy as np, pwconv, reference as ref
        def unaligned(a):
            raw = np.zeros(a.nbytes + 1, np.uint8)
            u = np.frombuffer(raw.data, a.dtype, a.size, offset=1)
            u = u.reshape(a.shape)
            u[...] = a
            assert not u.flags.aligned
            return u
        rng = np.random.default_rng(0)
        for dtype in (np.float32, np.float64):
            for layout in ("NCHW", "NHWC"):
                x = rng.standard_normal((2, 17, 5, 6)).astype(dtype)
                if layout == "NHWC":
                    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                w = rng.standard_normal((19, 17)).astype(dtype)
                b = rng.standard_normal(19).astype(dtype)
                kw = dict(layout=layout, padding=1)
                y = pwconv.pointwise_conv2d(unaligned(x), unaligned(w),
                                            unaligned(b), **kw)
                tol = 1e-3 if dtype == np.float32 else 1e-9
                np.testing.assert_allclose(
                    y, ref.forward(x, w, b, **kw), rtol=tol, atol=tol)
                g = rng.standard_normal(y.shape).astype(dtype)
                got = pwconv.pointwise_conv2d_backward(
                    unaligned(g), unaligned(x), unaligned(w), **kw)
                for a, e in zip(got, ref.backward(g, x, w, **kw)):
                    np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
        print("OK")
    """)
    proc = ref.run_python(script, tmp_path)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr


# --------------------------------------------------------------------------
# Zero-size inputs and out=.


@pytest.mark.parametrize("padding", [0, 1], ids=["p0", "p1"])
@pytest.mark.parametrize("empty", ["n", "h", "w"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_zero_size(rng, dtype, layout, empty, padding):
    dims = dict(n=2, h=3, w=4)
    dims[empty] = 0
    case = make_case(rng, dtype=dtype, layout=layout, c_in=5, c_out=6,
                     padding=padding, residual=True, **dims)
    y, expected = run_forward(case, layout=layout, padding=padding,
                              activation="relu")
    ho, wo = ref.output_hw(dims["h"], dims["w"], padding=padding)
    assert y.shape == ref.x_shape(dims["n"], 6, ho, wo, layout)
    assert y.dtype == dtype
    # With padding, an empty H or W still has padded rows and columns, which
    # hold act(bias + residual).
    assert_close(y, expected, k=5)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_out(rng, dtype, layout):
    case = make_case(rng, dtype=dtype, layout=layout, c_in=9, c_out=11,
                     stride=2, padding=(0, 1), residual=True)
    kw = dict(stride=2, padding=(0, 1), layout=layout, activation="relu6")
    expected = ref.forward(case["x"], case["weight"], case["bias"],
                           residual=case["residual"], **kw)
    out = np.full(expected.shape, np.nan, dtype)
    before = snapshot(case["x"], case["weight"], case["bias"],
                      case["residual"])
    got = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                  residual=case["residual"], out=out, **kw)
    assert got is out
    assert_unchanged([case["x"], case["weight"], case["bias"],
                      case["residual"]], before)
    assert_close(out, expected, k=9)
    # A second call overwrites out completely, whatever it held.
    out[...] = 1e30
    pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                            residual=case["residual"], out=out, **kw)
    assert_close(out, expected, k=9)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("config", [
    dict(c_in=9, c_out=35, activation="relu6"),
    dict(c_in=9, c_out=35, stride=2, padding=(0, 1), activation=(-0.5, 0.5)),
    dict(c_in=12, c_out=20, stride=2, groups=2),
    dict(c_in=2 * 2048 + 5, c_out=21, activation="relu6"),   # depth blocks
], ids=["relu6", "s2-pad-clamp", "s2-groups", "deep"])
@pytest.mark.parametrize("layer", [False, True], ids=["functional", "layer"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_out_may_be_the_residual(rng, dtype, layout, layer, config, threads):
    # A skip connection's buffer can take the sum in place: out=residual.
    config = dict(config)
    c_in, c_out = config.pop("c_in"), config.pop("c_out")
    kw = dict(config, layout=layout, num_threads=threads)
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=c_in, c_out=c_out,
                     h=6, w=5, groups=kw.get("groups", 1), stride=kw.get("stride", 1),
                     padding=kw.get("padding", 0), residual=True)
    case["weight"] = (case["weight"] / np.sqrt(c_in / 8)).astype(dtype)
    r = case["residual"]
    expected = ref.forward(case["x"], case["weight"], case["bias"], residual=r.copy(),
                           **{k: v for k, v in kw.items() if k != "num_threads"})
    if layer:
        conv = pwconv.PointwiseConv2d(c_in, c_out, **kw, dtype=dtype)
        conv.weight, conv.bias = case["weight"], case["bias"]
        got = conv(case["x"], residual=r, out=r)
    else:
        got = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                      residual=r, out=r, **kw)
    assert got is r
    assert_close(r, expected, k=c_in)
    # The residual must matter, or a kernel that skipped it would pass.
    plain = ref.forward(case["x"], case["weight"], case["bias"],
                        **{k: v for k, v in kw.items() if k != "num_threads"})
    assert not np.allclose(expected, plain)


@pytest.mark.parametrize("in_place", [False, True], ids=["own-buffer", "in-place"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_residual_larger_than_l2_block(rng, dtype, layout, in_place):
    # Past 1 MB of residual the NHWC driver asks for each next row tile's
    # residual rows into L2 ahead of the kernel (PREFETCH_R_MIN_BYTES; 6400
    # pixels leave a ragged last tile, whose successor it must not reach
    # for); the NCHW driver leaves that to the kernel.  A prefetch cannot
    # change a result: this checks the path runs and stays right, with the
    # output streamed (own buffer) or formed in place.
    n, h, w, c_in, c_out = 1, 64, 100, 12, 44
    case = make_case(rng, dtype=dtype, layout=layout, n=n, c_in=c_in, c_out=c_out,
                     h=h, w=w, residual=True)
    r = case["residual"]
    assert r.nbytes > 1024 * 1024
    expected = ref.forward(case["x"], case["weight"], case["bias"], residual=r.copy(),
                           layout=layout, activation="relu6")
    out = r if in_place else np.empty_like(r)
    got = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"], residual=r,
                                  out=out, layout=layout, activation="relu6")
    assert got is out
    assert_close(got, expected, k=c_in)


def test_out_zero_size(rng):
    x = np.zeros((0, 3, 4, 4), np.float32)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    out = np.empty((0, 5, 4, 4), np.float32)
    assert pwconv.pointwise_conv2d(x, w, out=out) is out


# --------------------------------------------------------------------------
# Random shapes and parameters.

@settings(max_examples=80)
@given(ref.conv_problems())
def test_hypothesis_forward(problem):
    params, activation, seed = problem
    case = make_case(np.random.default_rng(seed), **params)
    y, expected = run_forward(case, stride=params["stride"],
                              padding=params["padding"],
                              groups=params["groups"], layout=params["layout"],
                              activation=activation)
    assert_close(y, expected, k=params["c_in"] // params["groups"])


@settings(max_examples=40)
@given(ref.conv_problems(), st.sampled_from(VIEW_KINDS),
       st.sampled_from(VIEW_KINDS))
def test_hypothesis_strided_views(problem, x_kind, other_kind):
    params, activation, seed = problem
    case = make_case(np.random.default_rng(seed), **params)
    kw = dict(stride=params["stride"], padding=params["padding"],
              groups=params["groups"], layout=params["layout"],
              activation=activation)
    y_contig, expected = run_forward(case, **kw)
    viewed = {name: restride(a, x_kind if name == "x" else other_kind,
                             params["layout"]) for name, a in case.items()}
    y, _ = run_forward(viewed, **kw)
    k = params["c_in"] // params["groups"]
    assert_close(y, y_contig, k=k)
    assert_close(y, expected, k=k)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("padding", [0, 1, (0, 1, 0, 1), (1, 0, 0, 0)])
@pytest.mark.parametrize("stride", [1, 3])
def test_single_pixel_maps_in_both_layouts(padding, stride, dtype):
    # A one-pixel NCHW map is routed through the NHWC kernels; that is only
    # right when its output pixel reads its input pixel, not padding.
    rng = np.random.default_rng(7)
    for layout in ("NCHW", "NHWC"):
        shape = (3, 5, 1, 1) if layout == "NCHW" else (3, 1, 1, 5)
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal((4, 5)).astype(dtype)
        b = rng.standard_normal(4).astype(dtype)
        y = pwconv.pointwise_conv2d(x, w, b, stride=stride, padding=padding, layout=layout)
        expected = ref.forward(x, w, b, stride=stride, padding=padding, layout=layout)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
        g = rng.standard_normal(y.shape).astype(dtype)
        gx, gw, gb = pwconv.pointwise_conv2d_backward(g, x, w, stride=stride,
                                                      padding=padding, layout=layout)
        rx, rw, rb = ref.backward(g, x, w, stride=stride, padding=padding,
                                        layout=layout)
        np.testing.assert_allclose(gx, rx, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gw, rw, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gb, rb, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("deep", ["c_in", "c_out"])
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 0), (1, 1)], ids=["s1", "s2", "p1"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_deeper_than_one_depth_block(rng, dtype, layout, stride, padding, deep):
    # Past 8 KB of one pixel's channels (2048 floats, 1024 doubles) a kernel
    # call is cut into depth blocks: bias and residual go in with the first,
    # the clamp with the last.  Forward is deep in C_in, grad input in C_out.
    depth = 2 * 8192 // np.dtype(dtype).itemsize + 5
    c_in, c_out = (depth, 21) if deep == "c_in" else (21, depth)
    kw = dict(stride=stride, padding=padding, layout=layout, activation="relu6")
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=c_in, c_out=c_out, h=5,
                     w=4, stride=stride, padding=padding, residual=True)
    # Outputs of order one, so that relu6 clamps some and passes others.
    case["weight"] = (case["weight"] / np.sqrt(c_in)).astype(dtype)
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                residual=case["residual"], **kw)
    expected = ref.forward(case["x"], case["weight"], case["bias"],
                           residual=case["residual"], **kw)
    assert_close(y, expected, k=c_in)
    # The clamp must bite on some outputs and pass others, or a clamp
    # applied to a partial sum would go unnoticed.
    assert 0.1 < np.mean((expected > 0) & (expected < 6)) < 0.9
    g = rng.standard_normal(y.shape).astype(dtype)
    got = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"], output=y, **kw)
    want = ref.backward(g, case["x"], case["weight"], output=y, **kw)
    for a, b, k in zip(got, want, (c_out, 2 * 5 * 4, 2 * 5 * 4)):
        assert_close(a, b, k=k)


# The clamp keeps NaN (a NaN pre-activation stays NaN, as np.clip and torch's
# hardtanh leave it) on every path that clamps: the kernels' epilogue, and
# the NCHW pixel-tile move out to the planes that adds the residual itself.
# 5x7 and 7x7 planes run on pixel tiles in a layer object, 12x12 on planes.
@pytest.mark.parametrize("hw", [(5, 7), (7, 7), (12, 12)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("residual", [False, True], ids=["nores", "res"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_clamp_keeps_nan(rng, dtype, layout, residual, hw):
    h, w = hw
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=9, c_out=21, h=h, w=w,
                     residual=residual)
    case["x"].flat[5] = np.nan
    if residual:
        case["residual"].flat[-3] = np.nan
    layer = pwconv.PointwiseConv2d(9, 21, activation="relu6", layout=layout, dtype=dtype)
    layer.weight = case["weight"]
    layer.bias = case["bias"]
    got = layer(case["x"], residual=case["residual"])
    expected = ref.forward(case["x"], case["weight"], case["bias"], layout=layout,
                           activation="relu6", residual=case["residual"])
    assert np.isnan(expected).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    assert_close(got[finite], expected[finite], k=9)


@pytest.fixture
def stream_everything():
    """Every eligible output written with non-temporal stores, whatever this
    machine's cache size (normally only outputs past half of it)."""
    from pwconv import _core
    old = _core.stream_min_bytes(0)
    yield
    _core.stream_min_bytes(old)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("config", [
    dict(c_in=24, c_out=48),
    dict(c_in=24, c_out=40, activation="relu6"),          # ragged panel
    dict(c_in=16, c_out=32, stride=2, padding=1),
    dict(c_in=2 * 2048 + 3, c_out=16),                    # depth blocks: not streamed
], ids=["plain", "ragged-relu6", "s2-pad", "deep"])
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "offset"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_streamed_output_matches(rng, dtype, layout, aligned, config, threads,
                                 stream_everything):
    # Streaming changes how C reaches memory, never a value: forward and
    # grad input must be bitwise what cached stores give, with the output
    # 32-byte aligned (streamed) or not (the kernel falls back).  Only the
    # NHWC driver streams; NCHW runs here to show the threshold leaves it be.
    from pwconv import _core
    config = dict(config)
    c_in, c_out = config.pop("c_in"), config.pop("c_out")
    kw = dict(config, layout=layout, num_threads=threads)
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=c_in, c_out=c_out,
                     h=12, w=11, stride=kw.get("stride", 1), padding=kw.get("padding", 0))
    conv = pwconv.PointwiseConv2d(c_in, c_out, **kw, dtype=dtype)
    conv.weight, conv.bias = case["weight"], case["bias"]
    expected = ref.forward(case["x"], case["weight"], case["bias"],
                           **{k: v for k, v in kw.items() if k != "num_threads"})
    shape = expected.shape
    store = pwconv.empty((int(np.prod(shape)) + 1,), dtype)
    out = (store[:-1] if aligned else store[1:]).reshape(shape)
    y = conv(case["x"], out=out)
    g = grad_output_like(rng, y)
    gx = conv.backward(g).copy()
    _core.stream_min_bytes(1 << 62)
    y_cached = conv(case["x"])
    gx_cached = conv.backward(g)
    np.testing.assert_array_equal(y, y_cached)
    np.testing.assert_array_equal(gx, gx_cached)
    assert_close(y, expected, k=c_in)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("hw", [(12, 11), (16, 12)], ids=["odd-planes", "line-planes"])
@pytest.mark.parametrize("in_place", [False, True], ids=["own-buffer", "in-place"])
@pytest.mark.parametrize("c_out", [40, 72])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_streamed_output_with_residual(rng, dtype, layout, c_out, in_place, hw, threads,
                                       stream_everything):
    # A residual in its own buffer leaves the output write-only, so either
    # driver may stream it; in place (out=residual) the call reads the
    # output and must not.  Either way the values are bitwise those of
    # cached stores.  NCHW streams only plane rows starting on a cache line:
    # 16x12 planes (768 bytes) put every row there, 12x11 only a few.
    # 40 channels out leave a ragged NHWC panel; 72 (24 deep) are enough
    # rows that the NCHW driver packs B for a streamed output, where cached
    # stores read it in place (AVX-512; see shallow_streamed).
    from pwconv import _core
    c_in = 24
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=c_in, c_out=c_out,
                     h=hw[0], w=hw[1])
    conv = pwconv.PointwiseConv2d(c_in, c_out, layout=layout, dtype=dtype,
                                  activation="relu6", num_threads=threads)
    conv.weight, conv.bias = case["weight"], case["bias"]
    shape = ref.forward(case["x"], case["weight"], layout=layout).shape
    residual = rng.uniform(-3, 3, shape).astype(dtype)
    expected = ref.forward(case["x"], case["weight"], case["bias"], layout=layout,
                           activation="relu6", residual=residual)

    def run():
        out = residual.copy() if in_place else pwconv.empty(shape, dtype)
        return conv(case["x"], residual=out if in_place else residual, out=out)

    y = run()
    _core.stream_min_bytes(1 << 62)
    np.testing.assert_array_equal(y, run())
    assert_close(y, expected, k=c_in)


# Grouped NHWC layers whose panels fit in L2 run a thread's pixel rows in
# blocks (about 128 KB of input and output rows), each block through every
# group.  Shapes with several blocks per thread and a ragged last block, in
# both dtypes; narrow groups (3 and 8 channels in), off-tile group widths;
# the forward pass with a residual and a clamp, and grad input alone (the
# same driver, grad output as A).
GROUPED_NHWC_ROW_BLOCKS = [
    # (n, c_in, c_out, groups, h, w)
    (2, 60, 240, 3, 17, 19),
    (1, 240, 60, 3, 28, 28),
    (3, 24, 64, 8, 13, 11),
    (1, 96, 150, 3, 23, 29),
]


@pytest.mark.parametrize("shape", GROUPED_NHWC_ROW_BLOCKS,
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nhwc_grouped_row_blocks(rng, dtype, threads, shape):
    n, c_in, c_out, groups, h, w = shape
    case = make_case(rng, dtype=dtype, layout="NHWC", n=n, c_in=c_in, c_out=c_out,
                     h=h, w=w, groups=groups, residual=True)
    kw = dict(layout="NHWC", groups=groups)
    for act in (None, (-0.5, 0.75)):
        y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                    residual=case["residual"], activation=act,
                                    num_threads=threads, **kw)
        expected = ref.forward(case["x"], case["weight"], case["bias"],
                               residual=case["residual"], activation=act, **kw)
        assert_close(y, expected, k=c_in // groups)
    g = grad_output_like(rng, y)
    gx, _, _ = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"],
                                                output_mask=(True, False, False),
                                                num_threads=threads, **kw)
    ref_gx, _, _ = ref.backward(g, case["x"], case["weight"], layout="NHWC", groups=groups)
    assert_close(gx, ref_gx, k=c_out // groups)


# The functional API keeps the checked geometry of recent call forms (same
# shapes, dtypes and settings); each call must still compute with its own
# weight, bias, input and residual.  Off-tile channel counts, groups, stride.
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_calls_of_one_form_use_their_own_data(rng, dtype, layout):
    kw = dict(layout=layout, groups=2, stride=(1, 2))
    for _ in range(3):
        case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=22, c_out=34,
                         h=5, w=7, groups=2, stride=(1, 2), residual=True)
        y, expected = run_forward(case, activation="relu6", **kw)
        assert_close(y, expected, k=11)
        g = grad_output_like(rng, y)
        got = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"],
                                               activation="relu6", output=y, **kw)
        want = ref.backward(g, case["x"], case["weight"], activation="relu6", output=y,
                            layout=layout, groups=2, stride=(1, 2))
        for a, e, k in zip(got, want, (17, 2 * 5 * 4, 2 * 5 * 4)):
            assert_close(a, e, k=k)


# Strided, unpadded maps are gathered into a dense copy before the GEMM;
# past 256 KB a thread the gather's rows are split between threads.  Odd
# map sizes, unequal strides, and a view that is not contiguous (gathered
# by numpy instead).
@pytest.mark.parametrize("stride", [2, (2, 3), (3, 1)], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_strided_gather_across_threads(rng, dtype, layout, stride):
    case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=64, c_out=24,
                     h=91, w=89, stride=stride, residual=True)
    expected = ref.forward(case["x"], case["weight"], case["bias"], stride=stride,
                           layout=layout, residual=case["residual"])
    results = []
    for threads in (1, 2, 3):
        results.append(pwconv.pointwise_conv2d(
            case["x"], case["weight"], case["bias"], stride=stride, layout=layout,
            residual=case["residual"], num_threads=threads))
        assert_close(results[-1], expected, k=64)
    viewed = restride(case["x"], "slice", layout)
    assert not viewed.flags.c_contiguous
    assert_close(pwconv.pointwise_conv2d(viewed, case["weight"], case["bias"],
                                         stride=stride, layout=layout,
                                         residual=case["residual"]), expected, k=64)
    for y in results[1:]:
        np.testing.assert_array_equal(y, results[0])


def test_strided_gather_rejects_what_it_cannot_fill():
    # The internal gather checks its operands itself, so a wrong call from
    # inside the package raises instead of writing past dst.
    from pwconv import _core
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="strides"):
        _core.gather_strided(x, np.empty((1, 3, 4, 4), np.float32), False, 0, 2, 1)
    with pytest.raises(ValueError, match="dst"):
        _core.gather_strided(x, np.empty((1, 3, 4, 3), np.float32), False, 2, 2, 1)
    with pytest.raises(ValueError, match="dst"):
        _core.gather_strided(x, np.empty((1, 3, 4, 4), np.float64), False, 2, 2, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.gather_strided(x, np.empty((1, 3, 4, 8), np.float32)[..., ::2], False, 2, 2, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.gather_strided(np.zeros((1, 3, 8, 16), np.float32)[..., ::2],
                             np.empty((1, 3, 4, 4), np.float32), False, 2, 2, 1)
    ok = _core.gather_strided(x + np.arange(64, dtype=np.float32).reshape(8, 8),
                              np.empty((1, 3, 4, 4), np.float32), False, 2, 2, 1)
    np.testing.assert_array_equal(ok[0, 1], np.arange(64, dtype=np.float32).reshape(8, 8)[::2, ::2])
