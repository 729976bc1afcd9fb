"""Which kernel path runs, chosen once at import."""
import os

import numpy as np

from . import _core

__all__ = ["show_config"]


def _apply_isa_override():
    """PWCONV_ISA=generic|avx2|avx512|neon forces a kernel family, so every path can
    be tested on a machine that would pick another."""
    name = os.environ.get("PWCONV_ISA", "").strip().lower()
    if name and not _core.select_isa(name):
        raise ImportError(f"PWCONV_ISA={name!r} names a kernel this build or CPU cannot run; "
                          f"available here: {', '.join(_core.isa_available())}")


# Ten seconds: past that a worker would spin through pauses a user sees.
MAX_SPIN_US = 10_000_000


def _apply_spin_override():
    """PWCONV_SPIN_US=n: how long idle pool workers spin for the next call
    before they sleep (0: at once, for machines shared with other work)."""
    text = os.environ.get("PWCONV_SPIN_US", "").strip()
    if not text:
        return
    us = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= us <= MAX_SPIN_US:
        raise ImportError(f"PWCONV_SPIN_US={text!r} must be a whole number of "
                          f"microseconds from 0 to {MAX_SPIN_US}")
    _core.pool_spin_us(us)


def _apply_threads_override():
    """PWCONV_THREADS=openmp|pool: what runs a call's threads (default
    openmp where the build has it)."""
    name = os.environ.get("PWCONV_THREADS", "").strip().lower()
    if not name:
        return
    if name not in ("openmp", "pool"):
        raise ImportError(f"PWCONV_THREADS={name!r} must be 'openmp' or 'pool'")
    if not _core.use_pool(name == "pool"):
        raise ImportError(f"PWCONV_THREADS={name!r} is not available in this build "
                          f"(it runs {_core.pool_kind()})")


def config():
    from . import __version__
    return {
        "version": __version__,
        "kernel": _core.isa_name(),
        "kernels_available": _core.isa_available(),
        "tile_float32": _core.tile_shape(4),
        "tile_float64": _core.tile_shape(8),
        "openmp": _core.openmp_enabled(),
        "threads": _core.default_threads(),
        "thread_pool": _core.pool_kind(),
        "pool_spin_us": _core.pool_spin_us(),
        # NHWC outputs from this size on are written around the cache
        # (non-temporal stores): half of one last-level cache instance.
        "llc_bytes": _core.llc_bytes(),
        "stream_min_bytes": _core.stream_min_bytes(),
        "numpy": np.__version__,
    }


def show_config():
    """Print and return the build and runtime configuration."""
    info = config()
    for key, value in info.items():
        print(f"{key:>18}: {value}")
    return info
