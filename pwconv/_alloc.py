"""Cache-line aligned allocation.

numpy's data usually starts 16-48 bytes past a 64-byte boundary, so every
16-float row segment the kernels store straddles two cache lines.  Outputs
pwconv allocates itself, and its packed panels, start on a boundary.
"""
import math
import numbers

import numpy as np

from . import _core
from . import _validate as v

__all__ = ["empty"]

ALIGN = 64


def aligned_empty(n, dtype):
    """A 1-D array of n elements whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    raw = np.empty(n + ALIGN // dtype.itemsize, dtype)
    skip = (-_core.address(raw) % ALIGN) // dtype.itemsize
    # An empty slice keeps its base's data pointer, so cut n from a
    # non-empty aligned view.
    return raw[skip:skip + max(n, 1)][:n]


def aligned_array(shape, dtype, zero=False):
    """An uninitialised (or zeroed) C-contiguous array on a 64-byte boundary."""
    a = aligned_empty(math.prod(shape), dtype).reshape(shape)
    if zero:
        a.fill(0)
    return a


def empty(shape, dtype=np.float32):
    """An uninitialised C-contiguous array whose data starts on a 64-byte
    (cache-line) boundary, for preallocating ``out`` buffers.

    Parameters
    ----------
    shape : int or tuple of ints
        Non-negative sizes.
    dtype : numpy.float32 or numpy.float64

    Returns
    -------
    ndarray
        Writable, C-contiguous, uninitialised.  Stores into an aligned
        output never straddle cache lines, which matters most on large,
        shallow layers, whose time is mostly writing the output.
    """
    if isinstance(shape, (bool, np.bool_)):
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}")
    if isinstance(shape, numbers.Integral):
        shape = (int(shape),)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape must be an int or a tuple of ints, got {type(shape).__name__}")
    shape = tuple(v._int("shape", s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not have negative sizes, got {shape}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in v.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return aligned_array(shape, dt)
