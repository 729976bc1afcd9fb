"""The compiled fast path of the per-call checks never accepts what the full
Python checks refuse, and accepts the ordinary valid calls."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pwconv
from pwconv import _guard
from pwconv import _validate as v

SHAPE = (2, 3, 4, 5)
SIZE = int(np.prod(SHAPE))


def full_checks_pass(residual, out, inputs, dtype=np.float32):
    try:
        residual = v.check_like("residual", residual, SHAPE, np.dtype(dtype), "output")
        v.check_out(out, SHAPE, np.dtype(dtype),
                    dict(inputs, residual=residual), in_place="residual")
    except (TypeError, ValueError):
        return False
    return True


def fast_check_passes(residual, out, inputs, dtype=np.float32):
    return _guard.forward_args_ok(residual, out, SHAPE, np.dtype(dtype).num,
                                  tuple(inputs.values()))


def view(buf, start, order, shape=SHAPE):
    """A view of buf of `shape` (SIZE elements) from element `start`: C
    order, reversed along the last axis, or transposed (not C-contiguous)."""
    a = buf[start:start + SIZE]
    if order == "C":
        return a.reshape(shape)
    if order == "reversed":
        return a.reshape(shape)[..., ::-1]
    return a.reshape(shape[::-1]).T


@settings(max_examples=300, deadline=None)
@given(out_at=st.integers(0, 2 * SIZE), res_at=st.one_of(st.none(), st.integers(0, 2 * SIZE)),
       x_at=st.integers(0, 2 * SIZE),
       out_order=st.sampled_from(["C", "reversed", "transposed"]),
       res_order=st.sampled_from(["C", "reversed", "transposed"]),
       readonly=st.booleans())
def test_fast_check_never_accepts_what_the_full_checks_refuse(out_at, res_at, x_at, out_order,
                                                              res_order, readonly):
    buf = np.zeros(3 * SIZE + 8, np.float32)
    out = view(buf, out_at, out_order)
    residual = None if res_at is None else view(buf, res_at, res_order)
    x = buf[x_at:x_at + 24].reshape(1, 2, 3, 4)
    if readonly:
        out = out.view()
        out.flags.writeable = False
    inputs = {"x": x}
    if fast_check_passes(residual, out, inputs):
        assert full_checks_pass(residual, out, inputs)


@pytest.mark.parametrize("bad", [
    dict(out=np.zeros(SHAPE, np.float64)),
    dict(out=np.zeros(SHAPE[::-1], np.float32).T),
    dict(out=np.zeros((2, 3, 4, 6), np.float32)),
    dict(out=np.zeros(SHAPE, np.float32).tolist()),
    dict(residual=np.zeros(SHAPE, np.float64)),
    dict(residual=np.zeros((2, 3, 4), np.float32)),
    dict(residual=np.zeros(SHAPE, np.float32).tolist()),
], ids=["out-f64", "out-fortran", "out-shape", "out-list", "res-f64", "res-rank3", "res-list"])
def test_fast_check_refuses_bad_arrays(bad):
    kw = dict(residual=None, out=None, inputs={"x": np.zeros((1, 2, 3, 4), np.float32)})
    kw.update(bad)
    assert not fast_check_passes(**kw)
    assert not full_checks_pass(**kw)


def test_fast_check_accepts_ordinary_calls():
    x = np.zeros((1, 2, 3, 4), np.float32)
    out, r = np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32)
    for residual, o in [(None, None), (None, out), (r, out), (r, None), (out, out)]:
        assert fast_check_passes(residual, o, {"x": x})
    # A residual read through a view, in float64, and out exactly the residual.
    r64 = np.zeros(SHAPE[::-1]).T
    assert fast_check_passes(r64, None, {"x": x}, np.float64)
    out64 = np.zeros(SHAPE)
    assert fast_check_passes(out64, out64, {"x": x}, np.float64)


def test_layer_refuses_out_overlapping_x_or_residual_after_fast_calls():
    # The layer caches its geometry per input shape; the checks must still
    # run on every call, not only on the first with a new shape.
    layer = pwconv.PointwiseConv2d(4, 4, layout="NHWC")
    x = np.ones((1, 3, 3, 4), np.float32)
    r = np.ones((1, 3, 3, 4), np.float32)
    layer(x, residual=r, out=np.empty_like(r))
    with pytest.raises(ValueError, match="out"):
        layer(x, residual=r, out=x)
    buf = np.zeros(2 * r.size, np.float32)
    shifted_r = buf[:r.size].reshape(r.shape)
    with pytest.raises(ValueError, match="residual"):
        layer(x, residual=shifted_r, out=buf[4:4 + r.size].reshape(r.shape))


# Layer.backward's fast check: grad_output of the forward output's shape,
# `out` (grad input) of the input's, apart from grad_output and the inputs.
IN_SHAPE = (2, 5, 4, 3)


def full_backward_checks_pass(grad_output, out, inputs):
    try:
        v.check_array("grad_output", grad_output)
        v.check_like("grad_output", grad_output, SHAPE, np.dtype(np.float32), "forward output")
        v.check_out(out, IN_SHAPE, np.dtype(np.float32),
                    dict(inputs, grad_output=grad_output), what="input")
    except (TypeError, ValueError):
        return False
    return True


def fast_backward_check_passes(grad_output, out, inputs):
    return _guard.backward_args_ok(grad_output, out, SHAPE, IN_SHAPE,
                                   np.dtype(np.float32).num, tuple(inputs.values()))


@settings(max_examples=300, deadline=None)
@given(out_at=st.one_of(st.none(), st.integers(0, 2 * SIZE)), g_at=st.integers(0, 2 * SIZE),
       x_at=st.integers(0, 2 * SIZE),
       out_order=st.sampled_from(["C", "reversed", "transposed"]),
       g_order=st.sampled_from(["C", "reversed", "transposed"]),
       readonly=st.booleans())
def test_fast_backward_check_never_accepts_what_the_full_checks_refuse(out_at, g_at, x_at,
                                                                       out_order, g_order,
                                                                       readonly):
    buf = np.zeros(3 * SIZE + 8, np.float32)
    out = None if out_at is None else view(buf, out_at, out_order, IN_SHAPE)
    if out is not None and readonly:
        out = out.view()
        out.flags.writeable = False
    grad_output = view(buf, g_at, g_order)
    inputs = {"x": buf[x_at:x_at + 24].reshape(1, 2, 3, 4), "output": None}
    if fast_backward_check_passes(grad_output, out, inputs):
        assert full_backward_checks_pass(grad_output, out, inputs)


def test_fast_backward_check_accepts_and_refuses():
    x = np.zeros((1, 2, 3, 4), np.float32)
    g, out = np.zeros(SHAPE, np.float32), np.zeros(IN_SHAPE, np.float32)
    assert fast_backward_check_passes(g, None, {"x": x})
    assert fast_backward_check_passes(g, out, {"x": x})
    for bad_g, bad_out in [(np.zeros(IN_SHAPE, np.float32), out),   # grad_output's shape
                           (g, np.zeros(SHAPE, np.float32)),          # out's shape
                           (g, np.zeros(IN_SHAPE, np.float64)),       # out's dtype
                           (g, np.zeros(IN_SHAPE[::-1], np.float32).T),  # not C order
                           (g, x.reshape(-1)[:0].reshape(0, 5, 4, 3)),   # empty, wrong shape
                           (g, g.reshape(IN_SHAPE))]:                 # overlap
        assert not fast_backward_check_passes(bad_g, bad_out, {"x": x})
    assert not fast_backward_check_passes(g, out, {"x": out})         # out is an input
