"""Scoring's largest fixed cost, the Inception forward of N = 1000 images, in float32 and in bfloat16.

A cell's scoring runs pytorch-fid's InceptionV3 over its 1000 generated images (the test images'
features are cached). This measures, in one run on one set of images, the time of that forward
in float32 (today's path: channels-last) and under CPU bfloat16 autocast, interleaved, and what
bfloat16 does to the numbers: FID and KID of the same images against the same (cached, float32)
test features, and the features' relative difference. bfloat16 may replace float32 only if the FID moves by much less than the spread of
three sampling seeds (0.6 on the qdm digit-0 model: results/samplers.md).

    .venv/bin/python benchmarks/bench_inception.py --out results/bench_inception.md
"""
import argparse
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


def features(images, model, bf16: bool) -> np.ndarray:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return metrics.inception_features(images, model)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/reproduce/qdm/mnist-0-classical-seed0", help="a trained digit-0 run")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per precision, interleaved")
    p.add_argument("--out", default="results/bench_inception.md")
    a = p.parse_args()
    proto = protocol("qdm", n=1000, sampler="ddpm_respaced", steps=100, precision="bf16")
    images = generate(Path(a.run) / "best.pt", proto)[0]
    model = metrics.inception("cpu")
    real_f = real_set("mnist", 0, proto, model, "cpu")[1]          # float32, cached like every cell's
    times = {False: [], True: []}
    for _ in range(a.rounds):
        for bf16 in (False, True):
            t0 = time.perf_counter()
            features(images[:100], model, bf16)
            times[bf16].append(time.perf_counter() - t0)
    gen = {bf16: features(images, model, bf16) for bf16 in (False, True)}
    fid = {bf16: metrics.frechet_distance(gen[bf16], real_f) for bf16 in (False, True)}
    kid = {bf16: metrics.kernel_inception_distance(gen[bf16], real_f)[0] for bf16 in (False, True)}
    rel = float(np.linalg.norm(gen[True] - gen[False]) / np.linalg.norm(gen[False]))
    t32, t16 = statistics.median(times[False]), statistics.median(times[True])
    load = os.getloadavg()[0]
    text = "\n".join([
        "# Inception forward for scoring: float32 against bfloat16 autocast", "",
        f"`benchmarks/bench_inception.py`, one run; images: 1000 samples of `{a.run}` "
        f"(ddpm_respaced-100, bf16, seed 0); load average {load:.1f} on {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads.", "",
        "| | float32 (today) | bfloat16 autocast | ratio |", "|---|---|---|---|",
        f"| Inception forward, 100 images (median of {a.rounds} interleaved rounds) | {t32:.1f} s | {t16:.1f} s | "
        f"{t32 / t16:.2f}x |",
        f"| FID of the 1000 samples (test features float32) | {fid[False]:.3f} | {fid[True]:.3f} | "
        f"{fid[True] - fid[False]:+.3f} |",
        f"| KID | {kid[False]:.5f} | {kid[True]:.5f} | {kid[True] - kid[False]:+.5f} |", "",
        f"Features: relative difference ||f_bf16 - f_fp32|| / ||f_fp32|| = {rel:.2e}.", ""])
    write_text(Path(a.out), text)
    print(text)


if __name__ == "__main__":
    main()
