"""Scoring's largest fixed cost, the Inception forward of N = 1000 images: eager float32, compiled, bfloat16.

A cell's scoring runs pytorch-fid's InceptionV3 over its 1000 generated images (the test images'
features are cached). This measures, in one run on one set of images, the time of that forward
in float32 (channels-last, eager: one `evaluate`), compiled with BatchNorm folded into the
convolutions (`metrics.compile_inception`: the grids and the sampler study) and under CPU bfloat16
autocast, interleaved, and what each does to the numbers: FID and KID of the same images against
the same (cached, float32) test features, and the features' relative difference. A variant may
score the tables only if its FID moves by much less than the spread of three DDPM-1000 sampling
seeds on this model (read from results/samplers.csv).

    .venv/bin/python benchmarks/bench_inception.py --out results/bench_inception.md
"""
import argparse
import copy
import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from qdm import metrics
from qdm.checkpoint import write_text
from qdm.experiments.protocol import protocol
from qdm.experiments.scoring import generate, real_set

VARIANTS = ("float32, eager", "float32, compiled", "bfloat16 autocast")


def seed_spread(samplers_csv: Path) -> tuple[float, float] | None:
    """(min, max) FID of fp32 DDPM-1000's sampling seeds on the qdm digit-0 model, if measured."""
    if not samplers_csv.exists():
        return None
    with open(samplers_csv) as f:
        fids = [float(r["FID"]) for r in csv.DictReader(f) if (r["preset"], r["digit"], r["sampler"], r["steps"],
                                                                r["precision"]) == ("qdm", "0", "ddpm", "1000", "fp32")]
    return (min(fids), max(fids)) if len(fids) >= 3 else None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/reproduce/qdm/mnist-0-classical-seed0", help="a trained digit-0 run")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per variant, interleaved")
    p.add_argument("--out", default="results/bench_inception.md")
    p.add_argument("--samplers", default="results/samplers.csv", help="the sampler study's rows (the seed spread)")
    a = p.parse_args()
    proto = protocol("qdm", n=1000, sampler="ddpm_respaced", steps=100, precision="bf16")
    images = generate(Path(a.run) / "best.pt", proto, keep=Path(a.run))[0]
    eager = metrics.inception("cpu")
    real_f = real_set("mnist", 0, proto, eager, "cpu")[1]          # float32, cached like every cell's
    compiled = metrics.compile_inception(copy.deepcopy(eager))

    def features(variant, x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == VARIANTS[2]):
            return metrics.inception_features(x, compiled if variant == VARIANTS[1] else eager)

    t0 = time.perf_counter()
    features(VARIANTS[1], images[:100])                            # the compilation, once per process
    compile_seconds = time.perf_counter() - t0
    times = {v: [] for v in VARIANTS}
    for _ in range(a.rounds):
        for v in VARIANTS:
            t0 = time.perf_counter()
            features(v, images[:100])
            times[v].append(time.perf_counter() - t0)
    gen = {v: features(v, images) for v in VARIANTS}
    fid = {v: metrics.frechet_distance(gen[v], real_f) for v in VARIANTS}
    kid = {v: metrics.kernel_inception_distance(gen[v], real_f)[0] for v in VARIANTS}
    rel = {v: float(np.linalg.norm(gen[v] - gen[VARIANTS[0]]) / np.linalg.norm(gen[VARIANTS[0]])) for v in VARIANTS}
    med = {v: statistics.median(times[v]) for v in VARIANTS}
    spread = seed_spread(Path(a.samplers))
    lines = ["# Inception forward for scoring: eager float32, compiled float32, bfloat16 autocast", "",
             f"`benchmarks/bench_inception.py`, one run; images: 1000 samples of `{a.run}` "
             f"(ddpm_respaced-100, bf16, seed 0); load average {os.getloadavg()[0]:.1f} at the end on "
             f"{os.cpu_count()} cores, {torch.get_num_threads()} threads.", "",
             "| | " + " | ".join(VARIANTS) + " |", "|---|" + "---:|" * len(VARIANTS),
             f"| Inception forward, 100 images (median of {a.rounds} interleaved rounds) | "
             + " | ".join(f"{med[v]:.1f} s" for v in VARIANTS) + " |",
             "| speed-up over eager float32 | " + " | ".join(f"{med[VARIANTS[0]] / med[v]:.2f}x" for v in VARIANTS) + " |",
             f"| compiling (once per process) | — | {compile_seconds - med[VARIANTS[1]]:.0f} s | — |",
             "| FID of the 1000 samples (test features float32) | " + " | ".join(f"{fid[v]:.3f}" for v in VARIANTS) + " |",
             "| FID minus eager float32's | " + " | ".join(f"{fid[v] - fid[VARIANTS[0]]:+.4f}" for v in VARIANTS) + " |",
             "| KID | " + " | ".join(f"{kid[v]:.5f}" for v in VARIANTS) + " |",
             "| features: relative difference from eager float32 | " + " | ".join(f"{rel[v]:.1e}" for v in VARIANTS)
             + " |", ""]
    if spread:
        lines += [f"Spread of three fp32 DDPM-1000 sampling seeds on this model (results/samplers.csv): "
                  f"{spread[0]:.2f}-{spread[1]:.2f}, a width of {spread[1] - spread[0]:.2f}. "
                  + "; ".join(f"{v} moves the FID by {fid[v] - fid[VARIANTS[0]]:+.4f}, "
                              f"{abs(fid[v] - fid[VARIANTS[0]]) / (spread[1] - spread[0]):.3f} of it"
                              for v in VARIANTS[1:]) + ".", ""]
    write_text(Path(a.out), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
