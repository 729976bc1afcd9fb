# The per-call argument test for the common, valid case, in C.  In Python
# the same test (types, shapes, dtypes, flags, overlap of `out` with each
# input) costs several microseconds a call, which on a 7x7 or 14x14 layer is
# a few percent of the convolution.  This module only answers "valid, go
# on"; anything it does not accept goes through pwconv/_validate.py, which
# gives the exact verdict and the error message.  So it may refuse valid
# arguments (they are then checked the slow way) but never accept one that
# _validate.py would refuse.
cimport numpy as cnp

cnp.import_array()


cdef bint byte_range(cnp.ndarray a, Py_ssize_t *lo, Py_ssize_t *hi) noexcept:
    """[lo, hi): the bytes a's elements lie in.  False for an empty array,
    which touches no memory."""
    cdef Py_ssize_t start = <Py_ssize_t>cnp.PyArray_DATA(a), end = start
    cdef Py_ssize_t n, s
    cdef int d
    for d in range(cnp.PyArray_NDIM(a)):
        n = cnp.PyArray_DIM(a, d)
        if n == 0:
            return False
        s = cnp.PyArray_STRIDE(a, d)
        if s < 0:
            start += s * (n - 1)
        else:
            end += s * (n - 1)
    lo[0] = start
    hi[0] = end + cnp.PyArray_ITEMSIZE(a)
    return True


cdef bint apart(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Whether a and b certainly share no byte."""
    cdef Py_ssize_t alo, ahi, blo, bhi
    if not byte_range(a, &alo, &ahi) or not byte_range(b, &blo, &bhi):
        return True
    return ahi <= blo or bhi <= alo


cdef bint same_elements(cnp.ndarray a, cnp.ndarray b) noexcept:
    """Same start, shape and strides (dtypes are compared by the caller)."""
    cdef int d
    if cnp.PyArray_DATA(a) != cnp.PyArray_DATA(b) or cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if (cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d)
                or cnp.PyArray_STRIDE(a, d) != cnp.PyArray_STRIDE(b, d)):
            return False
    return True


cdef bint is_like(object a, tuple shape, int type_num):
    """A plain ndarray (not a subclass) of this shape and dtype number."""
    cdef cnp.ndarray arr
    cdef Py_ssize_t d, nd = len(shape)
    if type(a) is not cnp.ndarray:
        return False
    arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != type_num or cnp.PyArray_NDIM(arr) != nd:
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(arr, <int>d) != <Py_ssize_t>shape[d]:
            return False
    return True


cdef bint writable_apart(object out, tuple shape, int type_num, tuple inputs):
    """`out` is a writeable, C-contiguous plain ndarray of this shape and
    dtype number that shares no byte with any array of `inputs` (None
    entries skipped; anything else not an ndarray refuses)."""
    cdef cnp.ndarray o
    if not is_like(out, shape, type_num):
        return False
    o = <cnp.ndarray>out
    if not (cnp.PyArray_IS_C_CONTIGUOUS(o) and cnp.PyArray_ISWRITEABLE(o)):
        return False
    for a in inputs:
        if a is not None and (not isinstance(a, cnp.ndarray) or not apart(o, <cnp.ndarray>a)):
            return False
    return True


def forward_args_ok(object residual, object out, tuple shape, int type_num,
                    tuple inputs):
    """True when `residual` and `out` (either may be None) are valid for a
    forward call whose output has `shape` and dtype number `type_num`, and
    `out` shares no memory with any array of `inputs` (None entries are
    skipped) nor with `residual` unless it is exactly `residual`."""
    if residual is not None and not is_like(residual, shape, type_num):
        return False
    if out is None:
        return True
    if not writable_apart(out, shape, type_num, inputs):
        return False
    if residual is not None and not apart(<cnp.ndarray>out, <cnp.ndarray>residual):
        return same_elements(<cnp.ndarray>out, <cnp.ndarray>residual)
    return True


def backward_args_ok(object grad_output, object out, tuple out_shape, tuple in_shape,
                     int type_num, tuple inputs):
    """True when `grad_output` matches the forward output (`out_shape`,
    dtype number `type_num`) and `out` (may be None) is a writeable,
    C-contiguous array of the input's shape (`in_shape`) sharing no memory
    with `grad_output` or any array of `inputs` (None entries skipped)."""
    if not is_like(grad_output, out_shape, type_num):
        return False
    return out is None or writable_apart(out, in_shape, type_num, (grad_output,) + inputs)
