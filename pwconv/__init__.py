"""pwconv: fast pointwise (1x1) convolution for CPUs, forward and backward,
in NCHW and NHWC, on numpy arrays."""

__version__ = "0.1.0"

try:
    from . import _core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on how it is run
    import os as _os
    if _os.path.exists(_os.path.join(_os.path.dirname(__file__), "..", "setup.py")):
        raise ImportError(
            "pwconv is being imported from its source tree, which holds no compiled "
            "core. Install it (pip install .) and run from another directory, or use "
            "the `pwconv` command.") from exc
    raise

from ._alloc import empty  # noqa: E402
from ._config import (_apply_isa_override, _apply_spin_override,  # noqa: E402
                      _apply_threads_override, show_config)
from ._functional import pointwise_conv2d, pointwise_conv2d_backward  # noqa: E402
from ._layer import PointwiseConv2d  # noqa: E402

_apply_isa_override()
_apply_spin_override()
_apply_threads_override()

__all__ = ["pointwise_conv2d", "pointwise_conv2d_backward", "PointwiseConv2d",
           "empty", "show_config", "__version__"]
