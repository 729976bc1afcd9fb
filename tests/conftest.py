import os
import sys
import zlib

import numpy as np
import pytest

# The tests import `reference` by name; under --import-mode=importlib pytest
# does not put this folder on sys.path, so do it here whatever the mode or cwd.
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the hypothesis tests skip themselves
    pass
else:
    # database=None: a run must leave no .hypothesis folder in whatever cwd it
    # started from; deadline=None: first calls pay for OpenMP start-up.
    settings.register_profile(
        "pwconv", database=None, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("pwconv")


def pytest_report_header(config):
    # Which pwconv got imported matters: a source checkout on sys.path would
    # shadow the installed, compiled package.
    try:
        import pwconv
    except Exception as exc:  # report, and let the tests fail on their own
        return f"pwconv: import failed: {exc!r}"
    lines = [f"pwconv {getattr(pwconv, '__version__', '?')} from "
             f"{os.path.dirname(pwconv.__file__)}"]
    try:
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = pwconv.show_config()
        lines.append(f"pwconv config: {dict(cfg)}")
    except Exception as exc:
        lines.append(f"pwconv.show_config() failed: {exc!r}")
    return lines


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so every failure reproduces."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# Every kernel family this CPU can run, not just the one dispatch picks:
# the drivers tile by each family's shape (4x8 portable, 6x16 AVX2, 7x32
# AVX-512...), so each family's tiling is its own code path to check.  The
# modules below check results against a float64 reference; the rest
# (argument checks, allocation, the C kernel programs) do not depend on it.
KERNEL_CHECKED_MODULES = {"test_forward", "test_backward", "test_layer", "test_threads"}


def _kernel_families():
    try:
        from pwconv import _core
    except ImportError:  # the tests report the failed import themselves
        return []
    return _core.isa_available()


def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "kernel_family" in metafunc.fixturenames and module in KERNEL_CHECKED_MODULES:
        families = _kernel_families()
        if families:
            metafunc.parametrize("kernel_family", families, indirect=True,
                                 ids=[f"isa={f}" for f in families])


@pytest.fixture(autouse=True)
def kernel_family(request):
    """Runs the test with the kernel family it was parametrized with (layers
    made inside the test pack their weights for it); elsewhere, whatever
    dispatch picked."""
    name = getattr(request, "param", None)
    if name is None:
        yield None
        return
    from pwconv import _core
    previous = _core.isa_name()
    assert _core.select_isa(name), name
    try:
        yield name
    finally:
        _core.select_isa(previous)
