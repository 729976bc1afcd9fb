"""Bad arguments raise TypeError or ValueError naming the argument.

Each case is (id, overrides of a valid call, exception type(s), argument
names): the message must mention one of the names as a whole word.
"""

import numpy as np
import pytest

import pwconv
from reference import assert_unchanged, snapshot

F32, F64 = np.float32, np.float64
EITHER = (TypeError, ValueError)


def arr(shape, dtype=F32):
    return np.full(shape, 0.5, dtype)


# A valid forward call: x (2, 6, 5, 5) NCHW, weight (4, 6), output (2, 4, 5, 5).
X, W, B = arr((2, 6, 5, 5)), arr((4, 6)), arr((4,))
Y_SHAPE = (2, 4, 5, 5)


def name_pattern(names):
    return r"\b(" + "|".join(names.split("|")) + r")\b"


# Arguments that both functions take.
COMMON = [
    ("x-list", dict(x=X.tolist()), TypeError, "x"),
    ("x-none", dict(x=None), TypeError, "x"),
    ("weight-list", dict(weight=W.tolist()), TypeError, "weight"),
    ("x-int", dict(x=arr((2, 6, 5, 5), np.int32)), TypeError, "x"),
    ("all-int", dict(x=arr((2, 6, 5, 5), np.int64), weight=arr((4, 6), np.int64),
                     bias=arr(4, np.int64), grad_output=arr(Y_SHAPE, np.int64)),
     TypeError, "x|weight"),
    ("all-f16", dict(x=arr((2, 6, 5, 5), np.float16),
                     weight=arr((4, 6), np.float16), bias=arr(4, np.float16),
                     grad_output=arr(Y_SHAPE, np.float16)),
     TypeError, "x|weight"),
    ("all-complex", dict(x=arr((2, 6, 5, 5), np.complex64),
                         weight=arr((4, 6), np.complex64),
                         bias=arr(4, np.complex64),
                         grad_output=arr(Y_SHAPE, np.complex64)),
     TypeError, "x|weight"),
    ("x-bool", dict(x=np.ones((2, 6, 5, 5), bool)), TypeError, "x"),
    ("weight-f64", dict(weight=arr((4, 6), F64)), TypeError, "weight"),
    ("weight-int", dict(weight=arr((4, 6), np.int32)), TypeError, "weight"),
    ("x-rank3", dict(x=arr((2, 6, 5))), ValueError, "x"),
    ("x-rank5", dict(x=arr((2, 6, 5, 5, 1))), ValueError, "x"),
    ("weight-rank1", dict(weight=arr(6)), ValueError, "weight"),
    ("weight-rank3", dict(weight=arr((4, 6, 1))), ValueError, "weight"),
    ("weight-3x3", dict(weight=arr((4, 6, 3, 3))), ValueError, "weight"),
    ("weight-1x2", dict(weight=arr((4, 6, 1, 2))), ValueError, "weight"),
    ("cin-mismatch", dict(weight=arr((4, 5))), ValueError, "x|weight"),
    ("cin-mismatch-groups", dict(weight=arr((4, 6)), groups=2), ValueError,
     "x|weight|groups"),
    ("layout-swaps-cin", dict(layout="NHWC"), ValueError, "x|weight|layout"),
    ("groups-not-dividing-cin", dict(weight=arr((4, 1)), groups=4),
     ValueError, "groups"),
    ("groups-not-dividing-cout", dict(x=arr((2, 6, 5, 5)), weight=arr((5, 2)),
                                      bias=arr(5), groups=3,
                                      grad_output=arr((2, 5, 5, 5))),
     ValueError, "groups"),
    ("groups-0", dict(groups=0), ValueError, "groups"),
    ("groups-neg", dict(groups=-2), ValueError, "groups"),
    ("groups-float", dict(groups=1.5), EITHER, "groups"),
    ("stride-0", dict(stride=0), ValueError, "stride"),
    ("stride-neg", dict(stride=-1), ValueError, "stride"),
    ("stride-pair-0", dict(stride=(1, 0)), ValueError, "stride"),
    ("stride-len1", dict(stride=(1,)), ValueError, "stride"),
    ("stride-len3", dict(stride=(1, 1, 1)), ValueError, "stride"),
    ("stride-float", dict(stride=1.5), EITHER, "stride"),
    ("stride-str", dict(stride="1"), EITHER, "stride"),
    ("stride-none", dict(stride=None), EITHER, "stride"),
    ("padding-neg", dict(padding=-1), ValueError, "padding"),
    ("padding-pair-neg", dict(padding=(0, -1)), ValueError, "padding"),
    ("padding-quad-neg", dict(padding=(0, 0, 0, -1)), ValueError, "padding"),
    ("padding-len1", dict(padding=(1,)), ValueError, "padding"),
    ("padding-len3", dict(padding=(1, 1, 1)), ValueError, "padding"),
    ("padding-len5", dict(padding=(1, 1, 1, 1, 1)), ValueError, "padding"),
    ("padding-float", dict(padding=0.5), EITHER, "padding"),
    ("padding-str", dict(padding="same"), EITHER, "padding"),
    ("layout-unknown", dict(layout="CHWN"), ValueError, "layout"),
    ("layout-empty", dict(layout=""), ValueError, "layout"),
    ("layout-none", dict(layout=None), EITHER, "layout"),
    ("activation-unknown", dict(activation="gelu"), ValueError, "activation"),
    ("activation-empty", dict(activation=""), ValueError, "activation"),
    ("activation-min-gt-max", dict(activation=(1.0, -1.0)), ValueError,
     "activation"),
    ("activation-len1", dict(activation=(0.0,)), ValueError, "activation"),
    ("activation-len3", dict(activation=(0.0, 1.0, 2.0)), ValueError,
     "activation"),
    ("activation-int", dict(activation=3), EITHER, "activation"),
    ("num-threads-0", dict(num_threads=0), ValueError, "num_threads"),
    ("num-threads-neg", dict(num_threads=-1), ValueError, "num_threads"),
    ("num-threads-float", dict(num_threads=1.5), EITHER, "num_threads"),
    ("num-threads-str", dict(num_threads="2"), EITHER, "num_threads"),
]


def _out_overlapping_x():
    # x itself as out: shapes agree when C_in == C_out, stride 1, no padding.
    x = arr((2, 4, 5, 5))
    return dict(x=x, weight=arr((4, 4)), out=x)


def _out_partly_overlapping_x():
    buf = arr(2 * 6 * 5 * 5)
    x = buf.reshape(2, 6, 5, 5)
    return dict(x=x, out=buf[10:10 + 2 * 4 * 5 * 5].reshape(Y_SHAPE))


def _out_partly_overlapping_residual():
    # out may be the residual exactly (an in-place sum), never shifted.
    buf = arr(int(np.prod(Y_SHAPE)) + 7)
    return dict(residual=buf[:-7].reshape(Y_SHAPE), out=buf[7:].reshape(Y_SHAPE))


def _out_is_residual_reversed():
    # The same elements in another order: output pixels would read
    # residual values that other output pixels have already overwritten.
    out = arr(Y_SHAPE)
    return dict(residual=out[..., ::-1], out=out)


def _out_readonly():
    out = arr(Y_SHAPE)
    out.setflags(write=False)
    return dict(out=out)


FORWARD_ONLY = [
    ("bias-f64", dict(bias=arr(4, F64)), TypeError, "bias"),
    ("bias-int", dict(bias=arr(4, np.int32)), TypeError, "bias"),
    ("bias-len5", dict(bias=arr(5)), ValueError, "bias"),
    ("bias-2d", dict(bias=arr((4, 1))), ValueError, "bias"),
    ("bias-0d", dict(bias=np.array(0.5, F32)), ValueError,
     "bias"),
    ("residual-f64", dict(residual=arr(Y_SHAPE, F64)), TypeError, "residual"),
    ("residual-shape", dict(residual=arr((2, 4, 5, 4))), ValueError,
     "residual"),
    ("residual-other-layout", dict(residual=arr((2, 5, 5, 4))), ValueError,
     "residual"),
    ("residual-rank3", dict(residual=arr((4, 5, 5))), ValueError, "residual"),
    ("x-f64-rest-f32", dict(x=arr((2, 6, 5, 5), F64)), TypeError, "x|weight"),
    ("out-f64", dict(out=arr(Y_SHAPE, F64)), TypeError, "out"),
    ("out-shape", dict(out=arr((2, 4, 5, 4))), ValueError, "out"),
    ("out-other-layout", dict(out=arr((2, 5, 5, 4))), ValueError, "out"),
    ("out-fortran", dict(out=np.asfortranarray(arr(Y_SHAPE))), ValueError,
     "out"),
    ("out-strided", dict(out=arr((2, 4, 5, 10))[..., ::2]), ValueError, "out"),
    ("out-is-x", _out_overlapping_x(), ValueError, "out"),
    ("out-overlaps-x", _out_partly_overlapping_x(), ValueError, "out"),
    ("out-overlaps-residual", _out_partly_overlapping_residual(), ValueError, "out"),
    ("out-is-residual-reversed", _out_is_residual_reversed(), ValueError, "out"),
    ("out-readonly", _out_readonly(), EITHER, "out"),
    ("out-list", dict(out=arr(Y_SHAPE).tolist()), EITHER, "out"),
]

BACKWARD_ONLY = [
    ("grad-output-f64", dict(grad_output=arr(Y_SHAPE, F64)), TypeError,
     "grad_output"),
    ("grad-output-int", dict(grad_output=arr(Y_SHAPE, np.int32)), TypeError,
     "grad_output"),
    ("grad-output-list", dict(grad_output=arr(Y_SHAPE).tolist()), EITHER,
     "grad_output"),
    ("grad-output-shape", dict(grad_output=arr((2, 4, 5, 4))), ValueError,
     "grad_output"),
    ("grad-output-channels", dict(grad_output=arr((2, 5, 5, 5))), ValueError,
     "grad_output"),
    ("grad-output-rank3", dict(grad_output=arr((4, 5, 5))), ValueError,
     "grad_output"),
    ("grad-output-strided-shape", dict(grad_output=arr(Y_SHAPE), stride=2),
     ValueError, "grad_output"),
    ("relu-without-output", dict(activation="relu", output=None), ValueError,
     "output"),
    ("clamp-without-output", dict(activation=(0.0, 1.0), output=None),
     ValueError, "output"),
    ("output-shape", dict(activation="relu", output=arr((2, 4, 5, 4))),
     ValueError, "output"),
    ("output-f64", dict(activation="relu", output=arr(Y_SHAPE, F64)),
     TypeError, "output"),
    ("x-f64-rest-f32", dict(x=arr((2, 6, 5, 5), F64)), TypeError,
     "x|weight|grad_output"),
    ("mask-len2", dict(output_mask=(True, True)), ValueError, "output_mask"),
    ("mask-len4", dict(output_mask=(True,) * 4), ValueError, "output_mask"),
    ("mask-ints", dict(output_mask=(1, 0, 1)), ValueError, "output_mask"),
    ("mask-str", dict(output_mask="yes"), ValueError, "output_mask"),
    ("mask-bool", dict(output_mask=True), ValueError, "output_mask"),
    ("mask-none", dict(output_mask=None), ValueError, "output_mask"),
]


def cases(table):
    return [pytest.param(over, exc, names, id=case_id)
            for case_id, over, exc, names in table]


def forward_kwargs(over):
    kw = dict(x=X, weight=W, bias=B)
    kw.update({k: v for k, v in over.items() if k != "grad_output"})
    return kw


def backward_kwargs(over):
    kw = dict(grad_output=arr(Y_SHAPE), x=X, weight=W)
    kw.update({k: v for k, v in over.items() if k != "bias"})
    # Give an activation case its output, so that the only fault left is the
    # one the case is about.
    if "activation" in over and "output" not in over:
        kw["output"] = arr(Y_SHAPE)
    return kw


def check_raises(fn, kw, exc, names):
    arrays = [v for v in kw.values() if isinstance(v, np.ndarray)]
    before = snapshot(*arrays)
    with pytest.raises(exc, match=name_pattern(names)):
        fn(**kw)
    assert_unchanged(arrays, before)


def test_valid_base_calls():
    # The cases below must each break exactly one thing in these calls.
    assert pwconv.pointwise_conv2d(**forward_kwargs({})).shape == Y_SHAPE
    grads = pwconv.pointwise_conv2d_backward(**backward_kwargs({}))
    assert [g.shape for g in grads] == [X.shape, W.shape, B.shape]
    # And the cases that rely on a call being valid apart from `out`.
    x = arr((2, 4, 5, 5))
    assert pwconv.pointwise_conv2d(x, arr((4, 4))).shape == x.shape


@pytest.mark.parametrize("over, exc, names", cases(COMMON + FORWARD_ONLY))
def test_forward_rejects(over, exc, names):
    check_raises(pwconv.pointwise_conv2d, forward_kwargs(over), exc, names)


@pytest.mark.parametrize("over, exc, names", cases(COMMON + BACKWARD_ONLY))
def test_backward_rejects(over, exc, names):
    check_raises(pwconv.pointwise_conv2d_backward, backward_kwargs(over), exc,
                 names)


def test_error_leaves_out_untouched():
    out = np.full(Y_SHAPE, 7.0, F32)
    with pytest.raises(ValueError, match=r"\bresidual\b"):
        pwconv.pointwise_conv2d(X, W, B, residual=arr((2, 4, 5, 4)), out=out)
    assert np.all(out == 7.0)


def test_nhwc_checks_channels_last():
    # In NHWC the last axis holds C_in: an NCHW-shaped x must be refused.
    x = arr((2, 5, 5, 6))
    assert pwconv.pointwise_conv2d(x, W, layout="NHWC").shape == (2, 5, 5, 4)
    with pytest.raises(ValueError, match=r"\b(x|weight)\b"):
        pwconv.pointwise_conv2d(arr((2, 6, 5, 5)), W, layout="NHWC")


# Values equal to a valid setting (True == 1, 1.0 == 1, False == 0) that the
# checks refuse: the functional API keeps the checked geometry of recent
# calls, and none of these may reach it through a valid call's entry.
HASH_ALIKE = [dict(stride=True), dict(stride=1.0), dict(stride=(1, True)),
              dict(padding=False), dict(padding=0.0), dict(groups=True),
              dict(groups=1.0), dict(num_threads=True)]


@pytest.mark.parametrize("over", HASH_ALIKE, ids=lambda o: repr(o))
def test_checks_hold_after_a_valid_call_of_the_same_form(over):
    (name, value), = over.items()
    valid = {name: 0 if name == "padding" else 1}
    pwconv.pointwise_conv2d(**forward_kwargs(valid))
    pwconv.pointwise_conv2d_backward(**backward_kwargs(valid))
    check_raises(pwconv.pointwise_conv2d, forward_kwargs(over), TypeError, name)
    check_raises(pwconv.pointwise_conv2d_backward, backward_kwargs(over), TypeError, name)
