"""The main job: time pwconv against numpy matmul on a model's 1x1 layers.

Each layer is checked against a float64 numpy reference first, then pwconv
(a layer object writing into a preallocated output) and numpy's matmul are
timed interleaved, median of repeats, so drift on a shared machine hits both
alike.  The full comparison with other libraries lives in benchmarks/.
"""
import sys
import time

import numpy as np

from . import _core
from ._alloc import empty
from ._layer import PointwiseConv2d
from ._suites import SUITES


def _median_ms(samples):
    return float(np.median(samples)) * 1e3


def _numpy_runner(x, w, b, stride, layout):
    """numpy's best effort at the same layer: one matmul over all pixels."""
    sh, sw = stride
    if layout == "NHWC":
        n, h, wd, c = x.shape
        xs = x[:, ::sh, ::sw, :]
        a = np.ascontiguousarray(xs).reshape(-1, c)
        wt = np.ascontiguousarray(w.T)
        y = np.empty((a.shape[0], w.shape[0]), x.dtype)

        def run():
            src = a if (sh, sw) == (1, 1) else np.ascontiguousarray(xs).reshape(-1, c)
            np.matmul(src, wt, out=y)
            np.add(y, b, out=y)
        return run
    n, c, h, wd = x.shape
    xs = x[:, :, ::sh, ::sw]
    ho, wo = xs.shape[2:]
    y = np.empty((n, w.shape[0], ho * wo), x.dtype)
    bcol = b[:, None]

    def run():
        src = np.ascontiguousarray(xs).reshape(n, c, ho * wo)
        np.matmul(w, src, out=y)
        np.add(y, bcol, out=y)
    return run


def _reference(x, w, b, stride, layout):
    sh, sw = stride
    x64 = x.astype(np.float64)
    if layout == "NHWC":
        return np.einsum("nhwc,oc->nhwo", x64[:, ::sh, ::sw, :], w.astype(np.float64)) + b
    return (np.einsum("nchw,oc->nohw", x64[:, :, ::sh, ::sw], w.astype(np.float64))
            + b[:, None, None])


def run_suite(suite, layout="NHWC", threads=1, dtype="float32", batch=1, repeats=15,
              stream=sys.stderr):
    """Rows of (name, shape, pwconv ms, numpy ms, GFLOP/s, ratio, error)."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    rows = []
    layers = SUITES[suite]()
    for i, (name, c_in, c_out, h, w, s) in enumerate(layers):
        print(f"\r[{suite}] {i + 1}/{len(layers)} {name:<20}", end="", file=stream, flush=True)
        shape = (batch, h, w, c_in) if layout == "NHWC" else (batch, c_in, h, w)
        x = rng.standard_normal(shape).astype(dtype)
        layer = PointwiseConv2d(c_in, c_out, stride=s, layout=layout, dtype=dtype,
                                num_threads=threads, seed=i)
        b = rng.standard_normal(c_out).astype(dtype)
        layer.bias = b
        y = empty(layer(x).shape, dtype)
        layer(x, out=y)
        ref = _reference(x, layer.weight, b, (s, s), layout)
        err = float(np.max(np.abs(y - ref)) / (np.max(np.abs(ref)) + 1e-30))
        tol = 1e-4 if dtype == np.float32 else 1e-12
        if not err <= tol:
            raise AssertionError(f"{suite}/{name}: pwconv differs from the float64 "
                                 f"reference by {err:.2e} (relative), over {tol:.0e}")
        numpy_run = _numpy_runner(x, layer.weight, b, (s, s), layout)
        numpy_run()
        tp, tn = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            layer(x, out=y)
            t1 = time.perf_counter()
            numpy_run()
            t2 = time.perf_counter()
            tp.append(t1 - t0)
            tn.append(t2 - t1)
        flops = 2.0 * y.size * c_in
        mp, mn = _median_ms(tp), _median_ms(tn)
        rows.append((name, f"{c_in}->{c_out} {h}x{w}" + (f" s{s}" if s > 1 else ""),
                     mp, mn, flops / mp / 1e6, mn / mp, err))
    print(file=stream)
    return rows


def format_table(suite, rows, layout, threads, dtype):
    out = [f"{suite}, batch 1, {layout}, {dtype}, {threads} thread(s), kernel "
           f"{_core.isa_name()}",
           f"{'layer':<16} {'shape':<20} {'pwconv ms':>10} {'numpy ms':>10} "
           f"{'GFLOP/s':>8} {'ratio':>6}"]
    for name, shape, mp, mn, gf, ratio, _ in rows:
        out.append(f"{name:<16} {shape:<20} {mp:10.3f} {mn:10.3f} {gf:8.1f} {ratio:6.2f}")
    tp = sum(r[2] for r in rows)
    tn = sum(r[3] for r in rows)
    flops = sum(r[4] * r[2] * 1e6 for r in rows)
    out.append(f"{'total':<37} {tp:10.3f} {tn:10.3f} {flops / tp / 1e6:8.1f} {tn / tp:6.2f}")
    out.append("ratio = numpy time / pwconv time (above 1: pwconv is faster); every layer "
               "matched a float64 reference")
    return "\n".join(out)
