"""PointwiseConv2d: a layer that keeps its weights packed between calls."""
import numpy as np

from . import _guard
from . import _validate as v
from ._functional import Call, pack_panels, run_backward, run_forward

__all__ = ["PointwiseConv2d"]


class PointwiseConv2d:
    """A pointwise convolution layer with weights packed once.

    Parameters
    ----------
    in_channels, out_channels : int
    bias : bool
        Whether the layer has a bias (initialised to zero).
    stride, padding, groups, activation, layout, num_threads
        As in :func:`pwconv.pointwise_conv2d`.
    dtype : numpy.float32 or numpy.float64

    The weight is initialised like PyTorch's Conv2d (Kaiming-uniform with
    a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))).  Assigning
    ``weight`` or ``bias`` validates and repacks.  ``forward`` remembers its
    input and output so that ``backward(grad_output)`` can return the input
    gradient and store ``grad_weight`` and ``grad_bias``.
    """

    def __init__(self, in_channels, out_channels, *, bias=True, stride=1, padding=0,
                 groups=1, activation=None, layout="NCHW", dtype=np.float32,
                 num_threads=None, seed=None):
        for name, c in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(c).__name__}")
            if c < 1:
                raise ValueError(f"{name} must be >= 1, got {c}")
        dtype = np.dtype(dtype)
        if dtype not in v.FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.groups = v.check_groups(groups)
        if in_channels % self.groups or out_channels % self.groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.stride = v.check_stride(stride)
        self.padding = v.check_padding(padding)
        self.activation = activation
        v.check_activation(activation)
        self.layout = v.check_layout(layout)
        self.num_threads = v.check_threads(num_threads)
        self.dtype = dtype
        kg = self.in_channels // self.groups
        bound = 1.0 / np.sqrt(kg)
        rng = np.random.default_rng(seed)
        self._weight = rng.uniform(-bound, bound, (self.out_channels, kg)).astype(dtype)
        self._bias = np.zeros(self.out_channels, dtype) if bias else None
        self.grad_weight = None
        self.grad_bias = None
        self._saved = None
        self._repack()

    # -- parameters ---------------------------------------------------------

    @property
    def weight(self):
        """(out_channels, in_channels // groups); a read-only view: assign a
        new array to change it, so the packed copy can never go stale."""
        view = self._weight.view()
        view.flags.writeable = False
        return view

    @weight.setter
    def weight(self, value):
        v.check_array("weight", value, (2, 4))
        if value.dtype != self.dtype:
            raise TypeError(f"weight must have the layer's dtype {self.dtype}, got {value.dtype}")
        want = (self.out_channels, self.in_channels // self.groups)
        if value.shape not in (want, want + (1, 1)):
            raise ValueError(f"weight must have shape {want} or {want + (1, 1)}, "
                             f"got {value.shape}")
        self._weight = np.array(value.reshape(want), dtype=self.dtype, order="C")
        self._repack()

    @property
    def bias(self):
        if self._bias is None:
            return None
        view = self._bias.view()
        view.flags.writeable = False
        return view

    @bias.setter
    def bias(self, value):
        if value is not None:
            v.check_array("bias", value, 1)
            if value.dtype != self.dtype:
                raise TypeError(f"bias must have the layer's dtype {self.dtype}, "
                                f"got {value.dtype}")
            if value.shape != (self.out_channels,):
                raise ValueError(f"bias must have shape ({self.out_channels},), "
                                 f"got {value.shape}")
            value = np.array(value, dtype=self.dtype, order="C")
        self._bias = value
        self._repack()

    def _repack(self):
        self._calls = {}
        # Packed operands by kind, made on first use and kept until the
        # weights change; the forward one is made now, so the first call
        # does not pay for it.
        self._packs = {}
        # NCHW layers use the same panels for small planes.
        self._packs["forward"] = pack_panels(self._weight, self.groups, bias=self._bias)

    # -- passes ---------------------------------------------------------------

    def _call(self, x):
        """The validated geometry for x, cached per input shape and dtype: the
        layer's own settings were checked once, in __init__."""
        key = (x.shape, x.dtype) if type(x) is np.ndarray else None
        call = self._calls.get(key)
        if call is None:
            call = Call(x, self._weight, self._bias, self.stride, self.padding, self.groups,
                        self.layout, self.activation, self.num_threads)
            if len(self._calls) > 32:
                self._calls.clear()
            self._calls[key] = call
        return call

    def forward(self, x, residual=None, out=None):
        """act(conv(x) + bias + residual), written into `out` when given
        (`out` may be `residual` itself: the sum is then formed in place)."""
        call = self._call(x)
        if not _guard.forward_args_ok(residual, out, call.out_shape, call.type_num, (x,)):
            residual = v.check_like("residual", residual, call.out_shape, call.dtype, "output")
            v.check_out(out, call.out_shape, call.dtype, {"x": x, "residual": residual},
                        in_place="residual")
        y = run_forward(call, x, residual, out, self._packs)
        self._saved = (x, y)
        return y

    __call__ = forward

    def backward(self, grad_output, out=None):
        """Return grad_input, written into `out` when given (C-contiguous, the
        input's shape and dtype, sharing no memory with grad_output or the
        last forward's x and output); store grad_weight (the weight's shape)
        and grad_bias (None without a bias) from the last forward's x and
        output.  A training loop at a fixed shape can pass the same `out`
        every step and skip allocating (and the system zeroing) a fresh
        grad_input each time."""
        if self._saved is None:
            raise ValueError("backward needs a forward call first (it uses its x and output)")
        x, y = self._saved
        call = self._call(x)
        if not _guard.backward_args_ok(grad_output, out, call.out_shape, call.in_shape,
                                       call.type_num, (x, y, self._weight)):
            v.check_array("grad_output", grad_output)
            v.check_like("grad_output", grad_output, call.out_shape, call.dtype,
                         "forward output")
            v.check_out(out, call.in_shape, call.dtype,
                        {"grad_output": grad_output, "x": x, "output": y,
                         "weight": self._weight}, what="input")
        mask = (True, True, self._bias is not None)
        gx, self.grad_weight, self.grad_bias = run_backward(
            call, grad_output, x, y if self.activation is not None else None, mask,
            self._packs, grad_input=out)
        return gx

    # -- pickling -------------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_packs", "_saved", "_calls"):
            state[key] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._repack()

    def __repr__(self):
        return (f"PointwiseConv2d({self.in_channels}, {self.out_channels}, "
                f"bias={self._bias is not None}, stride={self.stride}, padding={self.padding}, "
                f"groups={self.groups}, activation={self.activation!r}, "
                f"layout={self.layout!r}, dtype={self.dtype.name})")
