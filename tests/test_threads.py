"""Determinism, thread counts, concurrent callers and runtime configuration."""

import os
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pwconv
import reference as ref
from reference import DTYPES, LAYOUTS, assert_close, make_case

# Few output channels and many pixels: the grad-weight reduction has fewer
# tiles than threads, so it splits the pixels and sums per-thread partials,
# the one place where the thread count changes the rounding.
REDUCTION_SHAPE = dict(n=4, c_in=8, c_out=8, h=32, w=32)
# Enough rows and columns for every thread to get forward tiles.
WIDE_SHAPE = dict(n=2, c_in=67, c_out=45, h=19, w=23)


def config():
    return dict(pwconv.show_config())


def openmp_on():
    cfg = config()
    flags = [v for k, v in cfg.items() if "openmp" in k.lower()]
    return bool(flags) and bool(flags[0])


def forward_backward(case, num_threads, **kw):
    y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                residual=case["residual"], activation="relu",
                                num_threads=num_threads, **kw)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    grads = pwconv.pointwise_conv2d_backward(
        g, case["x"], case["weight"], activation="relu", output=y,
        num_threads=num_threads, **kw)
    return (y,) + tuple(grads)


def assert_bitwise(a_results, b_results):
    for a, b in zip(a_results, b_results):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("num_threads", [None, 1, 2, 3])
@pytest.mark.parametrize("shape", [REDUCTION_SHAPE, WIDE_SHAPE],
                         ids=["reduction", "wide"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_repeat_is_bitwise_identical(rng, dtype, layout, shape, num_threads):
    kw = dict(layout=layout, stride=(1, 2), padding=1)
    case = make_case(rng, dtype=dtype, layout=layout, residual=True,
                     stride=kw["stride"], padding=kw["padding"], **shape)
    first = forward_backward(case, num_threads, **kw)
    for _ in range(3):
        assert_bitwise(forward_backward(case, num_threads, **kw), first)


@pytest.mark.parametrize("shape", [REDUCTION_SHAPE, WIDE_SHAPE],
                         ids=["reduction", "wide"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_thread_count_invariance(rng, dtype, layout, shape):
    kw = dict(layout=layout, groups=1)
    case = make_case(rng, dtype=dtype, layout=layout, residual=True, **shape)
    one = forward_backward(case, 1, **kw)
    pixels = shape["n"] * shape["h"] * shape["w"]
    ks = (shape["c_in"], shape["c_out"], pixels, pixels)
    for n in (2, 3, 4, None):
        many = forward_backward(case, n, **kw)
        for a, b, k in zip(many, one, ks):
            # Agreement to rounding: a tenth of the reference tolerance.
            rtol, atol = ref.tolerance(dtype, k)
            np.testing.assert_allclose(a, b, rtol=rtol / 10, atol=atol / 10)


# Weights that outweigh the pixels: each thread owns whole row tiles of dW
# and reduces every pixel into them, so grad weight and grad bias come out
# bitwise the same at any thread count (and grad bias is summed once per
# channel, whichever thread owns it).  NCHW 960 -> 160 swaps the operands
# (rows are input channels), 160 -> 960 does not.
OWNED_ROWS = [
    # (layout, n, c_in, c_out, hw, stride, padding, activation, output_mask)
    ("NCHW", 1, 960, 160, 7, 1, 0, "relu", (True, True, True)),
    ("NCHW", 2, 160, 962, 7, 1, 0, None, (True, True, True)),
    ("NCHW", 1, 300, 500, 7, 2, 1, "relu6", (True, True, True)),
    ("NHWC", 1, 160, 962, 7, 1, 0, None, (False, True, True)),
    ("NHWC", 1, 203, 961, 5, 1, 0, None, (False, True, True)),
    ("NHWC", 2, 200, 400, 9, 2, 1, None, (True, True, True)),
    # Grad input fused into the sweep: each thread computes it for its share
    # of every chunk's pixels.
    ("NHWC", 1, 160, 962, 7, 1, 0, None, (True, True, True)),
    ("NHWC", 2, 150, 700, 7, 1, 0, None, (True, True, True)),
    ("NCHW", 1, 300, 250, 9, 1, 0, None, (True, True, True)),
    ("NCHW", 2, 200, 256, 9, 1, 0, None, (True, True, True)),
]


@pytest.mark.parametrize("config", OWNED_ROWS, ids=lambda c: "-".join(map(str, c[:7])))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_owned_weight_rows_do_not_depend_on_threads(rng, dtype, config):
    layout, n, c_in, c_out, hw, stride, padding, act, mask = config
    kw = dict(layout=layout, stride=stride, padding=padding)
    case = make_case(rng, dtype=dtype, layout=layout, n=n, c_in=c_in, c_out=c_out,
                     h=hw, w=hw, stride=stride, padding=padding)
    y = ref.forward(case["x"], case["weight"], case["bias"], activation=act,
                    **kw).astype(dtype)
    g = rng.standard_normal(y.shape).astype(dtype)

    def grads(num_threads):
        return pwconv.pointwise_conv2d_backward(
            g, case["x"], case["weight"], activation=act, output=y if act else None,
            output_mask=mask, num_threads=num_threads, **kw)

    one = grads(1)
    expected = ref.backward(g, case["x"], case["weight"], activation=act,
                            output=y if act else None, **kw)
    pixels = y.size // c_out
    assert_close(one[1], expected[1], k=pixels)
    assert_close(one[2], expected[2], k=pixels)
    for num_threads in (2, 3, 4):
        many = grads(num_threads)
        assert_bitwise(many[1:], one[1:])
        if mask[0]:
            assert_close(many[0], expected[0], k=c_out)


# Few pixels: the drivers split the output channels' panels between
# threads, cutting a panel at a row tile where the panels do not divide
# evenly (five panels for two threads, ten for three).  Every output value
# is still one kernel's full dot product, so forward and grad input must be
# bitwise the same at any thread count.  NHWC and NCHW pixel tiles (planes
# of up to 64 pixels), a ragged last panel, a grouped layer, relu6 (grad
# input reads grad output masked) and grad input alone (not fused into the
# grad-weight sweep).
PANEL_CUTS = [
    # (n, c_in, c_out, h, w, groups)
    (1, 96, 160, 7, 7, 1),
    (1, 64, 80, 5, 7, 1),
    (1, 40, 200, 6, 6, 1),
    (1, 128, 330, 7, 7, 2),
]


@pytest.mark.parametrize("output_mask", [(True, True, True), (True, False, False)],
                         ids=["all", "grad-input"])
@pytest.mark.parametrize("activation", [None, "relu6"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", PANEL_CUTS, ids=ref.shape_id)
def test_panels_cut_between_threads(rng, shape, dtype, layout, activation, output_mask):
    n, c_in, c_out, h, w, groups = shape
    kw = dict(layout=layout, groups=groups)
    case = make_case(rng, dtype=dtype, layout=layout, n=n, c_in=c_in, c_out=c_out,
                     h=h, w=w, groups=groups, residual=True)

    def run(num_threads):
        y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                    residual=case["residual"], activation=activation,
                                    num_threads=num_threads, **kw)
        g = np.random.default_rng(2).standard_normal(y.shape).astype(dtype)
        gx = pwconv.pointwise_conv2d_backward(
            g, case["x"], case["weight"], activation=activation,
            output=y if activation else None, output_mask=output_mask,
            num_threads=num_threads, **kw)[0]
        return y, g, gx

    y, g, gx = run(1)
    assert_close(y, ref.forward(case["x"], case["weight"], case["bias"],
                                residual=case["residual"], activation=activation, **kw),
                 k=c_in // groups)
    expected = ref.backward(g, case["x"], case["weight"], activation=activation,
                            output=y if activation else None, **kw)[0]
    assert_close(gx, expected, k=c_out // groups)
    for num_threads in (2, 3, 4):
        y_many, _, gx_many = run(num_threads)
        assert_bitwise((y_many, gx_many), (y, gx))


# Shapes sized to reach the drivers' big-problem branches, with remainders
# left in every dimension: small maps with wide weights (split over output
# channels), weights too big for one L2 block, large maps split over pixels,
# and long grad-weight reductions split over pixel chunks.
LARGE_SHAPES = [
    (1, 515, 301, 5, 5, 1),
    (1, 320, 1283, 7, 7, 1),
    (2, 96, 150, 28, 27, 1),
    (1, 66, 68, 56, 55, 2),
    # Weights past one L2 block (256 KB) and enough rows for every thread:
    # NHWC then gives each thread one row share, NCHW widens its strips.
    (1, 300, 260, 14, 15, 1),
]


@pytest.mark.parametrize("config", [
    dict(),
    dict(stride=2, padding=(1, 0, 0, 1), activation="relu6"),
], ids=["plain", "s2-pasym-relu6"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", LARGE_SHAPES, ids=ref.shape_id)
def test_large_shapes_every_thread_count(rng, shape, dtype, layout, config):
    n, c_in, c_out, h, w, groups = shape
    kw = dict(stride=config.get("stride", 1), padding=config.get("padding", 0),
              groups=groups, layout=layout)
    activation = config.get("activation")
    case = make_case(rng, dtype=dtype, layout=layout, n=n, c_in=c_in,
                     c_out=c_out, h=h, w=w, groups=groups, residual=True,
                     stride=kw["stride"], padding=kw["padding"])
    y_ref = ref.forward(case["x"], case["weight"], case["bias"],
                        residual=case["residual"], activation=activation, **kw)
    g = rng.standard_normal(y_ref.shape).astype(dtype)
    pixels = y_ref.size // c_out
    for num_threads in (1, 2, 4):
        y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                    residual=case["residual"],
                                    activation=activation,
                                    num_threads=num_threads, **kw)
        assert_close(y, y_ref, k=c_in // groups, err_msg=f"{num_threads=}")
        grads = pwconv.pointwise_conv2d_backward(
            g, case["x"], case["weight"], activation=activation, output=y,
            num_threads=num_threads, **kw)
        expected = ref.backward(g, case["x"], case["weight"],
                                activation=activation, output=y, **kw)
        for a, e, k in zip(grads, expected,
                           (c_out // groups, pixels, pixels)):
            assert_close(a, e, k=k, err_msg=f"{num_threads=}")


def test_num_threads_applies_to_one_call_only():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not openmp_on():
        pytest.skip("pwconv built without OpenMP")
    before = [(i["filepath"], i["num_threads"])
              for i in threadpoolctl.threadpool_info()]
    case = make_case(np.random.default_rng(0), **WIDE_SHAPE)
    forward_backward(case, 1)
    after = [(i["filepath"], i["num_threads"])
             for i in threadpoolctl.threadpool_info()]
    assert after == before


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_threadpoolctl_limit_is_honoured(rng, dtype):
    # num_threads=None takes the OpenMP default, which threadpoolctl sets;
    # with the default limited to 1 the result must be the 1-thread result,
    # bit for bit.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not openmp_on():
        pytest.skip("pwconv built without OpenMP")
    case = make_case(rng, dtype=dtype, residual=True, **REDUCTION_SHAPE)
    one = forward_backward(case, 1)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        limited = forward_backward(case, None)
    assert_bitwise(limited, one)


def test_omp_num_threads_is_honoured(tmp_path):
    script = textwrap.dedent("""
        import numpy as np, pwconv, reference as ref
        case = ref.make_case(np.random.default_rng(0), residual=True,
                             n=4, c_in=8, c_out=8, h=32, w=32)
        def run(nt):
            y = pwconv.pointwise_conv2d(case["x"], case["weight"],
                                        case["bias"], num_threads=nt)
            g = np.ones_like(y)
            return (y,) + tuple(pwconv.pointwise_conv2d_backward(
                g, case["x"], case["weight"], num_threads=nt))
        for a, b in zip(run(None), run(1)):
            assert a.tobytes() == b.tobytes()
        print(dict(pwconv.show_config()))
        print("OK")
    """)
    proc = ref.run_python(script, tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr


def test_forked_child_runs_threads_on_the_pool(tmp_path):
    # With PWCONV_THREADS=pool a forked child starts its own workers (the
    # parent's do not exist there): a child forked after threaded calls runs
    # threaded calls too, with the parent's results.
    script = textwrap.dedent("""
        import os, numpy as np, pwconv, reference as ref
        assert "pool" in pwconv.show_config()["thread_pool"]
        case = ref.make_case(np.random.default_rng(0), residual=True,
                             n=2, c_in=64, c_out=96, h=28, w=28)
        def run():
            return pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                           residual=case["residual"], num_threads=2)
        parent = run()
        pid = os.fork()
        if pid == 0:
            ok = all(run().tobytes() == parent.tobytes() for _ in range(20))
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert run().tobytes() == parent.tobytes()
        print("OK")
    """)
    if not hasattr(os, "fork") or os.name == "nt":
        pytest.skip("no os.fork or no pthreads pool on this platform")
    proc = ref.run_python(script, tmp_path, env={"PWCONV_THREADS": "pool"})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


# Every threaded site with 2 threads: the NHWC, NCHW (with its pixel-tile
# tail) and pixel-tile drivers, the strided gather, grad input, grad weight
# and its partial sums; channel counts and planes off the kernel tiles.
# Each output is checked against the float64 reference, and the digest of
# them all is printed.
THREADED_SITES = textwrap.dedent("""
    import hashlib, numpy as np, pwconv, reference as ref
    digest = hashlib.sha256()
    for layout in ("NHWC", "NCHW"):
        for dtype in (np.float32, np.float64):
            for kw, (h, w) in [(dict(), (27, 25)), (dict(), (14, 14)), (dict(), (7, 7)),
                               (dict(stride=2), (55, 53)), (dict(groups=2), (27, 25))]:
                case = ref.make_case(np.random.default_rng(h), dtype=dtype, layout=layout,
                                     residual=not kw, n=4, c_in=100, c_out=90, h=h,
                                     w=w, **kw)
                y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                            residual=case["residual"], layout=layout,
                                            activation="relu6", num_threads=2, **kw)
                ref.assert_close(y, ref.forward(case["x"], case["weight"], case["bias"],
                                                residual=case["residual"], layout=layout,
                                                activation="relu6", **kw),
                                 100 // kw.get("groups", 1))
                g = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
                outs = pwconv.pointwise_conv2d_backward(g, case["x"], case["weight"],
                                                        layout=layout, num_threads=2, **kw)
                pixels = y.size // 90
                for a, e, k in zip(outs, ref.backward(g, case["x"], case["weight"],
                                                      layout=layout, **kw),
                                   (90 // kw.get("groups", 1), pixels, pixels)):
                    ref.assert_close(a, e, k)
                for a in (y,) + tuple(outs):
                    digest.update(np.ascontiguousarray(a).tobytes())
    print(pwconv.show_config()["thread_pool"])
    print("DIGEST", digest.hexdigest())
""")


def test_pool_and_openmp_give_the_same_results(tmp_path):
    if not openmp_on():
        pytest.skip("pwconv built without OpenMP")
    out = {}
    for mode in ("openmp", "pool"):
        proc = ref.run_python(THREADED_SITES, tmp_path, env={"PWCONV_THREADS": mode})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        kind, digest = proc.stdout.split("\n")[-3:-1]
        assert ("pool" in kind) == (mode == "pool"), kind
        out[mode] = digest
    assert out["openmp"] == out["pool"]


def test_spin_override(tmp_path):
    # Pool workers that sleep at once give the same results; both settings
    # are shown.
    script = textwrap.dedent("""
        import numpy as np, pwconv, reference as ref
        cfg = pwconv.show_config()
        assert cfg["pool_spin_us"] == 0 and "pool" in cfg["thread_pool"]
        case = ref.make_case(np.random.default_rng(0), n=2, c_in=64, c_out=96, h=28, w=28)
        runs = [pwconv.pointwise_conv2d(case["x"], case["weight"], num_threads=t)
                for t in (2, 2, 2)]
        assert runs[0].tobytes() == runs[1].tobytes() == runs[2].tobytes()
        print("OK")
    """)
    if os.name == "nt":
        pytest.skip("no pthreads pool on Windows")
    proc = ref.run_python(script, tmp_path, env={"PWCONV_SPIN_US": "0", "PWCONV_THREADS": "pool"})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("name, value", [
    ("PWCONV_SPIN_US", v) for v in ["-1", "1.5", "lots", "10000001", "\u00b2"]] + [
    ("PWCONV_THREADS", v) for v in ["gomp", "1", "pools"]])
def test_bad_thread_settings_name_the_variable(tmp_path, name, value):
    proc = ref.run_python("import pwconv", tmp_path, env={name: value})
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and name in proc.stderr, proc.stderr


def test_concurrent_python_threads():
    # Eight Python threads call at once, each on its own inputs and layer.
    def problem(i):
        rng = np.random.default_rng(100 + i)
        layout = LAYOUTS[i % 2]
        dtype = DTYPES[(i // 2) % 2]
        kw = dict(layout=layout, stride=1 + i % 2, padding=i % 3,
                  groups=1 + i % 2)
        case = make_case(rng, dtype=dtype, layout=layout, n=2, c_in=10 + 2 * i,
                         c_out=6 + 4 * i, h=9 + i, w=11, residual=True,
                         stride=kw["stride"], padding=kw["padding"],
                         groups=kw["groups"])
        y_ref = ref.forward(case["x"], case["weight"], case["bias"],
                            residual=case["residual"], activation="relu6",
                            **kw)
        g = rng.standard_normal(y_ref.shape).astype(dtype)
        return case, kw, g

    problems = [problem(i) for i in range(8)]

    def work(i):
        case, kw, g = problems[i]
        num_threads = (None, 1, 2)[i % 3]
        layer = pwconv.PointwiseConv2d(
            case["x"].shape[1 if kw["layout"] == "NCHW" else 3],
            case["weight"].shape[0], stride=kw["stride"],
            padding=kw["padding"], groups=kw["groups"], activation="relu6",
            layout=kw["layout"], dtype=case["x"].dtype,
            num_threads=num_threads)
        layer.weight = case["weight"]
        layer.bias = case["bias"]
        results = []
        for _ in range(10):
            y = pwconv.pointwise_conv2d(
                case["x"], case["weight"], case["bias"],
                residual=case["residual"], activation="relu6",
                num_threads=num_threads, **kw)
            grads = pwconv.pointwise_conv2d_backward(
                g, case["x"], case["weight"], activation="relu6", output=y,
                num_threads=num_threads, **kw)
            y_layer = layer(case["x"], residual=case["residual"])
            dx_layer = layer.backward(g)
            results.append((y, grads, y_layer, dx_layer))
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        all_results = list(pool.map(work, range(8)))

    for (case, kw, g), results in zip(problems, all_results):
        y_ref = ref.forward(case["x"], case["weight"], case["bias"],
                            residual=case["residual"], activation="relu6",
                            **kw)
        c_out, cig = case["weight"].shape
        pixels = y_ref.size // c_out
        for y, grads, y_layer, dx_layer in results:
            assert_close(y, y_ref, k=cig)
            assert_close(y_layer, y_ref, k=cig)
            expected = ref.backward(g, case["x"], case["weight"],
                                    activation="relu6", output=y, **kw)
            for a, e, k in zip(grads, expected,
                               (c_out // kw["groups"], pixels, pixels)):
                assert_close(a, e, k=k)
            assert_close(dx_layer, expected[0], k=c_out // kw["groups"])
            np.testing.assert_array_equal(y, results[0][0])


@pytest.mark.parametrize("which", ["forward", "grad_input", "grad_weight"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gil_is_released_while_computing(which, layout, dtype):
    # A pure-Python thread keeps stamping the clock while one long call
    # runs.  Holding the GIL through the compiled work would stop it for the
    # whole call: its longest silence inside the call would be nearly all of
    # the call (0.68-0.92 measured on the build that held it, 0.00-0.02
    # now).  This checks that other Python threads run meanwhile, not how
    # fast anything is.
    rng = np.random.default_rng(5)
    c, hw = 512, 64
    shape = (1, c, hw, hw) if layout == "NCHW" else (1, hw, hw, c)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((c, c)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    kw = dict(layout=layout, num_threads=1)
    calls = {
        "forward": lambda: pwconv.pointwise_conv2d(x, w, **kw),
        "grad_input": lambda: pwconv.pointwise_conv2d_backward(
            g, x, w, output_mask=(True, False, False), **kw),
        "grad_weight": lambda: pwconv.pointwise_conv2d_backward(
            g, x, w, output_mask=(False, True, True), **kw),
    }
    call = calls[which]
    call()                       # first-call setup outside the window
    stamps, stop = [], threading.Event()

    def stamp():
        while not stop.is_set():
            stamps.append(time.perf_counter())

    spinner = threading.Thread(target=stamp)
    spinner.start()
    try:
        while not stamps:
            time.sleep(0.001)
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
    finally:
        stop.set()
        spinner.join()
    inside = [t0] + [s for s in stamps if t0 < s < t1] + [t1]
    longest = max(b - a for a, b in zip(inside, inside[1:]))
    assert longest < 0.5 * (t1 - t0), (
        f"no other Python thread ran for {longest * 1e3:.1f} ms of a "
        f"{(t1 - t0) * 1e3:.1f} ms {which} call: the GIL was held")


# --------------------------------------------------------------------------
# Runtime configuration.


def test_version():
    assert isinstance(pwconv.__version__, str) and pwconv.__version__


def test_show_config(capsys):
    cfg = pwconv.show_config()
    printed = capsys.readouterr().out
    assert printed.strip()
    info = dict(cfg)
    keys = " ".join(k.lower() for k in info)
    assert "openmp" in keys
    assert "thread" in keys
    # The kernel path's name is printed and is one of the reported values.
    isa = kernel_path(info)
    assert isa and isa in printed


def kernel_path(info):
    for key, value in info.items():
        if isinstance(value, str) and any(w in key.lower() for w in
                                          ("isa", "kernel", "path")):
            return value
    return None


def test_generic_path_subprocess(tmp_path):
    # PWCONV_ISA=generic forces the portable kernels at import, so this is the
    # only place the fallback path runs on a machine with AVX2 or NEON. Shapes
    # leave remainders in every tile dimension.
    script = textwrap.dedent("""
        import contextlib, io
        import numpy as np, pwconv, reference as ref
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            cfg = dict(pwconv.show_config())
        assert "generic" in [str(v) for v in cfg.values()], cfg
        assert "generic" in printed.getvalue()
        rng = np.random.default_rng(0)
        shapes = [(1, 1, 1, 1, 1, 1), (2, 17, 23, 3, 5, 1),
                  (1, 33, 7, 5, 9, 1), (2, 150, 70, 9, 11, 2),
                  (3, 6, 10, 4, 4, 2), (1, 515, 301, 5, 5, 1)]
        for dtype in (np.float32, np.float64):
            for layout in ("NCHW", "NHWC"):
                for (n, ci, co, h, w, g) in shapes:
                    for act, kw in [(None, {}),
                                    ("relu6", dict(stride=2, padding=1)),
                                    ((-0.5, 0.5), dict(stride=(1, 2),
                                                       padding=(0, 1, 2, 1)))]:
                        kw = dict(kw, groups=g, layout=layout)
                        case = ref.make_case(
                            rng, dtype=dtype, layout=layout, n=n, c_in=ci,
                            c_out=co, h=h, w=w, residual=True,
                            stride=kw.get("stride", 1),
                            padding=kw.get("padding", 0), groups=g)
                        y = pwconv.pointwise_conv2d(
                            case["x"], case["weight"], case["bias"],
                            residual=case["residual"], activation=act, **kw)
                        ref.assert_close(y, ref.forward(
                            case["x"], case["weight"], case["bias"],
                            residual=case["residual"], activation=act, **kw),
                            k=ci // g)
                        gr = rng.standard_normal(y.shape).astype(dtype)
                        got = pwconv.pointwise_conv2d_backward(
                            gr, case["x"], case["weight"], activation=act,
                            output=y, **kw)
                        exp = ref.backward(gr, case["x"], case["weight"],
                                           activation=act, output=y, **kw)
                        pixels = y.size // co
                        for a, e, k in zip(got, exp,
                                           (co // g, pixels, pixels)):
                            ref.assert_close(a, e, k=k)
                        layer = pwconv.PointwiseConv2d(
                            ci, co, groups=g, layout=layout, dtype=dtype,
                            activation=act, stride=kw.get("stride", 1),
                            padding=kw.get("padding", 0))
                        layer.weight = case["weight"]
                        layer.bias = case["bias"]
                        ref.assert_close(
                            layer(case["x"], residual=case["residual"]), y,
                            k=ci // g)
        print("OK")
    """)
    proc = ref.run_python(script, tmp_path, env={"PWCONV_ISA": "generic"})
    assert proc.returncode == 0 and "OK" in proc.stdout, \
        proc.stdout + proc.stderr


@pytest.mark.parametrize("num_threads", [5, 16, 64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [
    (2, 6, 10, 5, 7, 1),     # fewer pixels than threads x chunks
    (1, 10, 6, 3, 3, 2),
    (3, 40, 72, 9, 9, 1),
    (1, 64, 96, 20, 20, 1),  # enough work to wake several threads
], ids=ref.shape_id)
def test_more_threads_than_work(rng, shape, layout, num_threads):
    # Work splits are computed for the requested team before it is trimmed
    # to the work there is: every share must still be a valid range.
    n, c_in, c_out, h, w, groups = shape
    kw = dict(groups=groups, layout=layout)
    case = make_case(rng, dtype=np.float32, layout=layout, n=n, c_in=c_in,
                     c_out=c_out, h=h, w=w, groups=groups)
    for activation in (None, "relu"):
        y = pwconv.pointwise_conv2d(case["x"], case["weight"], case["bias"],
                                    activation=activation, num_threads=num_threads, **kw)
        y_ref = ref.forward(case["x"], case["weight"], case["bias"],
                            activation=activation, **kw)
        assert_close(y, y_ref, k=c_in // groups)
        g = rng.standard_normal(y.shape).astype(np.float32)
        grads = pwconv.pointwise_conv2d_backward(
            g, case["x"], case["weight"], activation=activation, output=y,
            num_threads=num_threads, **kw)
        expected = ref.backward(g, case["x"], case["weight"], activation=activation,
                                output=y, **kw)
        for a, e, k in zip(grads, expected, (c_out // groups, n * h * w, n * h * w)):
            assert_close(a, e, k=k)


def test_show_config_reports_stream_threshold():
    # The size from which outputs are streamed past the cache: half of the
    # last-level cache when the OS reports one, 16 MB otherwise.
    info = pwconv.show_config()
    llc, threshold = info["llc_bytes"], info["stream_min_bytes"]
    assert llc >= 0
    assert threshold == (llc // 2 if llc >= 8 << 20 else 16 << 20)
