"""One cell of a grid: train (or resume, or reuse) a model in its run folder, then score its best
EMA weights with a protocol; the metrics file named after the protocol marks the cell finished."""
import json
from pathlib import Path

import torch

from qdm.checkpoint import atomic_write, write_json
from qdm.experiments.protocol import column
from qdm.experiments.scoring import evaluate_checkpoint
from qdm.plots import save_grid
from qdm.presets import get_preset
from qdm.train import make_config, resolve_device, train


def cell_figure(generated: torch.Tensor, real: torch.Tensor, title: str, path: Path, n: int = 64):
    """Generated images beside real ones, like the paper's Fig. 3-7."""
    from matplotlib.figure import Figure
    from qdm.plots import image_grid
    fig = Figure(figsize=(8, 4.3))
    axes = fig.subplots(1, 2)
    for ax, images, name in zip(axes, [generated[:n], real[:n]], ["generated", "real (test)"]):
        ax.imshow(image_grid(images, nrow=8).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set(title=name, xticks=[], yticks=[])
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


OVERVIEW_IMAGES = 8     # images per panel of the overview figure (2 rows of 4)


def cell_config(preset: str, dataset: str, cls, model: str, seed: int, device="cpu", data_dir=None,
                overrides: dict | None = None):
    """A cell's TrainConfig: the preset's recipe on one class (None: all), the preset's circuit for
    quantum cells, DDIM previews per epoch."""
    return make_config(preset, dataset=dataset, classes=None if cls is None else [cls], model=model,
                       seed=seed, device=str(device), data_dir=data_dir,
                       **{"quantum": get_preset(preset).quantum_cells if model == "quantum" else {},
                          "grid_sampler": "ddim",   # per-epoch previews only; training is the preset's
                          **(overrides or {})})


def train_cell(folder: Path, preset: str, dataset: str, cls, model: str, seed: int, device="cpu",
               data_dir=None, progress=True, overrides: dict | None = None) -> dict:
    """Train (or resume, or reuse) one cell's model (``cell_config``) in ``folder`` and return its summary."""
    if not (folder / "summary.json").exists():
        train(cell_config(preset, dataset, cls, model, seed, device, data_dir, overrides), folder, resume=True,
              progress=progress)
    return json.loads((Path(folder) / "summary.json").read_text())


def cell_device_name(trained_on, sampled_on) -> str:
    """The device whose wall times a cell records: "cpu", "cuda", or both when its training (a run
    folder trained elsewhere) and its sampling ran on different ones."""
    trained, sampled = torch.device(str(trained_on)).type, resolve_device(str(sampled_on)).type
    return trained if trained == sampled else f"{trained} (training), {sampled} (sampling)"


def run_cell(folder: Path, preset: str, dataset: str, cls, model: str, seed: int, proto: dict,
             fid_model, device, data_dir=None, figure: Path | None = None, progress=True,
             overrides: dict | None = None) -> dict:
    """Train (or resume, or reuse) one cell and evaluate its best EMA model, keeping its sampled
    batches in the run folder (a stopped cell resumes its sampling too). The metrics file, named
    after the protocol, marks the cell finished for that protocol and is never rewritten.
    ``overrides``: more TrainConfig values (e.g. ``quantum``, replacing the preset's quantum_cells)."""
    precision = f"-{proto['precision']}" if "precision" in proto else ""
    done = folder / (f"metrics-{proto['sampler']}{proto['steps']}{precision}-n{proto['n']}-real{proto['n_real']}"
                     f"-seed{proto['seed']}.json")
    if done.exists():
        return json.loads(done.read_text())
    summary = train_cell(folder, preset, dataset, cls, model, seed, device, data_dir, progress, overrides)
    result, images, real = evaluate_checkpoint(folder / "best.pt", proto, fid_model, device, data_dir, progress,
                                               keep=folder)
    result.update(model=model, cls=column(cls), seed=seed, preset=preset, train_seconds=summary["train_seconds"],
                  seconds_per_step=summary["seconds_per_step"], steps=summary["steps"],
                  cell_seconds=summary["train_seconds"] + result["sample_seconds"],
                  device=cell_device_name(summary["device"], device))
    if figure is not None:
        cell_figure(images, real, f"{dataset} {column(cls)}, {model}, seed {seed} (preset {preset}, N = {proto['n']}, "
                                  f"{proto['sampler']}-{proto['steps']}): FID {result['FID']:.1f}, "
                                  f"SSIM {result['SSIM']:.3f}", figure)
        save_grid(images[:OVERVIEW_IMAGES], figure.with_name(f"{figure.stem}_strip.png"), nrow=4)
    write_json(done, result)
    return result
