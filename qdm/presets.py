"""Presets: named recipes, as data. A preset holds what its runs train with (TrainConfig values over
the defaults, which are the paper's recipe, Section V-A), how its models are measured (the default
scoring protocol of qdm.reproduce: N images, the sampler and its steps, the network's precision
while sampling, how many real images),
the circuit its quantum table cells use, and where its results go. No code branches on a
preset's name: a new preset is one more entry of PRESETS.
"""
from dataclasses import dataclass, field

from qdm.errors import UserError

PAPER_CIRCUIT = {"ansatz": "paper", "detach_input": True}     # the circuit as the official code ran it


@dataclass(frozen=True)
class Preset:
    name: str
    about: str
    train: dict = field(default_factory=dict)      # TrainConfig values over its defaults
    n: int = 1000                                  # the protocol: generated images per class,
    sampler: str = "ddpm"                          # the sampler (the paper's: DDPM over all T steps)
    steps: int = 1000                              # and its steps,
    precision: str = "fp32"                        # the network's precision while sampling (qdm.inference),
    n_real: int | None = None                      # real test images per class (None: all of them)
    quantum_cells: dict = field(default_factory=lambda: dict(PAPER_CIRCUIT))   # Table I/II's quantum model
    results_beside_runs: bool = False              # results in <runs>/<preset>/results, not results/


PRESETS = {p.name: p for p in [
    Preset("paper", "exactly the paper's recipe: 30 epochs over one class (about 90 steps an epoch on MNIST)"),
    Preset("quick", "the README's main job, a few minutes per model on 2 CPU cores: the paper's 30 epochs with "
                    "lr 1e-3 and EMA warm-up (so the EMA forgets the random initial weights), DDIM previews",
           train=dict(lr=1e-3, ema_warmup=True, grid_sampler="ddim")),
    Preset("study", "the ablation and noise studies (many cells, 3 seeds): the quick recipe for 10 epochs "
                    "(890 steps, about a minute per classical model on 2 CPU cores), scored at N = 500 with "
                    "DDIM-50; its images are rough zeros, its purpose is comparing variants trained alike",
           train=dict(lr=1e-3, ema_warmup=True, epochs=10, grid_sampler="ddim", final_sampler="ddim",
                      final_steps=50),
           n=500, sampler="ddim", steps=50),
    Preset("qdm", "the qdm recipe: the paper's architecture family and gate hook, with what is meant to make "
                  "digits: time embedding at every scale, a second skip, lr 1e-3 with warm-up and cosine decay, "
                  "gradient clipping, EMA warm-up, 100 epochs (8,900 steps), EMA snapshots for learning curves; "
                  "its quantum cells train the Linear in front of the circuit (the detached input is a bug of "
                  "the official code, not a design)",
           train=dict(lr=1e-3, lr_schedule="warmup_cosine", warmup_steps=200, grad_clip=1.0, ema_warmup=True,
                      unet={"time_every_scale": True, "skip_mid": True}, epochs=100, snapshot_every=10,
                      grid_sampler="ddim"),
           quantum_cells={"ansatz": "paper", "detach_input": False}),
    Preset("fast", "seconds, for tests and CI: it checks the machinery, not the images",
           train=dict(epochs=2, steps_per_epoch=3, val_size=32, grid_size=4, grid_sampler="ddim", grid_steps=5,
                      final_samples=8, final_sampler="ddim", final_steps=10),
           n=16, sampler="ddim", steps=5, n_real=64, results_beside_runs=True),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
