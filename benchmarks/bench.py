#!/usr/bin/env python
"""Benchmark pwconv against numpy, PyTorch, ONNX Runtime and LiteRT/XNNPACK.

Run it as a script (``python benchmarks/bench.py``) so that ``import pwconv``
finds the installed package, not the source folder.  See benchmarks/README.md.
"""

import os

# libgomp's idle workers (pwconv's and PyTorch's: one libgomp in this
# process) spin after each parallel region; in an interleaved loop a long
# spin would steal the cores of whichever library runs next (OpenBLAS,
# XNNPACK's pthreadpool), while no spin at all (OMP_WAIT_POLICY=PASSIVE)
# makes every short layer pay a futex wake-up per worker.  A bounded spin
# (20000 pauses, about 0.5 ms on this project's EPYC) keeps what a real
# inference loop gets from back-to-back layers without starving the next
# contender.  Must precede importing any OpenMP user (pwconv, torch), since
# libgomp reads it once at load.
_OMP_SET_HERE = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
if _OMP_SET_HERE:
    os.environ["GOMP_SPINCOUNT"] = "20000"
# OpenBLAS's workers spin for about 2^28 cycles (a tenth of a second) after
# every call by default; on a 2-core machine that keeps the other core busy
# through the next contender's whole turn, whatever it is.  2^4 cycles makes
# them sleep at once, as the other libraries' pools soon do.
_OPENBLAS_SET_HERE = "OPENBLAS_THREAD_TIMEOUT" not in os.environ
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import contextlib
import datetime
import gc
import importlib.util
import io
import platform
import shlex
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import peers  # noqa: E402

SUITES = ("forward", "fused", "overhead", "training", "training_relu6",
          "training_contract")
MODEL_TITLES = {"mobilenet_v2": "MobileNetV2 pointwise",
                "resnet50": "ResNet-50 1x1"}
# Nominal single-core rates, only to share the time budget between layers
# before they are measured; the real per-layer round time decides repeats.
NOMINAL_GFLOPS = {"float32": 70.0, "float64": 35.0}
MIN_SAMPLE_NS = 50_000  # calls shorter than this are timed in batches
TOL = {"float32": 2e-4, "float64": 1e-10}
TOL_GRAD = {"float32": 1e-3, "float64": 1e-9}


# The rest of the contract under training: ShuffleNet v1's (g = 3, 224x224)
# grouped 1x1 layers and ResNet-50's strided 1x1 shortcuts.  Layers are
# (name, C_in, C_out, H, W, stride[, groups]).
CONTRACT_LAYERS = [
    ("shuffle.s2.reduce", 240, 60, 28, 28, 1, 3),
    ("shuffle.s2.expand", 60, 240, 28, 28, 1, 3),
    ("shuffle.s3.reduce", 480, 120, 14, 14, 1, 3),
    ("shuffle.s3.expand", 120, 480, 14, 14, 1, 3),
    ("shuffle.s4.reduce", 960, 240, 7, 7, 1, 3),
    ("shuffle.s4.expand", 240, 960, 7, 7, 1, 3),
    ("resnet.s1.shortcut", 256, 512, 56, 56, 2),
    ("resnet.s2.shortcut", 512, 1024, 28, 28, 2),
    ("resnet.s3.shortcut", 1024, 2048, 14, 14, 2),
]


def layer_groups(layer):
    return layer[6] if len(layer) > 6 else 1


def layer_flops(layer, batch):
    """2 * multiply-adds of one pass of `layer` at `batch`."""
    _, ci, co, h, w, s = layer[:6]
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    return 2 * batch * ho * wo * ci * co // layer_groups(layer)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def load_suites():
    try:
        from pwconv._suites import mobilenet_v2, resnet50
    except Exception:
        # pwconv not installed (or broken): the suite definitions are plain
        # Python, so load that one file from the source tree.
        path = os.path.join(REPO, "pwconv", "_suites.py")
        spec = importlib.util.spec_from_file_location("_pwconv_suites", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mobilenet_v2, resnet50 = mod.mobilenet_v2, mod.resnet50
    return {"mobilenet_v2": mobilenet_v2(), "resnet50": resnet50()}


def pwconv_info():
    try:
        import pwconv
    except Exception as exc:
        return None, f"not importable ({type(exc).__name__}: {exc})"
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            ret = pwconv.show_config()
    except Exception as exc:
        return getattr(pwconv, "__version__", "?"), f"show_config failed: {exc}"
    text = buf.getvalue().strip()
    if ret is not None and not text:
        text = ret if isinstance(ret, str) else repr(ret)
    return getattr(pwconv, "__version__", "?"), text


# --------------------------------------------------------------------------
# Plan


class Config:
    """One table: a suite at one model, batch, layout, dtype and thread count."""

    def __init__(self, suite, model, batch, layout, dtype, threads, layers,
                 contenders, base, flop_factor=1, training=False, title=None,
                 activation=None):
        self.suite, self.model, self.batch = suite, model, batch
        self.activation = activation
        self.layout, self.dtype, self.threads = layout, dtype, threads
        self.layers, self.contenders, self.base = layers, contenders, base
        self.flop_factor, self.training = flop_factor, training
        self.title = title or (f"{MODEL_TITLES.get(model, model)}, batch {batch}, "
                               f"{layout}, {dtype}, {threads} thread"
                               f"{'s' if threads > 1 else ''}")
        # Tiny layers get a floor, or their share of the budget rounds to zero.
        self.min_seconds = 0.5 if suite == "overhead" else 0.0
        self.rows = []  # (layer, flops, {contender: ns}, repeats)
        self.pass_medians = {}  # layer index -> {contender: [ns or None per pass]}
        self.notes = []

    def key(self):
        return (self.suite, self.model, self.batch, self.layout, self.dtype,
                self.threads)

    def nominal_rate(self):
        """FLOP/s assumed before anything is measured, to share the budget."""
        return NOMINAL_GFLOPS[self.dtype] * 1e9 * self.threads ** 0.85

    def estimate_s(self):
        rate = self.nominal_rate()
        total = 0.0
        for layer in self.layers:
            total += layer_flops(layer, self.batch) * self.flop_factor
        return total * len(self.contenders) / rate


def pick(layers, quick):
    if not quick:
        return list(layers)
    # Small, middle and last layer: different shapes, still seconds to run.
    idx = sorted({0, len(layers) // 2, len(layers) - 1})
    return [layers[i] for i in idx]


def keep(args, name):
    """pwconv always runs; --peers narrows the others (for scaling runs, where
    two OpenMP runtimes with big teams in one process fight each other)."""
    return args.peers is None or name.startswith("pwconv") or name in args.peers


def build_plan(args, suites):
    plan = []
    threads = args.threads
    layouts, dtypes = args.layout, args.dtype
    one_thread = [threads[0]] if 1 not in threads else [1]
    mnv2 = pick(suites["mobilenet_v2"], args.quick)
    rn50 = pick(suites["resnet50"], args.quick)
    if "forward" in args.suite:
        for model, batch, layers in [("mobilenet_v2", 1, mnv2),
                                     ("mobilenet_v2", 8, mnv2),
                                     ("resnet50", 1, rn50)]:
            for dtype in dtypes:
                for layout in layouts:
                    for t in threads:
                        names = peers.forward_contenders(layout, dtype)
                        cont = [(n, peers.FORWARD[n][0]) for n in names
                                if keep(args, n) and (t > 1 or n != "pwconv 1t")]
                        plan.append(Config("forward", model, batch, layout, dtype,
                                           t, layers, cont, "pwconv"))
    if "fused" in args.suite and "float32" in dtypes:
        for layout in layouts:
            for t in one_thread:
                plan.append(Config("fused", "mobilenet_v2", 1, layout, "float32",
                                   t, mnv2, list(peers.FUSED.items()), "plain"))
    if "overhead" in args.suite and "float32" in dtypes:
        head = [l for l in suites["mobilenet_v2"] if (l[1], l[2], l[3]) == (320, 1280, 7)]
        layers = [("tiny 1x1 8->8", 8, 8, 1, 1, 1)] + head[:1]
        for layout in layouts:
            for t in one_thread:
                plan.append(Config("overhead", "overhead", 1, layout, "float32", t,
                                   layers, list(peers.OVERHEAD.items()),
                                   "pwconv layer",
                                   title=f"Python overhead, batch 1, {layout}, "
                                         f"float32, {t} thread"))
    if "training" in args.suite and "float32" in dtypes:
        for batch in (4, 16):
            for layout in layouts:
                for t in threads:
                    cont = [(n, b) for n, (b, lays) in peers.TRAINING.items()
                            if layout in lays and keep(args, n)
                            and (t > 1 or n != "pwconv 1t")]
                    plan.append(Config("training", "mobilenet_v2", batch, layout,
                                       "float32", t, mnv2, cont, "pwconv",
                                       flop_factor=3, training=True))
        for layout in layouts:
            for t in one_thread:
                plan.append(Config(
                    "train_parts", "mobilenet_v2", 4, layout, "float32", t, mnv2,
                    list(peers.TRAIN_PARTS.items()), "forward", training=True,
                    title=f"pwconv passes alone, MobileNetV2 pointwise, batch 4, "
                          f"{layout}, float32, {t} thread"))
    if "training_relu6" in args.suite and "float32" in dtypes:
        for layout in layouts:
            for t in one_thread:
                cont = [(n, b) for n, (b, lays) in peers.TRAINING.items()
                        if layout in lays and keep(args, n)]
                plan.append(Config(
                    "training_relu6", "mobilenet_v2", 4, layout, "float32", t, mnv2,
                    cont, "pwconv", flop_factor=3, training=True, activation="relu6",
                    title=f"MobileNetV2 pointwise with relu6 on every layer, batch 4, "
                          f"{layout}, float32, {t} thread"))
    if "training_contract" in args.suite and "float32" in dtypes:
        layers = pick(CONTRACT_LAYERS, args.quick)
        for layout in layouts:
            for t in one_thread:
                cont = [(n, b) for n, (b, lays) in peers.TRAINING.items()
                        if layout in lays and keep(args, n) and n != "pwconv 1t"]
                plan.append(Config(
                    "training_contract", "contract", 4, layout, "float32", t, layers,
                    cont, "pwconv", flop_factor=3, training=True,
                    title=f"Grouped and strided layers (ShuffleNet v1 g=3, ResNet-50 "
                          f"shortcuts), training step, batch 4, {layout}, float32, "
                          f"{t} thread"))
    return plan


# --------------------------------------------------------------------------
# Checking and timing


def _rel_err(got, ref):
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"shape {got.shape}, expected {ref.shape}")
    scale = max(1.0, float(np.abs(ref).max()))
    return float(np.abs(got - ref).max()) / scale


def check(cfg, case, name, runner):
    """Max relative error of this contender's first result (raises if off)."""
    res = runner.result()
    if cfg.suite.startswith("training") or (cfg.suite == "train_parts"
                                            and name != "forward"):
        gx, gw, gb = case.ref_grads
        if cfg.suite.startswith("training"):
            y, got = res[0], res[1:]
            errs = [_rel_err(y, case.ref)]
            tols = [TOL[cfg.dtype]]
        else:
            got, errs, tols = res, [], []
        for g, r in zip(got, (gx, gw, gb)):
            if g is None:
                continue
            if g.ndim != r.ndim:
                g = np.asarray(g).reshape(r.shape)
            errs.append(_rel_err(g, r))
            tols.append(TOL_GRAD[cfg.dtype])
    else:
        ref = getattr(runner, "expected", case.ref)
        errs, tols = [_rel_err(res, ref)], [TOL[cfg.dtype]]
    err = max(errs)
    if any(e > t for e, t in zip(errs, tols)):
        raise AssertionError(f"max relative error {err:.2e} over tolerance")
    return err


BURST = 4   # calls per contender turn when several threads run
# The run goes over all its tables this many times, each pass timing a share of
# every layer's repeats.  On a shared host there are stretches of a second to
# several in which the second vCPU is taken away (two threads then run no
# faster than one).  When a table's passes ran back to back, a small table's
# passes all fell within a few seconds (MobileNetV2 b1 at two threads takes
# about 3 s in all), and one such stretch held most samples of several
# neighbouring layers.  With every pass going over every table, a layer's
# passes are minutes apart, and a layer's time is the median of its passes'
# medians: stretches that spoil up to two passes of a layer move it only
# within the spread of its other passes (measured, pwconv 1t / pwconv per
# layer and pass: one pass in three of that table at 1.00-1.07 for 18 of its
# 34 layers, and in another run one pass in five at 1.00-1.08 for 28 of
# them).  The pooled median of all samples moved with any such pass, since
# the spoiled samples all sat on one side of it.
PASSES = 5


def build_runners(cfg, li, layer, case, first_pass):
    """The contenders that run on this layer, each called once (lazy init,
    packing, allocations); on the first pass that call is checked."""
    runners = []
    for cname, builder in cfg.contenders:
        try:
            r = builder(case, cfg.threads)
            r.fn()
            if first_pass:
                err = check(cfg, case, cname, r)
                if li == 0:
                    extra = f"; {r.note}" if r.note else ""
                    cfg.notes.append(f"{cname}: checked against float64 numpy, "
                                     f"max rel. error {err:.1e} (first layer)"
                                     f"{extra}")
            runners.append((cname, r))
        except peers.Unavailable as exc:
            if li == 0 and first_pass:
                cfg.notes.append(f"{cname}: skipped, {exc}")
        except Exception as exc:
            if first_pass:
                cfg.notes.append(f"{cname}: FAILED on {layer[0]}: "
                                 f"{type(exc).__name__}: {exc}")
    return runners


def time_repeats(runners, inner, burst, reps, order, samples):
    """reps repeats, each timing every contender once (a burst of calls when
    several threads run) in a new order drawn from the generator `order`."""
    gc.disable()
    try:
        for rep in range(reps):
            for i in order.permutation(len(runners)):
                cname, r = runners[i]
                fn, m = r.fn, inner[cname]
                for _ in range(burst):
                    if m == 1:
                        t0 = time.perf_counter_ns()
                        fn()
                        t1 = time.perf_counter_ns()
                    else:
                        t0 = time.perf_counter_ns()
                        for _ in range(m):
                            fn()
                        t1 = time.perf_counter_ns()
                    samples[cname].append((t1 - t0) / m)
    finally:
        gc.enable()


class TableRun:
    """The samples of one table, gathered pass by pass.  The first pass sets
    each layer's batching and repeats; every pass times its share of them."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.plans = {}     # layer index -> (inner, repeats), set on the first pass
        self.samples = {}   # layer index -> {contender: [[ns per call] per pass]}
        self.flops = {}

    def run_pass(self, p, budget_for, spend, rmin, rmax, fixed_repeats):
        cfg = self.cfg
        undo = peers.set_global_threads(cfg.threads)
        # With a team of threads each turn is a burst of calls, each timed on
        # its own: the first call after another library ran may wait for that
        # library's spinning workers to give the cores back (on a 2-core
        # machine for milliseconds); the median over bursts then reflects
        # back-to-back calls, as in a real inference loop, while the libraries
        # still alternate throughout the run.
        burst = BURST if cfg.threads > 1 else 1
        try:
            for li, layer in enumerate(cfg.layers):
                if p > 0 and (li not in self.plans
                              or self._share(li, p) == 0):
                    continue   # nothing ran on it in the first pass, or no repeats left
                t_setup = time.perf_counter()
                case = self._case(layer)
                runners = build_runners(cfg, li, layer, case, p == 0)
                if p == 0:
                    self.flops[li] = case.flops * cfg.flop_factor
                    if not runners:
                        spend(cfg, case, time.perf_counter() - t_setup)
                        continue
                    inner, reps, round_ns = self._plan(
                        runners, burst, budget_for(cfg, case), rmin, rmax,
                        fixed_repeats)
                    self.plans[li] = (inner, reps)
                    self.samples[li] = {c: [[] for _ in range(PASSES)]
                                        for c, _ in runners}
                    # What this layer will cost over the whole run: its set-up
                    # (checks included, so an overestimate) once per pass, and
                    # its timed repeats.
                    spend(cfg, case, (time.perf_counter() - t_setup) * PASSES
                          + reps * round_ns / 1e9)
                inner, _ = self.plans[li]
                runners = [(c, r) for c, r in runners if c in self.samples[li]]
                # A new order every repeat, so each contender follows every
                # other one about equally often.  Rotating one fixed order
                # kept each behind the same neighbour all run long: with two
                # threads the one behind another library's still-spinning
                # workers paid for them every time.  Seeded per layer and
                # pass, so a rerun repeats it.
                order = np.random.default_rng((li, p))
                this_pass = {c: v[p] for c, v in self.samples[li].items()}
                time_repeats(runners, inner, burst, self._share(li, p), order,
                             this_pass)
                del runners, case
        finally:
            undo()

    def _share(self, li, p):
        reps = self.plans[li][1]
        return reps // PASSES + (1 if p < reps % PASSES else 0)

    def _case(self, layer):
        cfg = self.cfg
        name, ci, co, h, w, s = layer[:6]
        return peers.Case(name, cfg.batch, ci, co, h, w, s, cfg.layout,
                          cfg.dtype, training=cfg.training,
                          activation=cfg.activation, groups=layer_groups(layer))

    @staticmethod
    def _plan(runners, burst, budget_s, rmin, rmax, fixed_repeats):
        """A second call times one round, which sets the batching and the
        repeats."""
        est, inner = {}, {}
        for cname, r in runners:
            t0 = time.perf_counter_ns()
            r.fn()
            est[cname] = max(1, time.perf_counter_ns() - t0)
            inner[cname] = max(1, MIN_SAMPLE_NS // est[cname])
        round_ns = sum(est[c] * inner[c] for c in est) * burst
        if fixed_repeats:
            reps = fixed_repeats
        else:
            reps = int(budget_s * 1e9 / round_ns)
            reps = max(rmin, min(rmax, reps))
        return inner, reps, round_ns

    def finish(self, progress):
        """Each layer's median per contender, into cfg.rows."""
        cfg = self.cfg
        for li, layer in enumerate(cfg.layers):
            if li not in self.plans:
                cfg.rows.append((layer, self.flops[li], {}, 0))
                continue
            cfg.pass_medians[li] = {
                c: [statistics.median(s) if s else None for s in v]
                for c, v in self.samples[li].items()}
            med = {c: statistics.median([m for m in v if m is not None])
                   for c, v in cfg.pass_medians[li].items() if any(v)}
            cfg.rows.append((layer, self.flops[li], med, self.plans[li][1]))
            progress(cfg, li, layer, med, self.plans[li][1])


# --------------------------------------------------------------------------
# Report


def totals(cfg):
    """{contender: (total_ns, flops, layers_run)} and {contender: ratio}.

    A ratio is peer time over base time on the layers both ran, so a missing
    layer never skews it."""
    names = [c for c, _ in cfg.contenders]
    tot = {}
    for c in names:
        ns = sum(m[c] for _, _, m, _ in cfg.rows if c in m)
        fl = sum(f for _, f, m, _ in cfg.rows if c in m)
        k = sum(1 for _, _, m, _ in cfg.rows if c in m)
        if k:
            tot[c] = (ns, fl, k)
    ratio = {}
    if cfg.base in tot:
        for c in tot:
            both = [m for _, _, m, _ in cfg.rows if c in m and cfg.base in m]
            if both:
                ratio[c] = sum(m[c] for m in both) / sum(m[cfg.base] for m in both)
    return tot, ratio


def fmt_ms(ns):
    ms = ns / 1e6
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def render_overhead(cfg):
    out = [f"### {cfg.title}", "",
           "| contender | tiny layer, us per call | 7x7 320->1280, us per call | "
           "tiny / 7x7 |", "|---|---:|---:|---:|"]
    if len(cfg.rows) == 2:
        tiny, head = cfg.rows[0][2], cfg.rows[1][2]
        for c, _ in cfg.contenders:
            if c in tiny and c in head:
                out.append(f"| {c} | {tiny[c] / 1e3:.2f} | {head[c] / 1e3:.1f} | "
                           f"{100 * tiny[c] / head[c]:.2f}% |")
            else:
                out.append(f"| {c} | n/a | n/a | n/a |")
        out += ["", f"Repeats: {cfg.rows[0][3]} (tiny, each sample a batch of "
                f"calls) and {cfg.rows[1][3]} (7x7)."]
    if cfg.notes:
        out.append("")
        out.extend(f"- {n}" for n in cfg.notes)
    out.append("")
    return "\n".join(out)


def render_config(cfg):
    if cfg.suite == "overhead":
        return render_overhead(cfg)
    tot, ratio = totals(cfg)
    n_layers = len(cfg.layers)
    gflop = sum(f for _, f, _, _ in cfg.rows) / 1e9
    reps = [r for _, _, _, r in cfg.rows if r]
    rep_txt = (f"{min(reps)}-{max(reps)}" if reps and min(reps) != max(reps)
               else (str(reps[0]) if reps else "0"))
    out = [f"### {cfg.title}", "",
           f"{n_layers} layer{'s' if n_layers > 1 else ''}, {gflop:.3f} GFLOP per "
           f"{'training step' if cfg.suite.startswith('training') else 'pass'}, "
           f"{rep_txt} repeats per layer.", ""]
    base = cfg.base
    out.append(f"| contender | total ms | GFLOP/s | ratio vs {base} (time / {base} time) |")
    out.append("|---|---:|---:|---:|")
    for c, _ in cfg.contenders:
        if c not in tot:
            out.append(f"| {c} | n/a | n/a | n/a |")
            continue
        ns, fl, k = tot[c]
        part = "" if k == n_layers else f" ({k}/{n_layers} layers)"
        r = f"{ratio[c]:.2f}" if c in ratio else "n/a"
        out.append(f"| {c}{part} | {fmt_ms(ns)} | {fl / ns:.1f} | {r} |")
    if cfg.notes:
        out.append("")
        out.extend(f"- {n}" for n in cfg.notes)
    names = [c for c, _ in cfg.contenders if c in tot]
    if cfg.rows and names:
        out += ["", "<details><summary>per layer (median ms per call)</summary>", "",
                "| layer | C_in->C_out | H x W /s | MFLOP | repeats | "
                + " | ".join(names) + f" | {base} GFLOP/s |",
                "|---|---|---|---:|---:|" + "---:|" * len(names) + "---:|"]
        for layer, fl, med, r in cfg.rows:
            lname, ci, co, h, w, s = layer[:6]
            groups = f" in {layer_groups(layer)} groups" if layer_groups(layer) > 1 else ""
            cells = [fmt_ms(med[c]) if c in med else "-" for c in names]
            g = f"{fl / med[base]:.1f}" if base in med else "-"
            out.append(f"| {lname} | {ci}->{co}{groups} | {h}x{w}/{s} | {fl / 1e6:.1f} | "
                       f"{r} | " + " | ".join(cells) + f" | {g} |")
        out += ["", "</details>"]
    out.append("")
    return "\n".join(out)


def find(results, suite, model, batch, layout, dtype, threads):
    for cfg in results:
        if cfg.key() == (suite, model, batch, layout, dtype, threads):
            return cfg
    return None


def figures(results):
    """The headline numbers, each as 'pwconv is X times as fast as ...'."""
    lines = []

    def tt(cfg, c):
        return totals(cfg)[0].get(c) if cfg else None

    def ratio(cfg, c, base=None):
        """peer time / base time on the layers both ran (>1: pwconv faster)."""
        if cfg is None:
            return None
        base = base or cfg.base
        both = [m for _, _, m, _ in cfg.rows if c in m and base in m]
        if not both or len(both) < len(cfg.rows):
            return None
        return sum(m[c] for m in both) / sum(m[base] for m in both)

    def gf(cfg, c):
        t = tt(cfg, c)
        return t[1] / t[0] if t else None

    def f(x, digits=2):
        return "n/a" if x is None else f"{x:.{digits}f}"

    def by_pass(cfg, c, base):
        """The same ratio from each pass's own per-layer medians: shows
        whether a figure moved with one or two passes (a stretch in which
        the host took a vCPU away) or with all of them."""
        if cfg is None or not cfg.pass_medians:
            return "n/a"
        none = [None] * PASSES
        out = []
        for p in range(PASSES):
            pairs = [(d.get(c, none)[p], d.get(base, none)[p])
                     for d in cfg.pass_medians.values()]
            if any(a is None or b is None for a, b in pairs):
                out.append("n/a")
            else:
                out.append(f(sum(a for a, _ in pairs) / sum(b for _, b in pairs)))
        return ", ".join(out)

    def cross(a, ca, b, cb):
        """time of cb in b / time of ca in a (same layers)."""
        ta, tb = tt(a, ca), tt(b, cb)
        if not ta or not tb or ta[2] != tb[2]:
            return None
        return tb[0] / ta[0]

    F = lambda *k: find(results, *k)
    m1h = F("forward", "mobilenet_v2", 1, "NHWC", "float32", 1)
    m1c = F("forward", "mobilenet_v2", 1, "NCHW", "float32", 1)
    r1h = F("forward", "resnet50", 1, "NHWC", "float32", 1)
    r1c = F("forward", "resnet50", 1, "NCHW", "float32", 1)
    lines.append("Ratios are peer time / pwconv time (above 1: pwconv is faster), "
                 "summed over the suite's layers.")
    lines.append("")
    lines.append(f"- MobileNetV2 b1, NHWC, float32, 1 thread: pwconv "
                 f"{f(gf(m1h, 'pwconv'), 1)} GFLOP/s; vs XNNPACK {f(ratio(m1h, 'XNNPACK'))}, "
                 f"numpy {f(ratio(m1h, 'numpy'))}, torch CL {f(ratio(m1h, 'torch CL'))}, "
                 f"ORT (NCHW) {f(cross(m1h, 'pwconv', m1c, 'ORT'))}")
    lines.append(f"- ResNet-50 1x1 b1, NHWC, float32, 1 thread: pwconv "
                 f"{f(gf(r1h, 'pwconv'), 1)} GFLOP/s; vs XNNPACK {f(ratio(r1h, 'XNNPACK'))}, "
                 f"numpy {f(ratio(r1h, 'numpy'))}")
    lines.append(f"- pwconv NCHW speed / NHWC speed, 1 thread, side by side in the NCHW "
                 f"table: MobileNetV2 b1 {f(ratio(m1c, 'pwconv NHWC'))}, ResNet-50 b1 "
                 f"{f(ratio(r1c, 'pwconv NHWC'))} (across the two tables: "
                 f"{f(cross(m1c, 'pwconv', m1h, 'pwconv'))} / "
                 f"{f(cross(r1c, 'pwconv', r1h, 'pwconv'))})")
    lines.append(f"- NCHW, 1 thread, vs torch NCHW: MobileNetV2 b1 {f(ratio(m1c, 'torch'))}, "
                 f"ResNet-50 b1 {f(ratio(r1c, 'torch'))}; vs numpy "
                 f"{f(ratio(m1c, 'numpy'))} / {f(ratio(r1c, 'numpy'))}")
    two = []
    for model, batch, lab in [("mobilenet_v2", 1, "MobileNetV2 b1"),
                              ("mobilenet_v2", 8, "MobileNetV2 b8"),
                              ("resnet50", 1, "ResNet-50 b1")]:
        c2 = F("forward", model, batch, "NHWC", "float32", 2)
        c1 = F("forward", model, batch, "NHWC", "float32", 1)
        if c2:
            two.append(f"{lab} vs XNNPACK 2t {f(ratio(c2, 'XNNPACK'))}, "
                       f"pwconv 2t/1t speedup {f(ratio(c2, 'pwconv 1t'))} side by side "
                       f"in the 2-thread table (by pass: {by_pass(c2, 'pwconv 1t', 'pwconv')}; "
                       f"{f(cross(c2, 'pwconv', c1, 'pwconv'))} "
                       f"across the two tables; XNNPACK's own across them "
                       f"{f(cross(c2, 'XNNPACK', c1, 'XNNPACK'))})")
    lines.append("- 2 threads, NHWC, float32: " + ("; ".join(two) or "n/a"))
    fu = []
    for lay in ("NHWC", "NCHW"):
        c = F("fused", "mobilenet_v2", 1, lay, "float32", 1)
        fu.append(f"{lay} {f(ratio(c, 'fused relu6+residual', 'plain'))} with the residual "
                  f"in its own buffer (by pass: "
                  f"{by_pass(c, 'fused relu6+residual', 'plain')}), "
                  f"{f(ratio(c, 'fused, in place (out=residual)', 'plain'))} "
                  f"in place (out=residual) (plain + numpy add/clip / plain "
                  f"{f(ratio(c, 'plain + numpy epilogue', 'plain'))})")
    lines.append("- Fused relu6 + residual time / plain time, MobileNetV2 b1, 1 thread: "
                 + "; ".join(fu))
    f64 = []
    for lay in ("NHWC", "NCHW"):
        c = F("forward", "mobilenet_v2", 1, lay, "float64", 1)
        f64.append(f"{lay} {f(ratio(c, 'numpy'))} (pwconv {f(gf(c, 'pwconv'), 1)} GFLOP/s)")
    lines.append("- float64 vs numpy, MobileNetV2 b1, 1 thread: " + "; ".join(f64))
    ov = []
    for lay in ("NHWC", "NCHW"):
        c = F("overhead", "overhead", 1, lay, "float32", 1)
        if c and len(c.rows) == 2:
            tiny, head = c.rows[0][2], c.rows[1][2]
            for api in ("pwconv layer", "pwconv functional"):
                if api in tiny and api in head:
                    ov.append(f"{lay} {api.split()[1]}: {tiny[api] / 1e3:.1f} us per call "
                              f"= {100 * tiny[api] / head[api]:.1f}% of the 7x7 320->1280 call")
    lines.append("- Python overhead (tiny-layer call time): " + ("; ".join(ov) or "n/a"))
    tr = []
    for lay, torch_name in (("NHWC", "torch CL"), ("NCHW", "torch")):
        c = F("training", "mobilenet_v2", 4, lay, "float32", 1)
        rs = [x for x in (ratio(c, "numpy"), ratio(c, torch_name)) if x is not None]
        tr.append(f"{lay} {f(min(rs) if rs else None)} (pwconv {f(gf(c, 'pwconv'), 1)} "
                  f"GFLOP/s; numpy {f(ratio(c, 'numpy'))}, {torch_name} "
                  f"{f(ratio(c, torch_name))})")
    lines.append("- Training step (fwd + dX + dW + db), MobileNetV2 b4, 1 thread, vs "
                 "fastest of numpy/torch: " + "; ".join(tr))
    sp = []
    for batch in (4, 16):
        for lay in ("NHWC", "NCHW"):
            c1 = F("training", "mobilenet_v2", batch, lay, "float32", 1)
            c2 = F("training", "mobilenet_v2", batch, lay, "float32", 2)
            if c2:
                sp.append(f"b{batch} {lay} {f(ratio(c2, 'pwconv 1t'))} "
                          f"({f(cross(c2, 'pwconv', c1, 'pwconv'))})")
    lines.append("- Training 2-thread / 1-thread speedup, side by side in the 2-thread "
                 "table (across the two tables): " + (", ".join(sp) or "n/a"))
    rl = []
    for lay, torch_name in (("NHWC", "torch CL"), ("NCHW", "torch")):
        c = F("training_relu6", "mobilenet_v2", 4, lay, "float32", 1)
        plain = F("training", "mobilenet_v2", 4, lay, "float32", 1)
        if c:
            rs = [x for x in (ratio(c, "numpy"), ratio(c, torch_name)) if x is not None]
            rl.append(f"{lay} {f(min(rs) if rs else None)} (numpy {f(ratio(c, 'numpy'))}, "
                      f"{torch_name} {f(ratio(c, torch_name))}; pwconv with relu6 / without "
                      f"{f(cross(plain, 'pwconv', c, 'pwconv'))})")
    lines.append("- Training step with relu6 on every layer, MobileNetV2 b4, 1 thread, vs "
                 "fastest of numpy/torch: " + ("; ".join(rl) or "n/a"))
    gw = []
    for lay in ("NHWC", "NCHW"):
        c = F("train_parts", "mobilenet_v2", 4, lay, "float32", 1)
        if c:
            gw.append(f"{lay} {f(gf(c, 'grad weight'), 1)} / {f(gf(c, 'forward'), 1)} "
                      f"= {f(ratio(c, 'forward', 'grad weight'))} (grad input "
                      f"{f(gf(c, 'grad input'), 1)})")
    lines.append("- pwconv grad weight GFLOP/s / forward GFLOP/s, MobileNetV2 b4, "
                 "1 thread: " + ("; ".join(gw) or "n/a"))

    def part_ratio(cfg, c, grouped):
        rows = [(m[c], m["pwconv"]) for layer, _, m, _ in cfg.rows
                if c in m and "pwconv" in m and (layer_groups(layer) > 1) == grouped]
        return sum(a for a, _ in rows) / sum(b for _, b in rows) if rows else None

    ct = []
    for lay, torch_name in (("NHWC", "torch CL"), ("NCHW", "torch")):
        c = F("training_contract", "contract", 4, lay, "float32", 1)
        if c:
            ct.append(f"{lay} grouped: numpy {f(part_ratio(c, 'numpy', True))}, "
                      f"{torch_name} {f(part_ratio(c, torch_name, True))}; strided: numpy "
                      f"{f(part_ratio(c, 'numpy', False))}, {torch_name} "
                      f"{f(part_ratio(c, torch_name, False))} (pwconv {f(gf(c, 'pwconv'), 1)} "
                      f"GFLOP/s over both)")
    lines.append("- Training step on grouped (ShuffleNet v1 g=3) and strided (ResNet-50 "
                 "shortcuts) layers, b4, 1 thread: " + ("; ".join(ct) or "n/a"))
    return "\n".join(lines)


def loadavg():
    try:
        with open("/proc/loadavg") as fh:
            return fh.read().split()[0]
    except OSError:
        return "?"


def cpu_info():
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("?", "", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    want = ["avx2", "fma", "avx512f", "avx512vl", "avx512_bf16", "asimd"]
    have = [f for f in want if f in flags]
    return model, os.cpu_count(), usable, have


def render(results, args, meta):
    model, ncpu, usable, flags = cpu_info()
    vers = meta["versions"]
    pw_ver, pw_cfg = meta["pwconv"]
    out = ["# pwconv benchmarks", "",
           "Generated by `benchmarks/bench.py`; do not edit by hand, rerun it. "
           f"Run on {meta['date']}, {meta['elapsed'] / 60:.1f} minutes."
           + (" **Quick smoke run (`--quick`): few layers and repeats, not "
              "representative.**" if args.quick else ""), "",
           "## Machine and software", "",
           f"- CPU: {model}; {ncpu} logical CPUs ({usable} usable); "
           f"flags: {', '.join(flags) or 'none of avx2/avx512/asimd'}"
           f"{'' if 'avx512f' in flags else ' (no AVX-512)'}",
           f"- Python {platform.python_version()} ({platform.system()} "
           f"{platform.machine()})",
           "- " + ", ".join(f"{k} {v}" for k, v in vers.items()
                            if v and k != "pwconv"),
           "- not importable: " + (", ".join(k for k, v in vers.items() if not v)
                                   or "none"),
           f"- pwconv {pw_ver or '(missing)'}: "
           + ("; ".join(l.strip() for l in pw_cfg.splitlines() if l.strip())
              if pw_cfg else "n/a"),
           f"- Command: `{meta['command']}`",
           f"- Load average (1 min) at start {meta['load'][0]}, at end "
           f"{meta['load'][1]}: other work on the machine skews the timings, "
           "multi-threaded ones most",
           f"- OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
           f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}"
           f"{' (set by the script)' if meta['omp_set'] else ' (from the environment)'}; "
           f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')}"
           f"{' (set by the script)' if _OPENBLAS_SET_HERE else ' (from the environment)'}",
           "",
           "## Method", "",
           "With more than one thread, each turn is a burst of "
           f"{BURST} calls, each timed and kept as a sample, so a library whose "
           "workers were still spinning when the next one started does not set "
           "the median. "
           "All contenders run in one process, interleaved: for each layer, after "
           "a first call (checked once against a float64 numpy reference) and a "
           "second, estimating call, each repeat times one call of every "
           "contender with `time.perf_counter_ns` (calls under 50 us are timed "
           "in batches), in a new random order each repeat (seeded per layer), so "
           "each contender follows every other one about equally often. The "
           f"run goes over all its tables {PASSES} times, each pass timing a "
           "share of every layer's repeats (the contenders set up afresh, the "
           "first call untimed), so a layer's passes are minutes apart and a "
           "stretch of seconds in which the host takes a vCPU away holds at "
           "most one pass's share of a layer's samples. A layer's time is the "
           "median of its passes' medians, so up to two spoiled passes move it "
           "only within the spread of the others; a suite's time is the sum of its layers' "
           "medians; GFLOP/s = 2*N*Ho*Wo*C_in*C_out / time (three such GEMMs "
           "per training step). Repeats are chosen per layer to fit the time "
           "budget. Inputs are uniform in [-1, 1).",
           "",
           "- pwconv: `PointwiseConv2d(..., num_threads=n)` with weights assigned "
           "once, called as `layer(x, out=y)` with `y = pwconv.empty(...)` (a "
           "64-byte aligned buffer, as the README advises; inputs are plain numpy "
           "arrays, residuals aligned like `out`, as an earlier layer's output "
           "would be); training uses `layer(x, out=y)` "
           "then `layer.backward(grad_output, out=gx)` (grad input into a "
           "buffer allocated once, as numpy's gradients are).",
           "- pwconv 1t (in multi-thread tables only): the same pwconv call on one "
           "thread, so pwconv's own multi-thread speedup is also measured side by "
           "side, interleaved, rather than only across two tables run minutes "
           "apart.",
           "- numpy: NHWC as `matmul(x.reshape(N*H*W, C_in), w.T, out=)` + bias; "
           "NCHW as a stacked `matmul(w, x.reshape(N, C_in, H*W), out=)` (one "
           "GEMM per image) + bias; BLAS threads set with threadpoolctl. "
           "Training adds the grad-input and grad-weight GEMMs and a sum.",
           "- torch: `F.conv2d` under `torch.inference_mode()`, NCHW (`torch`) "
           "or channels_last (`torch CL`, the NHWC contender), "
           "`torch.set_num_threads(n)`; training: autograd with "
           "`requires_grad` on x, w, b, grads reset to None each step.",
           "- Training with relu6: relu6 after every layer. pwconv: "
           "`activation='relu6'` (clamped in the forward epilogue, the mask "
           "applied while grad output is read); numpy: `clip` in place, then "
           "grad output masked by `0 < y < 6` into a buffer of its own; torch: "
           "`F.relu6` under autograd. Where the float64 pre-activation lies "
           "within 1e-4 of 0 or 6, grad output is zero, so the check does not "
           "depend on which side float32 rounding puts it.",
           "- Grouped and strided layers: ShuffleNet v1's grouped 1x1 layers "
           "(g = 3) and ResNet-50's strided 1x1 shortcuts, training step at "
           "batch 4. pwconv: `groups=`, `stride=` on the layer; torch: the same "
           "arguments to `F.conv2d`; numpy: the strided pixels copied out, one "
           "GEMM per group and pass into slices of the results, grad input "
           "scattered into an array zeroed once, outside the timed call.",
           "- ORT: one-node Conv model built in memory with `onnx.helper`, NCHW, "
           "`intra_op_num_threads=n`, `inter_op_num_threads=1`, sequential, "
           "spinning off, output bound with IO "
           "binding.",
           "- XNNPACK: LiteRT `Interpreter(model_content=..., num_threads=n)` on "
           "a one-op CONV_2D flatbuffer (float32 weights and bias) built with "
           "`ai_edge_litert.schema_py_generated`; the XNNPACK default delegate is "
           "verified to have taken the op; the timed call is `invoke()` with "
           "the input already in the interpreter's buffer.",
           "",
           "## Figures", "", figures(results), ""]
    for suite, head in [("forward", "Forward"), ("fused", "Fused epilogue"),
                        ("overhead", "Python overhead"), ("training", "Training"),
                        ("training_relu6", "Training with relu6"),
                        ("training_contract", "Training across the contract"),
                        ("train_parts", "pwconv training passes alone")]:
        cfgs = [c for c in results if c.suite == suite]
        if not cfgs:
            continue
        out += [f"## {head}", ""]
        if suite == "overhead":
            out += ["The tiny layer's compute is negligible, so its call time is "
                    "the cost of the Python layer (argument checks, dispatch, "
                    "releasing the GIL); it is set against one call on the "
                    "MobileNetV2 head layer.", ""]
        out += [render_config(c) for c in cfgs]
    for path in args.include or []:
        # Reports this script wrote on other machines, kept verbatim with
        # their headings pushed down one level.
        with open(path) as f:
            text = f.read()
        out += [f"## Included: {os.path.relpath(path, REPO)}", "",
                "\n".join("#" + line if line.startswith("#") else line
                          for line in text.splitlines()), ""]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--suite", action="append", choices=SUITES,
                   help="suite to run (repeatable; default: all)")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated thread counts")
    p.add_argument("--layout", action="append", choices=("NHWC", "NCHW"),
                   help="layout (repeatable; default: both)")
    p.add_argument("--dtype", action="append", choices=("float32", "float64"),
                   help="dtype (repeatable; default: both; float64 runs only "
                        "forward against numpy and torch)")
    p.add_argument("--repeats", type=int, default=None,
                   help="fixed repeats per layer (default: adaptive to --budget)")
    p.add_argument("--budget", type=float, default=540.0,
                   help="seconds of timing loops to aim for, shared by layers "
                        "in proportion to their work (setup comes on top)")
    p.add_argument("--min-repeats", type=int, default=15)
    p.add_argument("--max-repeats", type=int, default=200)
    p.add_argument("--peers", default=None,
                   help="comma-separated contenders to run besides pwconv "
                        "(names as in the tables, e.g. 'numpy,XNNPACK'; default: all)")
    p.add_argument("--include", action="append", default=None,
                   help="append a report this script wrote elsewhere (repeatable), "
                        "e.g. benchmarks/results/*.md from another machine")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 3 layers per model, 3 repeats")
    p.add_argument("--output", default=os.path.join(REPO, "BENCHMARKS.md"),
                   help="markdown report to write ('-' for stdout)")
    a = p.parse_args(argv)
    a.suite = a.suite or list(SUITES)
    a.layout = a.layout or ["NHWC", "NCHW"]
    a.dtype = a.dtype or ["float32", "float64"]
    try:
        a.threads = [int(t) for t in a.threads.split(",") if t.strip()]
    except ValueError:
        p.error("--threads takes integers, e.g. 1,2")
    if not a.threads or min(a.threads) < 1:
        p.error("--threads needs positive integers")
    if a.peers is not None:
        a.peers = {n.strip() for n in a.peers.split(",") if n.strip()}
    if a.quick and a.repeats is None:
        a.repeats = 3
    return a


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    t_start = time.time()
    load_start = loadavg()
    log(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')} "
        f"({'set by bench.py' if _OMP_SET_HERE else 'from the environment'}): "
        "libgomp's spin-wait bounded so it does not starve the other thread pools")
    # Import the peers before pwconv is loaded, in a fixed order, so each
    # library's start-up cost is paid outside the timings.
    vers = peers.versions()
    for k, v in vers.items():
        log(f"  {k}: {v or 'not importable, skipped'}")
    pw = pwconv_info()
    if pw[0] is None:
        log(f"pwconv is missing ({pw[1]}); timing the peers only")
    else:
        log(f"pwconv {pw[0]}: {pw[1]}")
    try:
        import torch
        torch.set_num_interop_threads(1)
    except Exception:
        pass
    suites = load_suites()
    plan = build_plan(args, suites)
    est_total = sum(c.estimate_s() for c in plan)
    log(f"{len(plan)} tables, {sum(len(c.layers) for c in plan)} layer runs, "
        f"budget {args.budget:.0f} s of timing loops"
        + (f", {args.repeats} repeats fixed" if args.repeats else ""))

    # The budget is shared in proportion to nominal work, recomputed as it is
    # spent: the first pass plans every layer's repeats and charges what the
    # layer will cost over all passes, so a slow start does not push the run
    # far past it.
    state = {"left_s": args.budget, "left_est": est_total}

    def nominal_s(cfg, case):
        return case.flops * cfg.flop_factor * len(cfg.contenders) / cfg.nominal_rate()

    def budget_for(cfg, case):
        share = nominal_s(cfg, case) / max(state["left_est"], 1e-9)
        return max(cfg.min_seconds, max(0.0, state["left_s"]) * share)

    def spend(cfg, case, seconds):
        state["left_est"] -= nominal_s(cfg, case)
        state["left_s"] -= seconds

    def progress(cfg, li, layer, med, reps):
        lname, ci, co, h, w, s = layer[:6]
        times = "  ".join(f"{c} {v / 1e6:.3f}" for c, v in med.items())
        log(f"    {li + 1}/{len(cfg.layers)} {lname} {ci}->{co} {h}x{w}/{s} "
            f"x{reps}: {times} ms")

    runs = [TableRun(cfg) for cfg in plan]
    for p in range(PASSES):
        for i, run in enumerate(runs):
            log(f"[pass {p + 1}/{PASSES}, {i + 1}/{len(plan)}] {run.cfg.suite}: "
                f"{run.cfg.title} ({time.time() - t_start:.0f} s elapsed)")
            run.run_pass(p, budget_for, spend, args.min_repeats,
                         args.max_repeats, args.repeats)
    results = []
    for run in runs:
        cfg = run.cfg
        log(f"{cfg.suite}: {cfg.title}")
        run.finish(progress)
        for n in cfg.notes:
            if "FAILED" in n or "skipped" in n:
                log(f"    note: {n}")
        tot, ratio = totals(cfg)
        summary = ", ".join(f"{c} {tot[c][1] / tot[c][0]:.1f} GFLOP/s"
                            + (f" (x{ratio[c]:.2f})" if c in ratio and c != cfg.base else "")
                            for c in tot)
        log(f"    total: {summary}")
        results.append(cfg)

    elapsed = time.time() - t_start
    meta = {"versions": vers, "pwconv": pw, "elapsed": elapsed,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "command": "python " + " ".join(shlex.quote(a) for a in
                                            ["benchmarks/bench.py"] + list(argv)),
            "omp_set": _OMP_SET_HERE, "load": (load_start, loadavg())}
    text = render(results, args, meta)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as fh:
            fh.write(text)
        log(f"wrote {args.output}")
    log(f"done in {elapsed / 60:.1f} min")
    print(figures(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
