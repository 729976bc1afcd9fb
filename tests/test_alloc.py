"""pwconv.empty and the outputs pwconv allocates: C-contiguous and on a
64-byte boundary (numpy's own arrays mostly are not)."""

import numpy as np
import pytest

import pwconv
import reference as ref
from reference import DTYPES, LAYOUTS


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), 0, 7, (3, 5), (2, 0, 4), (1, 56, 56, 144), [2, 3]])
def test_empty_is_aligned(shape, dtype):
    a = pwconv.empty(shape, dtype)
    want = (shape,) if isinstance(shape, int) else tuple(shape)
    assert a.shape == want and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0
    a[...] = 1
    assert np.all(a == 1)


@pytest.mark.parametrize("shape, dtype, exc, words", [
    ((2, -1), np.float32, ValueError, "negative"),
    (2.5, np.float32, TypeError, "shape"),
    ((2, 1.5), np.float32, TypeError, "shape"),
    (True, np.float32, TypeError, "shape"),
    ("3", np.float32, TypeError, "shape"),
    ((2, 3), np.int32, TypeError, "dtype"),
    ((2, 3), "no such dtype", TypeError, "dtype"),
])
def test_empty_rejects(shape, dtype, exc, words):
    with pytest.raises(exc, match=words):
        pwconv.empty(shape, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_allocated_results_are_aligned(rng, dtype, layout):
    for kw in (dict(), dict(stride=2, padding=1)):
        case = ref.make_case(rng, dtype=dtype, layout=layout, n=2, c_in=5, c_out=7,
                             h=6, w=5, **kw)
        y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                    layout=layout, **kw)
        ref.assert_close(y, ref.forward(case["x"], case["weight"], case["bias"],
                                        layout=layout, **kw), k=5)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx, gw, gb = pwconv.pointwise_conv2d_backward(gy, case["x"], case["weight"],
                                                      layout=layout, **kw)
        exp = ref.backward(gy, case["x"], case["weight"], layout=layout, **kw)
        for got, want, k in zip((gx, gw, gb), exp, (7, y.size // 7, y.size // 7)):
            ref.assert_close(got, want, k=k)
        for a in (y, gx):
            assert a.flags.c_contiguous and a.ctypes.data % 64 == 0


def test_out_from_empty_is_used(rng):
    case = ref.make_case(rng, layout="NHWC", n=1, c_in=8, c_out=16, h=4, w=4)
    out = pwconv.empty((1, 4, 4, 16), np.float32)
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"], layout="NHWC",
                                out=out)
    assert y is out
    ref.assert_close(out, ref.forward(case["x"], case["weight"], case["bias"],
                                      layout="NHWC"), k=8)
