"""DDIM with 50 and 100 steps against DDPM with 1000 steps for the same trained model (issue 9):
FID and KID at N images, and wall time per 1000 images, measured in one run.

Quality: each sampler's N images are scored with the reproduce protocol (qdm.reproduce.protocol,
its sampler and steps changed); a metrics file of the same protocol already in the checkpoint's
folder (a Table I cell's, for DDPM-1000) is reused, new ones are saved there.
Time: every sampler draws the same --time-n images from the same noise, in --rounds interleaved
rounds (DDPM, DDIM-100, DDIM-50, DDPM, ...), so that the machine's load hits all alike; the median
of each is scaled to 1000 images (sampling cost is linear in the number of images at a fixed batch).

    .venv/bin/python benchmarks/bench_samplers.py runs/reproduce/paper/mnist-0-classical-seed0/best.pt \
        --out results/samplers.md
Goal (issue 9): DDIM-50's FID within 10% of DDPM-1000's at about 20x less time.
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from qdm import metrics
from qdm.checkpoint import write_json, write_text
from qdm.data import DATASETS
from qdm.reproduce import evaluate_checkpoint, protocol
from qdm.train import make_diffusion, model_from_checkpoint

SAMPLERS = [("ddpm", 1000), ("ddim", 100), ("ddim", 50)]


def quality(checkpoint: Path, sampler: str, steps: int, n: int, fid_model) -> dict:
    proto = protocol("paper", n, sampler, steps)
    path = checkpoint.parent / f"metrics-{sampler}{steps}-n{n}-realNone-seed0.json"
    if path.exists():
        return json.loads(path.read_text())
    result, _, _ = evaluate_checkpoint(checkpoint, proto, fid_model, "cpu")
    write_json(path, result)
    return result


def seconds_per_1000(checkpoint: Path, n: int, rounds: int) -> list[float]:
    """Median seconds per 1000 images of each of SAMPLERS, timed in interleaved rounds."""
    model, cfg = model_from_checkpoint(checkpoint, "cpu")
    diffusion = make_diffusion(cfg)
    times = [[] for _ in SAMPLERS]
    for _ in range(rounds):
        for k, (sampler, steps) in enumerate(SAMPLERS):
            t0 = time.perf_counter()
            diffusion.sample(model, (n, DATASETS[cfg.dataset][0], 28, 28), sampler, steps,
                             generator=torch.Generator().manual_seed(0), progress=False)
            times[k].append((time.perf_counter() - t0) * 1000 / n)
    return [statistics.median(t) for t in times]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="a run's best.pt")
    p.add_argument("--n", type=int, default=1000, help="images scored per sampler (default 1000)")
    p.add_argument("--time-n", type=int, default=50, help="images timed per sampler and round (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--out", help="also write the Markdown report here")
    a = p.parse_args()
    if not a.checkpoint.exists():
        raise SystemExit(f"error: no checkpoint at {a.checkpoint}: train one first (python -m qdm train ...)")
    load = os.getloadavg()
    fid_model = metrics.inception("cpu")
    seconds = seconds_per_1000(a.checkpoint, a.time_n, a.rounds)
    rows = []
    for (sampler, steps), s in zip(SAMPLERS, seconds):
        q = quality(a.checkpoint, sampler, steps, a.n, fid_model)
        rows.append({"sampler": f"{sampler.upper()}-{steps}", "FID": q["FID"], "KID": q["KID"], "s_per_1000": s})
    ddpm = rows[0]
    lines = [f"# Samplers: DDIM against DDPM-1000 on one trained model", "",
             f"Checkpoint `{a.checkpoint}`; FID and KID at N = {a.n} against the class's test images; "
             f"time per 1000 images: median of {a.rounds} interleaved rounds of {a.time_n} images per sampler in this "
             f"run, {torch.get_num_threads()} CPU threads, load average {load[0]:.1f} at the start (another job "
             "may have shared the machine: the ratios, measured alike, are the result).", "",
             "| sampler | FID | KID | FID vs DDPM-1000 | s per 1000 images | speed-up |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['FID']:.2f} | {r['KID']:.4f} | {100 * (r['FID'] / ddpm['FID'] - 1):+.1f}% "
                     f"| {r['s_per_1000']:.0f} | {ddpm['s_per_1000'] / r['s_per_1000']:.1f}x |")
    d50 = rows[2]
    within = abs(d50["FID"] / ddpm["FID"] - 1) <= 0.10
    speed = ddpm["s_per_1000"] / d50["s_per_1000"]
    lines += ["", f"Goal: DDIM-50 within 10% of DDPM-1000's FID ({'pass' if within else 'fail'}: "
                  f"{100 * (d50['FID'] / ddpm['FID'] - 1):+.1f}%) at about 20x less time "
                  f"({'pass' if speed >= 15 else 'fail'}: {speed:.1f}x)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        write_text(Path(a.out), text)


if __name__ == "__main__":
    main()
