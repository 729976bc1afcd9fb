#!/usr/bin/env python
"""OpenMP against pwconv's own pool (PWCONV_THREADS), in the two settings
README's Threads section describes: another process busy on one core, and
PyTorch ops between pwconv calls in one process.  Each measurement runs in
a fresh process per mode, the modes taking turns; prints a markdown table.

    python benchmarks/threads.py [--seconds 1.5] [--rounds 2]
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# (C_in, C_out, H = W): MobileNetV2 b1 shapes around 100 us on one core.
LAYERS = [(64, 384, 14), (160, 960, 7), (32, 192, 28)]
# The depthwise + pointwise pairs of the PyTorch loop.
MIXED = [(64, 384, 14), (32, 192, 28), (160, 960, 7), (384, 64, 14), (24, 144, 56)]


def layer(pwconv, ci, co, h, threads):
    x = np.random.default_rng(0).uniform(-1, 1, (1, h, h, ci)).astype(np.float32)
    conv = pwconv.PointwiseConv2d(ci, co, layout="NHWC", num_threads=threads, seed=1)
    y = pwconv.empty(conv(x).shape, "float32")
    return x, lambda: conv(x, out=y)


def child_busy(seconds):
    """Per layer: 1- and 2-thread calls in alternating bursts of 4."""
    import pwconv
    out = {"t1_median": 0.0, "t2_median": 0.0, "t2_mean": 0.0, "t2_p90": 0.0}
    for ci, co, h in LAYERS:
        calls = {t: layer(pwconv, ci, co, h, t)[1] for t in (1, 2)}
        times = {1: [], 2: []}
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for t in (1, 2):
                for _ in range(4):
                    t0 = time.perf_counter_ns()
                    calls[t]()
                    times[t].append((time.perf_counter_ns() - t0) / 1e3)
        out["t1_median"] += statistics.median(times[1])
        out["t2_median"] += statistics.median(times[2])
        out["t2_mean"] += statistics.mean(times[2])
        out["t2_p90"] += float(np.percentile(times[2], 90))
    return out


def child_torch(seconds):
    """Rounds of PyTorch depthwise 3x3 then pwconv 1x1, 2 threads each."""
    import torch
    import pwconv
    torch.set_num_threads(2)
    out = {"round_median": 0.0, "pwconv_median": 0.0}
    for ci, co, h in MIXED:
        x, conv = layer(pwconv, ci, co, h, 2)
        dw = torch.nn.Conv2d(ci, ci, 3, padding=1, groups=ci, bias=False)
        dw = dw.to(memory_format=torch.channels_last)
        tx = torch.from_numpy(x).permute(0, 3, 1, 2)  # NHWC memory: channels_last
        rounds, convs = [], []
        end = time.perf_counter() + seconds
        with torch.no_grad():
            while time.perf_counter() < end:
                t0 = time.perf_counter_ns()
                dw(tx)
                t1 = time.perf_counter_ns()
                conv()
                t2 = time.perf_counter_ns()
                rounds.append((t2 - t0) / 1e3)
                convs.append((t2 - t1) / 1e3)
        out["round_median"] += statistics.median(rounds[20:])
        out["pwconv_median"] += statistics.median(convs[20:])
    return out


def run_child(scenario, mode, seconds):
    env = dict(os.environ, PWCONV_THREADS=mode)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", scenario,
                           "--seconds", str(seconds)], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def busy_loop():
    """A process that keeps the second CPU busy, as another program would."""
    code = ("import os\nos.sched_setaffinity(0, {1})\nwhile True:\n    pass\n")
    return subprocess.Popen([sys.executable, "-c", code])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.5, help="per layer and process")
    p.add_argument("--rounds", type=int, default=2, help="turns of each mode")
    p.add_argument("--child", choices=["busy", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fn = child_busy if args.child == "busy" else child_torch
        print(json.dumps(fn(args.seconds)))
        return
    if len(os.sched_getaffinity(0)) < 2 or 1 not in os.sched_getaffinity(0):
        sys.exit("needs CPUs 0 and 1")
    scenarios = ["busy"] + (["torch"] if importlib.util.find_spec("torch") else [])
    print(f"Layers summed per run; times in us; {args.rounds} runs per mode, "
          f"{args.seconds} s per layer.\n")
    print("| setting | mode | run | measurements |\n|---|---|---|---|")
    for scenario in scenarios:
        for r in range(args.rounds):
            for mode in ("openmp", "pool"):
                busy = busy_loop() if scenario == "busy" else None
                try:
                    res = run_child(scenario, mode, args.seconds)
                finally:
                    if busy:
                        busy.kill()
                        busy.wait()
                what = ("another process busy on CPU 1" if scenario == "busy"
                        else "PyTorch depthwise + pwconv, one process")
                vals = ", ".join(f"{k} {v:.0f}" for k, v in res.items())
                print(f"| {what} | {mode} | {r + 1} | {vals} |", flush=True)


if __name__ == "__main__":
    main()
