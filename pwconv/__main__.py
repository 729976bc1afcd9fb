"""python -m pwconv {bench,info}"""
import argparse
import contextlib
import sys

from . import _core, show_config
from ._bench import format_table, run_suite
from ._suites import SUITES


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pwconv",
                                     description="pwconv: pointwise convolution for CPUs")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="check and time the built-in layer suites "
                                         "against numpy matmul")
    bench.add_argument("--suite", choices=["all"] + sorted(SUITES), default="all")
    bench.add_argument("--layout", choices=["NHWC", "NCHW"], default="NHWC")
    bench.add_argument("--threads", type=int, default=1)
    bench.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    bench.add_argument("--repeats", type=int, default=15)
    sub.add_parser("info", help="version, kernel path, OpenMP and threads")
    args = parser.parse_args(argv)
    if args.command == "info":
        show_config()
        return 0
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    suites = sorted(SUITES) if args.suite == "all" else [args.suite]
    print(f"pwconv kernel {_core.isa_name()}, OpenMP {'on' if _core.openmp_enabled() else 'off'}")
    with _blas_threads(args.threads) as note:
        print(note)
        for suite in suites:
            rows = run_suite(suite, args.layout, args.threads, args.dtype, repeats=args.repeats)
            print(format_table(suite, rows, args.layout, args.threads, args.dtype))
            print()
    return 0


@contextlib.contextmanager
def _blas_threads(n):
    """Give numpy's BLAS the same thread count as pwconv, so the comparison
    is like for like (threadpoolctl is optional: pwconv needs numpy alone)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield ("WARNING: threadpoolctl is not installed, so numpy's BLAS runs with its "
               "own thread count and the ratios below are not like for like "
               "(pip install threadpoolctl, or the `bench` extra)")
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield f"numpy's BLAS limited to {n} thread(s) with threadpoolctl"


if __name__ == "__main__":
    sys.exit(main())
