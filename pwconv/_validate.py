"""Argument checking and normalisation.

Everything a caller passes is checked here, before any compiled code runs,
so a bad argument becomes a ValueError or TypeError that names it, never a
crash.  The functions return plain values the drivers can use directly.
"""
import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
LAYOUTS = ("NCHW", "NHWC")


def check_array(name, a, ndim=None):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        want = ndim if isinstance(ndim, int) else " or ".join(map(str, ndim))
        raise ValueError(f"{name} must be {want}-D, got {a.ndim}-D with shape {a.shape}")
    return a


def check_same_dtype(dtype, **arrays):
    """TypeError naming both when an array's dtype differs from x's: pwconv
    never casts silently."""
    for name, a in arrays.items():
        if a is not None and a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but x has dtype {dtype}; "
                            f"pass all arrays in one dtype (no implicit casting)")


def _int(name, v):
    if type(v) is int:
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must contain ints, got {v!r} of type {type(v).__name__}")
    return int(v)


def _int_tuple(name, v, lengths):
    if type(v) is int:
        return (v,)
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {v!r}")
    if isinstance(v, numbers.Integral):
        return (int(v),)
    if not isinstance(v, (tuple, list)):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {type(v).__name__}")
    if len(v) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise ValueError(f"{name} must have {want} entries, got {len(v)}: {v!r}")
    return tuple(_int(name, e) for e in v)


def check_stride(stride):
    s = _int_tuple("stride", stride, (2,))
    sh, sw = (s[0], s[0]) if len(s) == 1 else s
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    return sh, sw


def check_padding(padding):
    """(top, bottom, left, right) from an int, (ph, pw) or a 4-tuple."""
    p = _int_tuple("padding", padding, (2, 4))
    if len(p) == 1:
        p = p * 4
    elif len(p) == 2:
        p = (p[0], p[0], p[1], p[1])
    if min(p) < 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return p


def check_layout(layout):
    if not isinstance(layout, str):
        raise TypeError(f"layout must be 'NCHW' or 'NHWC', got {type(layout).__name__}")
    if layout.upper() not in LAYOUTS:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout.upper()


def check_activation(activation):
    """(clamp, lo, hi) for None, 'relu', 'relu6' or a (min, max) pair."""
    if activation is None:
        return False, -math.inf, math.inf
    if isinstance(activation, str):
        if activation == "relu":
            return True, 0.0, math.inf
        if activation == "relu6":
            return True, 0.0, 6.0
        raise ValueError(f"activation must be None, 'relu', 'relu6' or (min, max), "
                         f"got {activation!r}")
    if isinstance(activation, (tuple, list)) and len(activation) == 2:
        lo, hi = activation
        for v in (lo, hi):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                raise TypeError(f"activation bounds must be real numbers, got {activation!r}")
        lo, hi = float(lo), float(hi)
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"activation bounds must not be NaN, got {activation!r}")
        if lo > hi:
            raise ValueError(f"activation clamp needs min <= max, got min={lo} > max={hi}")
        return True, lo, hi
    raise ValueError(f"activation must be None, 'relu', 'relu6' or (min, max), "
                     f"got {activation!r}")


def check_threads(num_threads):
    if num_threads is None:
        return None
    if type(num_threads) is int and num_threads >= 1:
        return num_threads
    n = _int("num_threads", num_threads)
    if n < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads!r}")
    return n


def check_groups(groups):
    g = _int("groups", groups)
    if g < 1:
        raise ValueError(f"groups must be >= 1, got {groups!r}")
    return g


def check_weight(weight, c_in, groups, dtype):
    """The weight as a C-contiguous (C_out, C_in // groups) array."""
    check_array("weight", weight, (2, 4))
    check_same_dtype(dtype, weight=weight)
    if weight.ndim == 4 and weight.shape[2:] != (1, 1):
        raise ValueError(f"weight must be (C_out, C_in/groups) or (C_out, C_in/groups, 1, 1), "
                         f"got shape {weight.shape} (a {weight.shape[2]}x{weight.shape[3]} kernel)")
    c_out, kg = weight.shape[:2]
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide the input channels C_in={c_in}")
    if c_out % groups:
        raise ValueError(f"groups={groups} must divide the output channels "
                         f"C_out={c_out} (weight.shape[0])")
    if kg * groups != c_in:
        raise ValueError(f"weight.shape[1] must be C_in/groups = {c_in}/{groups} = "
                         f"{c_in // groups}, got weight shape {weight.shape}")
    return weight_2d(weight)


def weight_2d(weight):
    """A checked weight as the C-contiguous (C_out, C_in // groups) array
    the core reads."""
    return np.ascontiguousarray(weight.reshape(weight.shape[:2]))


def check_bias(bias, c_out, dtype):
    if bias is None:
        return None
    check_array("bias", bias, 1)
    check_same_dtype(dtype, bias=bias)
    if bias.shape != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {bias.shape}")
    return np.ascontiguousarray(bias)


def spatial(x, layout):
    """(N, C, H, W) of x in the given layout."""
    if layout == "NCHW":
        return x.shape
    n, h, w, c = x.shape
    return n, c, h, w


def output_shape(n, c_out, h, w, stride, pad, layout):
    sh, sw = stride
    top, bottom, left, right = pad
    ho = (h + top + bottom - 1) // sh + 1 if h + top + bottom > 0 else 0
    wo = (w + left + right - 1) // sw + 1 if w + left + right > 0 else 0
    return (n, c_out, ho, wo) if layout == "NCHW" else (n, ho, wo, c_out)


def check_like(name, a, shape, dtype, what):
    """An array that must match the output's shape and dtype."""
    if a is None:
        return None
    check_array(name, a)
    check_same_dtype(dtype, **{name: a})
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have the {what} shape {tuple(shape)}, got {a.shape}")
    return a


_TooHardError = getattr(np, "exceptions", np).TooHardError


def overlaps(a, b):
    # may_share_memory only compares address ranges: cheap, and exact
    # whenever it says no, which is the common case.
    if b is None or not np.may_share_memory(a, b):
        return False
    try:
        return np.shares_memory(a, b, max_work=100_000)
    except _TooHardError:
        return True  # undecidable cheaply: refuse rather than risk a race


def same_elements(a, b):
    """Whether a and b are views of exactly the same elements, in the same
    order (same start, shape, strides and dtype)."""
    return (a.ctypes.data == b.ctypes.data and a.shape == b.shape
            and a.strides == b.strides and a.dtype == b.dtype)


def check_out(out, shape, dtype, inputs, in_place=None, what="output"):
    """`out` (of the `what` shape) must not overlap any of `inputs`, except
    that it may be exactly the array named by `in_place` (the residual): each
    output element reads its own residual element just before it is written,
    so the sum can be formed in the skip connection's buffer."""
    if out is None:
        return None
    # The common, valid case in one cheap test; the detailed checks below
    # only run to find the message for a bad `out`.
    if not (type(out) is np.ndarray and out.shape == shape and out.dtype == dtype
            and out.flags.c_contiguous and out.flags.writeable):
        check_like("out", out, shape, dtype, what)
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        if not out.flags.writeable:
            raise ValueError("out must be writeable")
    for name, a in inputs.items():
        if a is None or not overlaps(out, a):
            continue
        if name == in_place and same_elements(out, a):
            continue
        hint = (" (it may be the residual itself, exactly, for an in-place sum)"
                if name == in_place else "")
        raise ValueError(f"out must not overlap {name}{hint}")
    return out


def check_output_mask(mask):
    if not isinstance(mask, (tuple, list)) or len(mask) != 3:
        raise ValueError(f"output_mask must be 3 bools (grad_input, grad_weight, grad_bias), "
                         f"got {mask!r}")
    for m in mask:
        if not isinstance(m, (bool, np.bool_)):
            raise ValueError(f"output_mask must be 3 bools, got {mask!r}")
    return tuple(bool(m) for m in mask)
