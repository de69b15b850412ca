# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 13. A recipe that makes digits? The `qdm` preset and learning curves
#
# **One idea:** the paper's recipe, run faithfully, gives FID about 220 at N = 1000 on digit 0
# against a real-vs-real floor of 7 (chapter 8), and its samples are broken strokes. Before
# asking whether a quantum layer helps, a model should make digits. The `qdm` preset keeps the
# paper's architecture family and its gate hook (so classical and quantum stay comparable) and
# changes what is known to hold diffusion models back:
#
# | change | the paper | `qdm` | why |
# |---|---|---|---|
# | time embedding | added at the bottleneck only | also projected into every encoder and decoder map | the decoder's last layers, which draw the strokes, otherwise learn $t$ only through the bottleneck (and through the gate) |
# | skip connections | one, at 28x28 | a second one at 14x14 | a U-Net's mid-scale detail bypasses the 7x7 bottleneck |
# | learning rate | $3\times10^{-4}$, constant | $10^{-3}$, 200 warm-up steps, cosine decay to $10^{-4}$ | faster early progress, a quiet end for the EMA to average |
# | gradient clipping | none | global norm 1 | early loss spikes at large $t$ |
# | EMA | $\beta = 0.999$ from step 1 | $\beta_n = \min(0.999, \frac{1+n}{10+n})$ | without warm-up the EMA keeps $0.999^n$ of the random initial weights (7% after the 2,670 steps of digit 0; chapter 5) |
# | length | 30 epochs (2,670 steps on digit 0) | 100 epochs (8,900 steps), EMA snapshots every 10 | the paper's loss is still falling at its end |
#
# Each change is an option of `python -m qdm train` (`--time-every-scale`, `--skip-mid`,
# `--lr-schedule warmup_cosine --warmup-steps`, `--grad-clip`, `--ema-warmup`, `--epochs`), so its
# effect can be measured alone. A **learning curve** scores the EMA snapshots of a run with the
# protocol of chapter 7 (`python -m qdm curve RUN`): FID against training steps, beside the floor.

# %% tags=["hide-input"]
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

# Notebooks start in notebooks/ (Jupyter, nbmake, the book); work from the repository root so
# that QDM_DATA_DIR=../shared/data and results/ mean what they mean on the command line.
os.chdir(next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").is_file()))
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto without ipywidgets

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display

import qdm
from qdm.train import PRESETS, build_model, lr_at, make_config, train
from qdm.unet import UNet, count_parameters

# qdm.plots selects matplotlib's Agg backend when it is imported: switch back to inline figures.
# %matplotlib inline

FAST = qdm.fast_mode()   # QDM_FAST=1: the seconds-long CI version of this notebook
paper, recipe = make_config("paper"), make_config("qdm")
changed = {k: v for k, v in asdict(recipe).items() if k != "preset" and v != asdict(paper)[k]}
print(f"fast mode: {FAST}\nthe qdm preset is the paper's recipe with {changed}")

# %% [markdown]
# ## What the network options add
#
# Both options leave the bottleneck (128 channels at 7x7) and the gate hook as they are, so every
# gate of chapters 4 and 12 fits the `qdm` network unchanged. They add a few percent of
# parameters:

# %%
variants = {"paper": {}, "time at every scale": {"time_every_scale": True}, "second skip": {"skip_mid": True},
            "qdm (both)": PRESETS["qdm"]["unet"]}
counts = {name: count_parameters(UNet(1, **options)) for name, options in variants.items()}
for name, n in counts.items():
    print(f"{name:22s} {n:9,d} parameters ({n - counts['paper']:+,d})")
assert count_parameters(build_model(recipe)) == counts["qdm (both)"]

# %% [markdown]
# With `time_every_scale`, $t$ reaches the output even when the bottleneck's own time embedding
# is switched off; in the paper's network it cannot (its output is then independent of $t$):

# %%
torch.manual_seed(0)
x = torch.randn(2, 1, 28, 28)
for name, options in [("paper", {}), ("qdm", PRESETS["qdm"]["unet"])]:
    model = UNet(1, **options)
    with torch.no_grad():
        model.time_embed.linear.weight.zero_(), model.time_embed.linear.bias.zero_()
        change = (model(x, torch.full((2,), 10)) - model(x, torch.full((2,), 900))).abs().max().item()
    print(f"{name}: largest change of the output between t = 10 and t = 900: {change:.4f}")
    assert (change == 0) == (name == "paper")

# %% [markdown]
# ## The learning-rate schedule
#
# $$
# \eta(s) = \begin{cases} \eta_0\,\frac{s+1}{W} & s < W \\[2pt]
# \eta_0\left(0.1 + 0.9\cdot\tfrac12\big(1 + \cos(\pi\,\frac{s - W}{S - 1 - W})\big)\right) & s \ge W \end{cases}
# $$
#
# with $W$ warm-up steps and $S$ steps in all; and the EMA decay with warm-up beside the paper's
# constant one:

# %%
steps = recipe.epochs * 89                               # digit 0: 89 batches of 64 an epoch
s = torch.arange(steps)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
axes[0].plot(s, [lr_at(recipe, int(i), steps) for i in s], label="qdm: warm-up + cosine")
axes[0].plot(s, [lr_at(paper, int(i), steps) for i in s], label="paper: constant")
axes[0].set(xlabel="step", ylabel="learning rate", title="learning rate")
beta = torch.tensor([min(0.999, (1 + n) / (10 + n)) for n in range(1, steps + 1)], dtype=torch.float64)
axes[1].semilogy(s, 0.999 ** (s.double() + 1), label="paper: share of the initial weights in the EMA")
axes[1].semilogy(s, torch.cumprod(beta, 0), label="qdm (EMA warm-up)")
axes[1].set(xlabel="step", ylabel="weight of the random initial network", title="what the EMA still remembers")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
assert torch.cumprod(beta, 0)[-1] < 1e-6 < 0.999 ** 2670

# %% [markdown]
# ## A run and its learning curve: load if present, else train
#
# In fast mode (CI) this trains the `fast` preset with the `qdm` network options and snapshots for
# a few steps, and scores its two snapshots with 16 images: it checks the machinery (its images
# are noise). In full mode it uses the digit-0 classical cell of `reproduce table1 --preset qdm`,
# `runs/reproduce/qdm/mnist-0-classical-seed0` (reused when present, else trained: about 17
# minutes on 2 CPU cores), and scores every third snapshot with N = 1000 DDIM-100 images. The
# committed learning curves, when there are some, are shown below it.

# %%
from qdm.curves import write_curves
from qdm.reproduce import protocol

if FAST:
    run_dir = Path(tempfile.mkdtemp(prefix="qdm-nb13-")) / "run"
    cfg = make_config("fast", device="cpu", snapshot_every=1, unet=PRESETS["qdm"]["unet"])
    proto = protocol("fast")
else:
    run_dir = Path("runs/reproduce/qdm/mnist-0-classical-seed0")
    cfg = make_config("qdm", classes=[0], model="classical", seed=0, device="auto")
    proto = protocol("qdm", 1000, "ddim", 100)
if not (run_dir / "summary.json").exists():
    train(cfg, run_dir, resume=True, progress=False)
out = run_dir.parent / "curves" if FAST else Path("runs/curves/results")
csv_path = write_curves([run_dir], proto, out, device="cpu" if FAST else "auto",
                        floors_dir=run_dir.parent if FAST else "runs/curves", every=1 if FAST else 3)
display(Image(filename=str(csv_path.with_suffix(".png"))))

# %%
committed = Path("results/learning_curves.png")
if committed.exists():
    display(Markdown("The committed learning curves (`results/learning_curves.csv`):"))
    display(Image(filename=str(committed)))
else:
    display(Markdown(
        "**No committed learning curves yet.** They are produced by\n\n"
        "```bash\npython -m qdm train --preset paper --digit 0 --snapshot-every 3 --out runs/curves/paper-0\n"
        "python -m qdm reproduce table1 --preset qdm --digits 0 --models classical\n"
        "python -m qdm curve runs/reproduce/qdm/mnist-0-classical-seed0 runs/curves/paper-0 --every 3\n```\n\n"
        "Whether the `qdm` recipe reaches its goal (FID at most twice the real-vs-real floor) is what "
        "they will show; nothing is claimed here before they exist."))

# %% [markdown]
# ## Against the floor
#
# The goal is a per-digit FID at most twice the real-vs-real floor (N = 1000, DDPM-1000,
# all test images of the digit; chapter 7). `qdm.reproduce.against_floor` reads each committed
# table's cells beside their floors, with the wall time of each model:

# %%
from qdm.reproduce import against_floor, table_name

lines = ["| recipe | digit | model | steps | FID | floor | FID / floor | training (min) | sampling (min) |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|"]
for preset in ("paper", "qdm"):
    if (Path("results") / f"{table_name('table1', preset)}_cells.csv").exists():
        lines += [f"| {preset} | {r['class']} | {r['model']} | {r['steps']:,} | {r['FID']:.1f} | {r['floor']:.2f} | "
                  f"{r['FID / floor']:.2f} | {r['train_minutes']:.0f} | {r['sample_minutes']:.0f} |"
                  for r in against_floor("results", "table1", preset)]
display(Markdown("\n".join(lines) if len(lines) > 2 else "No committed tables yet."))

# %% [markdown]
# **What the committed runs say** (one seed each). On digits 0 and 1 the paper's recipe stays near
# the noise ceiling for a third of its run (its EMA still holds the random initial weights) and
# ends at FID 274 and 224 (DDIM-100); the `qdm` recipe falls from its first snapshot on, to 41.7
# and 41.5 after 100 epochs, flattening as its learning rate decays. In Table I's protocol (DDPM-1000) the `qdm` models score
# 19.7 (digit 0) and 21.5 (digit 1), 2.7x and 2.9x their floors, in 11 to 30 minutes of training on
# 2 CPU cores; the paper's circuit trained with the same recipe scores 21.9 on digit 0, level with
# the classical model at one seed. Twice the steps (200 epochs, digit 0) give 14.73 (2.03 x the
# floor): just short of the goal (14.49), still falling; the paper's circuit with the same 200
# epochs gives 15.49 (2.14 x), again within about 1 FID of the classical model. Neither reaches
# twice the floor within about an hour of CPU training: on a CPU, training steps are what limits
# it, not a plateau.

# %% [markdown]
# ## Which change matters
#
# The recipe study trains the classical model with the `qdm` recipe and with each of its changes
# undone in turn (`qdm.ablations.RECIPE`), all at one short budget (the `study` preset's 10 epochs,
# 890 steps on digit 0), several seeds each, scored with DDIM-50 at N = 500 against the digit's
# test images (`python -m qdm ablate --study recipe --digits 0 --seeds 0,1 --preset study`). A
# change counts as measured when undoing it moves FID by more than twice the standard error of the
# difference over seeds.

# %%
recipe_md = Path("results/recipe.md")
if recipe_md.exists():
    display(Markdown("\n".join(line for line in recipe_md.read_text().splitlines() if line.startswith("|"))))
    display(Image(filename=str(recipe_md.with_suffix(".png"))))
else:
    display(Markdown("No committed recipe study yet: `python -m qdm ablate --study recipe` writes it."))

# %% [markdown]
# **What the committed study says** (3 seeds, digit 0, 890 steps). Undoing the EMA warm-up costs
# most (FID +252: after 890 steps an EMA of 0.999 is still $0.999^{890} = 41\%$ random initial
# weights; after the recipe's 8,900 steps it would be 0.01 %, so this share shrinks with longer
# runs), then the paper's learning rate 3e-4 (+91), the time embedding at every scale (+43), the
# second skip (+15) and gradient clipping (+13), each beyond twice its standard error. The
# learning-rate schedule (warm-up and cosine decay) did not measurably help: a constant 1e-3 is
# level with it (-7 ± 13). The preset keeps it, since every `qdm` result above was trained with it
# and this study measures a 10-epoch budget; whether it matters at 100 epochs is not measured.

# %%
if FAST:
    shutil.rmtree(run_dir.parent)   # the fast run only served this notebook

# %% [markdown]
# **What we checked.** The `qdm` network differs from the paper's only by the two options, whose
# parameters are counted above; with time at every scale the output depends on $t$ without the
# bottleneck's embedding, in the paper's network it does not; the learning rate warms up and decays
# as written; the EMA with warm-up forgets the random initial weights, the paper's does not within
# its 2,670 steps. Whether these changes make digits is measured by the learning curves, not
# assumed here.
