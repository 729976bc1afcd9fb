"""pwconv: fast pointwise (1x1) convolution for CPUs, forward and backward,
in NCHW and NHWC, on numpy arrays."""

__version__ = "0.1.0"

from ._config import _apply_isa_override, show_config  # noqa: E402
from ._functional import pointwise_conv2d, pointwise_conv2d_backward  # noqa: E402
from ._layer import PointwiseConv2d  # noqa: E402

_apply_isa_override()

__all__ = ["pointwise_conv2d", "pointwise_conv2d_backward", "PointwiseConv2d",
           "show_config", "__version__"]
