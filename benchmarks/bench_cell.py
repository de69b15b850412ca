"""What one Table I cell costs, phase by phase, before the speed-ups and on each of them, in one run.

A cell (qdm.reproduce.run_cell) is: start-up (imports, data, Inception weights), training for the
preset's steps, sampling N = 1000 images, scoring them (Inception features, FID, KID, SSIM). Each
phase is timed on a fixed sample of its work and scaled to the whole (its cost is linear in the
work: steps, network evaluations, images), in interleaved rounds so that the machine's load hits
every variant alike; the medians are reported with their ratio to the path before (eager fp32).

- training: the step train() takes (loss, backward, clipping, Adam, EMA update) on a batch of 64,
  fp32 in the default memory layout (before), fp32 on channels-last memory (train()'s path on a
  CPU: qdm.inference.memory_layout), bf16 autocast on channels-last memory, and fp32 under
  torch.compile, classical and quantum (the paper's circuit, exact simulator), times the preset's
  steps (paper 2,670, qdm 8,900 on digit 0);
- sampling: one network evaluation on a batch of 500 (qdm.reproduce.generate's batch), classical
  and quantum: eager fp32 under torch.no_grad in the default layout (before), inference_mode,
  compiled fp32 in the default layout, and qdm.inference.for_sampling's paths (channels-last:
  compiled fp32, bf16, compiled bf16), times the sampler's evaluations (DDPM-1000: 1000) and the
  two batches of N = 1000; a compiled path's first call (the compilation) is timed apart;
- scoring: Inception features of the generated images (timed on --score-n images, scaled to N), and
  the rest of the score (FID, KID, both SSIMs) once on N images.

    .venv/bin/python benchmarks/bench_cell.py --out results/bench_cell.md
"""
import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from qdm import metrics
from qdm.checkpoint import write_text
from qdm.data import load_images
from qdm.inference import compiled_or_eager, for_sampling
from qdm.train import ema_update, make_config, make_diffusion, build_model
from qdm.presets import get_preset
from qdm.reproduce import score

PRESET_STEPS = {"paper": 2670, "qdm": 8900}     # digit 0: 30 and 100 epochs of 89 batches


def timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


TRAIN_PATHS = ("fp32", "channels-last", "bf16", "compiled")


def train_step(preset: str, model_kind: str, path: str):
    """One of train()'s steps for the preset's network, as a function of no arguments, on ``path``:
    fp32 (default layout), channels-last (fp32), bf16 (autocast, channels-last) or compiled (fp32,
    default layout, the network under torch.compile)."""
    cfg = make_config(preset, model=model_kind, quantum=get_preset(preset).quantum_cells if model_kind == "quantum" else {})
    torch.manual_seed(0)
    model = build_model(cfg)
    bf16 = path == "bf16"
    if path in ("channels-last", "bf16"):
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model, dynamic=False) if path == "compiled" else model
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    diffusion = make_diffusion(cfg)
    x0 = torch.rand(64, 1, 28, 28) * 2 - 1

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = diffusion.loss(net, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, model, cfg.ema_decay)
    return step


SAMPLE_PATHS = ("before", "inference_mode", "compiled, default layout", "compiled", "bf16", "compiled bf16")


def network_call(model_kind: str, path: str, batch: int = 500):
    """One network evaluation of the sampler's batch (the paper preset's network), on ``path``: the
    first three in the default memory layout (the model as built), the rest through for_sampling."""
    cfg = make_config("paper", model=model_kind, quantum=get_preset("paper").quantum_cells if model_kind == "quantum" else {})
    model = build_model(cfg).eval()
    if path in ("before", "inference_mode"):
        eps = model
    elif path == "compiled, default layout":
        eps = compiled_or_eager(model)
    else:
        eps = for_sampling(model, "bf16" if "bf16" in path else "fp32", compiled="compiled" in path)
    x, t = torch.randn(batch, 1, 28, 28), torch.full((batch,), 500)
    guard = torch.no_grad if path == "before" else torch.inference_mode

    def call():
        with guard():
            eps(x, t)
    return call


def first_call_seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def startup_seconds() -> float:
    """A fresh process's imports, one digit's images and the Inception weights (a cell's cold start)."""
    code = ("import qdm.reproduce, qdm.metrics as m, qdm.data as d; d.load_images('mnist', 'test', [0]); "
            "d.load_images('mnist', 'train', [0]); m.inception('cpu')")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--steps", type=int, default=10, help="training steps timed per variant and round (default 10)")
    p.add_argument("--evals", type=int, default=5, help="network evaluations timed per variant and round (default 5)")
    p.add_argument("--score-n", type=int, default=200, help="images whose Inception features are timed (default 200)")
    p.add_argument("--n", type=int, default=1000, help="images a cell samples and scores (default 1000)")
    p.add_argument("--few-steps", type=int, default=50, help="evaluations of the few-step sampler row (default 50)")
    p.add_argument("--out", help="also write the Markdown report here")
    a = p.parse_args()
    load = os.getloadavg()[0]
    kinds = ("classical", "quantum")
    train_variants = {(preset, kind, path): train_step(preset, kind, path)
                      for preset in PRESET_STEPS for kind in kinds for path in TRAIN_PATHS}
    sample_variants = {(kind, path): network_call(kind, path) for kind in kinds for path in SAMPLE_PATHS}
    compile_s = {k: first_call_seconds(fn) for k, fn in list(train_variants.items()) + list(sample_variants.items())
                 if "compiled" in k[-1]}
    fid_model = metrics.inception("cpu")
    real = load_images("mnist", "test", [0])
    generated = load_images("mnist", "train", [0])[:a.n]          # stands in for samples: same cost
    score_variants = {"today": lambda: metrics.inception_features(generated[:a.score_n], fid_model)}
    train_s, sample_s, feat_s = ({k: [] for k in v} for v in (train_variants, sample_variants, score_variants))
    for _ in range(a.rounds):
        for k, step in train_variants.items():
            train_s[k].append(timed(step, a.steps))
        for k, call in sample_variants.items():
            sample_s[k].append(timed(call, a.evals))
        for k, fn in score_variants.items():
            feat_s[k].append(timed(fn, 1))
    med = lambda d: {k: statistics.median(v) for k, v in d.items()}             # noqa: E731
    train_s, sample_s, feat_s = med(train_s), med(sample_s), med(feat_s)
    real_f = metrics.reference_features("mnist", [0], "test", len(real), fid_model)      # cached, as in a cell
    t0 = time.perf_counter()
    score(generated, real, real_f, fid_model, "cpu")
    rest_s = time.perf_counter() - t0 - feat_s["today"] * a.n / a.score_n   # score() minus its Inception pass
    start_s = startup_seconds()

    batches = -(-a.n // 500)
    scoring = feat_s["today"] * a.n / a.score_n + rest_s
    lines = ["# One cell's cost, phase by phase", "",
             f"`benchmarks/bench_cell.py`, {torch.get_num_threads()} CPU threads, torch {torch.__version__}, "
             f"load average {load:.1f} at the start (a background job may share the cores: the ratios, measured "
             f"in the same interleaved rounds, are the result). Medians of {a.rounds} rounds; each phase scaled "
             f"from its sample to the whole.", "",
             "## Training (per step, batch 64; minutes for the preset's steps on digit 0)", "",
             "| preset | model | fp32 ms/step | channels-last ms/step | speed-up | bf16 + channels-last ms/step "
             "| speed-up | compiled fp32 ms/step | speed-up | fp32 min | channels-last min |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for preset, steps in PRESET_STEPS.items():
        for kind in kinds:
            f32, cl, b16, comp = (train_s[(preset, kind, path)] for path in TRAIN_PATHS)
            lines.append(f"| {preset} | {kind} | {f32 * 1e3:.1f} | {cl * 1e3:.1f} | {f32 / cl:.2f}x "
                         f"| {b16 * 1e3:.1f} | {f32 / b16:.2f}x | {comp * 1e3:.1f} | {f32 / comp:.2f}x "
                         f"| {f32 * steps / 60:.1f} | {cl * steps / 60:.1f} |")
    for preset in PRESET_STEPS:
        for path in ("channels-last", "bf16"):
            q, c = train_s[(preset, "quantum", path)], train_s[(preset, "classical", path)]
            lines.append(f"\nQuantum (paper circuit) over classical step, {preset}, {path}: {q / c:.2f}x "
                         "(goal at most 1.1x).")
    lines += ["", f"## Sampling N = {a.n} (batches of 500; one network evaluation timed)", "",
              "| model | path | s per evaluation of 500 | speed-up | compiling s | DDPM-1000 min | "
              f"{a.few_steps} evaluations min |", "|---|---|---:|---:|---:|---:|---:|"]
    for (kind, path), s in sample_s.items():
        comp = compile_s.get((kind, path), 0.0)
        lines.append(f"| {kind} | {path} | {s:.3f} | {sample_s[(kind, 'before')] / s:.2f}x | {comp:.0f} "
                     f"| {(s * 1000 * batches + comp) / 60:.1f} | {(s * a.few_steps * batches + comp) / 60:.2f} |")
    for path in SAMPLE_PATHS:
        lines.append(f"\nQuantum (paper circuit) over classical evaluation, {path}: "
                     f"{sample_s[('quantum', path)] / sample_s[('classical', path)]:.2f}x (goal at most 1.1x).")
    lines += ["", f"## Scoring N = {a.n}", "",
              f"Inception features {feat_s['today'] * a.n / a.score_n:.0f} s (timed on {a.score_n} images), "
              f"FID + KID + SSIM (random pairs and nearest of 200) {rest_s:.0f} s; start-up of a fresh process "
              f"(imports, the digit's images, Inception weights) {start_s:.0f} s.", "",
              "## One cell (minutes), from a cold start", "",
              "Sampling paths include their compilation (as this run found it: inductor keeps compiled code "
              "on disk, so a machine's first compilation of a network takes longer than those after it). "
              "The tables' path is the fastest that keeps their numbers: fp32 training on channels-last memory "
              "(the same steps to float rounding), DDPM-1000 (`results/samplers.md`: no few-step sampler "
              "passed the rule), compiled channels-last sampling (the same function to float rounding), and bf16 "
              "sampling only where `results/samplers.md` finds it within DDPM-1000's seed spread.", "",
              "| preset | model | before: fp32, eager DDPM-1000 | channels-last training, compiled sampling (the "
              "tables' path) | the same, bf16 sampling | bf16 training, compiled bf16 sampling "
              f"| the same, {a.few_steps} evaluations | speed-up (tables' path) |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]

    def sampling(kind, path, evaluations):
        return sample_s[(kind, path)] * evaluations * batches + compile_s.get((kind, path), 0.0)
    for preset, steps in PRESET_STEPS.items():
        for kind in kinds:
            f32, cl, b16 = (train_s[(preset, kind, path)] * steps for path in ("fp32", "channels-last", "bf16"))
            fixed = start_s + scoring
            cells = [fixed + f32 + sampling(kind, "before", 1000), fixed + cl + sampling(kind, "compiled", 1000),
                     fixed + cl + sampling(kind, "compiled bf16", 1000),
                     fixed + b16 + sampling(kind, "compiled bf16", 1000),
                     fixed + b16 + sampling(kind, "compiled bf16", a.few_steps)]
            lines.append(f"| {preset} | {kind} | " + " | ".join(f"{c / 60:.1f}" for c in cells)
                         + f" | {cells[0] / cells[1]:.2f}x |")
    lines += ["", "bf16 training changes the trained weights: it is measured here only, and no preset uses it "
                  "until a study shows models trained so score alike. Compiled training is slower than eager on "
                  "these CPUs (the column above), so training stays eager, on channels-last memory. Where bf16 training is far slower than fp32, "
                  "oneDNN has picked its AMX weight-gradient convolution kernel, which some machines run badly "
                  "(`ONEDNN_VERBOSE=1` names the kernel and its time); bf16 sampling uses only forward kernels."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        write_text(Path(a.out), text)


if __name__ == "__main__":
    main()
