"""What a training run spends outside its timed steps, before and after drawing its pictures cheaply.

train() times only its steps (summary.json's train_seconds); at the end of each epoch it also
computes the validation loss of the raw and EMA weights, draws a preview grid (a Table I cell's: 16 images
by DDIM-100, EMA weights; qdm.experiments.cells.cell_config) and redraws loss.png, and after the last epoch it samples 64 images by
DDPM-1000 from best.pt. None of that touches the training's random numbers, so it can change
without changing the weights. Before: previews and final samples in fp32, loss.png every epoch.
After (qdm.train): both under inference mode in the precision qdm.inference.preview_precision
picks for the hardware (bf16 where it is native: AMX, AVX-512 BF16, a GPU; else fp32), loss.png
about LOSS_PLOTS times a run; the previews and final samples in bf16 and fp32 are timed both, so
the report shows what bf16 costs on the machine it ran on. Each part is timed in interleaved rounds beside a training step of
the same network (channels-last fp32, train()'s path on a CPU), so the load hits them alike; the
result is each part as a share of the training steps' time, and the run's wall time after over
before.

    .venv/bin/python benchmarks/bench_epoch.py --out results/bench_epoch.md
"""
import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qdm.checkpoint import write_text
from qdm.inference import for_sampling, memory_layout, native_bf16, preview_precision
from qdm.plots import plot_losses
from qdm.experiments.cells import cell_config
from qdm.train import LOSS_PLOTS, build_model, ema_update, make_diffusion

CHOSEN = preview_precision(torch.device("cpu"))

STEPS_PER_EPOCH = 89     # MNIST digit 0: 5,923 training images less 256 held out, batches of 64


def parts(preset: str, model_kind: str, folder: Path, final_evaluations: int) -> dict:
    """Functions of no arguments: ten training steps, and each end-of-run part before and after."""
    cfg = cell_config(preset, "mnist", 0, model_kind, 0)
    torch.manual_seed(0)
    model = build_model(cfg).to(memory_format=memory_layout(torch.device("cpu")))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    diffusion = make_diffusion(cfg)
    x0, val = torch.rand(64, 1, 28, 28) * 2 - 1, torch.rand(cfg.val_size, 1, 28, 28) * 2 - 1
    steps = cfg.epochs * STEPS_PER_EPOCH
    losses = list(np.random.default_rng(0).random(steps))
    epochs = [{"step": STEPS_PER_EPOCH * e, "val_loss_raw": 0.1, "val_loss_ema": 0.1} for e in range(1, cfg.epochs + 1)]
    grid_shape, final_shape = (cfg.grid_size, 1, 28, 28), (cfg.final_samples, 1, 28, 28)

    def ten_steps():
        for _ in range(10):
            loss = diffusion.loss(model, x0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema_update(ema, model, cfg.ema_decay)

    def validation():
        with torch.no_grad():
            for m in (model, ema):
                diffusion.loss(m, val).item()

    def preview(precision):
        def draw():
            eps = ema.eval() if precision is None else for_sampling(ema, precision)
            with (torch.no_grad() if precision is None else torch.inference_mode()):
                diffusion.sample(eps, grid_shape, cfg.grid_sampler, cfg.grid_steps, torch.Generator().manual_seed(0))
        return draw

    def final(precision):             # final_evaluations of DDPM's 1000, scaled in main()
        def draw():
            eps = ema.eval() if precision is None else for_sampling(ema, precision)
            x = torch.randn(final_shape)
            with (torch.no_grad() if precision is None else torch.inference_mode()):
                for i in range(final_evaluations):
                    eps(x, torch.full((len(x),), 999 - i))
        return draw

    return {"steps": ten_steps, "validation": validation, "plot": lambda: plot_losses(losses, epochs, folder / "l.png"),
            "preview before": preview(None), "preview bf16": preview("bf16"), "preview fp32": preview("fp32"),
            "final before": final(None), "final bf16": final("bf16"), "final fp32": final("fp32"),
            "epochs": cfg.epochs, "steps_total": steps}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--final-evaluations", type=int, default=20,
                   help="of the final samples' 1000 network evaluations, how many are timed (default 20)")
    p.add_argument("--out", help="also write the Markdown report here")
    a = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    load = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp())
    rows = []
    for preset in ("paper", "qdm"):
        for kind in ("classical", "quantum"):
            work = parts(preset, kind, folder, a.final_evaluations)
            timed = [k for k, v in work.items() if callable(v)]
            for k in timed:
                work[k]()                                   # warm-up
            times = {k: [] for k in timed}
            for _ in range(a.rounds):
                for k in timed:
                    t0 = time.perf_counter()
                    work[k]()
                    times[k].append(time.perf_counter() - t0)
            s = {k: statistics.median(v) for k, v in times.items()}
            s["preview after"], s["final after"] = s[f"preview {CHOSEN}"], s[f"final {CHOSEN}"]
            epochs, scale = work["epochs"], 1000 / a.final_evaluations
            training = s["steps"] / 10 * work["steps_total"]
            before = epochs * (s["validation"] + s["preview before"] + s["plot"]) + scale * s["final before"]
            after = (epochs * (s["validation"] + s["preview after"]) + min(epochs, LOSS_PLOTS + 1) * s["plot"]
                     + scale * s["final after"])
            rows.append((preset, kind, training / 60, 100 * before / training, 100 * after / training,
                         (training + before) / (training + after),
                         100 * epochs * s["preview before"] / training, 100 * epochs * s["preview after"] / training,
                         100 * epochs * s["plot"] / training, 100 * scale * s["final before"] / training,
                         100 * scale * s["final after"] / training, 100 * epochs * s["validation"] / training,
                         s["preview bf16"] / s["preview fp32"], s["final bf16"] / s["final fp32"]))
            print(rows[-1], flush=True)
    lines = [
        "# A training run's time outside its steps", "",
        f"`benchmarks/bench_epoch.py`, one run, {torch.get_num_threads()} CPU thread(s), load average {load:.1f} at the "
        f"start (the shares and the ratio, measured in the same interleaved rounds, are the result). Medians of "
        f"{a.rounds} rounds. Percentages are of the run's training steps (digit 0: {STEPS_PER_EPOCH} steps an "
        f"epoch). Before: preview grids and the final samples in fp32, loss.png every epoch; after: both in "
        f"{CHOSEN} under inference mode (this CPU computes bf16 {'natively' if native_bf16(torch.device('cpu')) else 'only by emulation'}: "
        f"qdm.inference.preview_precision), loss.png about {LOSS_PLOTS} times a run. The validation loss "
        "(which picks best.pt) is the same in both. The last two columns: bf16 time over fp32 time, both "
        "under inference mode, for a preview and for the final samples, on this machine.", "",
        "| preset | model | steps min | outside the steps, before | after | run's wall time, before / after "
        "| preview before | after | loss.png every epoch | final samples before | after | validation "
        "| preview bf16 / fp32 | final bf16 / fp32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f}% | {r[4]:.1f}% | {r[5]:.2f}x | "
                     + " | ".join(f"{v:.1f}%" for v in r[6:12]) + f" | {r[12]:.2f}x | {r[13]:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        write_text(Path(a.out), text)


if __name__ == "__main__":
    main()
