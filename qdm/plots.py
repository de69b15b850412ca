"""The figures a run writes: sample grids and loss curves (PNG, written atomically). Files are
drawn on matplotlib Figure objects, not through pyplot, so that writing them neither needs nor
changes a backend (a notebook keeps its inline one)."""
import torch
from matplotlib.figure import Figure
from torchvision.utils import make_grid, save_image

from qdm.checkpoint import atomic_write


def image_grid(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """(N,C,H,W) in [-1, 1] -> one (C,H',W') grid in [0, 1], nrow images a row."""
    nrow = nrow or max(1, round(len(images) ** 0.5))
    return make_grid(((images.detach().cpu().float() + 1) / 2).clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)


def save_grid(images: torch.Tensor, path, nrow: int | None = None):
    return atomic_write(path, lambda tmp: save_image(image_grid(images, nrow), str(tmp)))


def plot_losses(step_losses: list[float], epoch_rows: list[dict], path, title: str = ""):
    """Training loss per step (and its running mean over an epoch) with the validation
    epsilon-MSE of the raw and EMA weights at the end of each epoch."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    steps = range(1, len(step_losses) + 1)
    ax.plot(steps, step_losses, color="0.8", lw=0.6, label="train (per step)")
    if epoch_rows:
        window = max(1, len(step_losses) // len(epoch_rows))
        mean = torch.tensor(step_losses).unfold(0, window, 1).mean(1) if len(step_losses) >= window else None
        if mean is not None:
            ax.plot(range(window, len(step_losses) + 1), mean, color="C0", label=f"train (mean of {window})")
        ends = [r["step"] for r in epoch_rows]
        ax.plot(ends, [r["val_loss_raw"] for r in epoch_rows], "o-", color="C1", ms=3, label="validation, raw")
        ax.plot(ends, [r["val_loss_ema"] for r in epoch_rows], "s-", color="C2", ms=3, label="validation, EMA")
    ax.set(xlabel="step", ylabel="epsilon-MSE (Eq. 4)", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
