"""The landing page's own files in results/, made from committed results and the package:

* dead_weights.png: what the paper's circuit does with its trainable weights (nothing), beside a
  trainable ansatz;
* landing_samples.png: the paper recipe's samples beside the qdm recipe's best, each titled with
  its FID from the committed tables;
* table1_headline.md: Table I's digit-0 FID row by row (the paper, ours with each recipe, the
  floor and the ceiling), then each recipe's answer over every digit measured so far (FID over the
  floor, quantum minus classical pooled over digits, the compute its cells took per device), read
  from results/table1*.csv, and copied into the README's headline block.

Written once and committed, like every file in results/; rerun after the results change:

    python book/landing_figures.py
"""
import csv
import math
from statistics import median
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from qdm.experiments.ledger import cell_device, recorded_cells  # noqa: E402
from qdm.experiments.protocol import protocol  # noqa: E402
from qdm.experiments.stats import beyond_2se  # noqa: E402
from qdm.quantum import circuit_outputs, weight_shape  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUBITS, LAYERS, DRAWS = 16, 3, 20


def outputs(ansatz: str, x: torch.Tensor) -> torch.Tensor:
    """<Z_i> of the circuit for one input x and DRAWS random weight sets: (DRAWS, QUBITS)."""
    g = torch.Generator().manual_seed(1)
    shape = weight_shape(ansatz, QUBITS, LAYERS)
    draws = [torch.rand(shape, generator=g, dtype=torch.float64) * 2 * math.pi for _ in range(DRAWS)]
    return torch.cat([circuit_outputs(x, w, ansatz) for w in draws]).detach()


def table_rows(name: str, column: str = "0") -> dict:
    """{(metric, row): value} of column ``column`` of results/<name>.csv (a written table)."""
    with open(ROOT / "results" / f"{name}.csv", newline="") as f:
        return {(r["metric"], r["row"]): float(r[column]) for r in csv.DictReader(f) if r[column]}


def long_run_fid(run: str) -> tuple[float, int]:
    """(FID, steps) of the DDPM-1000 point of a long run in results/learning_curves.csv."""
    with open(ROOT / "results" / "learning_curves.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["run"].endswith(run) and r["sampler"] == "ddpm-1000")
    return float(row["FID"]), int(row["step"])


def samples_figure() -> Path:
    paper = plt.imread(ROOT / "results" / "table1_figures" / "mnist-0-classical-seed0.png")
    best = plt.imread(ROOT / "results" / "qdm-0-e200_samples.png")
    fid_paper = table_rows("table1")[("FID", "ours classical")]
    fid_best, steps = long_run_fid("qdm-0-e200")
    floor = table_rows("table1")[("FID", "ours real-vs-real")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    axes[0].imshow(paper[int(0.1 * paper.shape[0]):, : paper.shape[1] // 2])   # its generated half
    with open(ROOT / "results" / "table1_cells.csv", newline="") as f:
        paper_steps = next(int(r["steps"]) for r in csv.DictReader(f) if r["cls"] == "0")
    axes[0].set_title(f"the paper's recipe ({paper_steps:,} steps)\nFID {fid_paper:.1f}")
    axes[1].imshow(best)
    axes[1].set_title(f"the qdm recipe ({steps:,} steps)\nFID {fid_best:.1f}")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"digit 0, classical model, DDPM-1000 samples; FID at N = 1000 "
                 f"(real vs real: {floor:.1f})")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path = ROOT / "results" / "landing_samples.png"
    fig.savefig(path, dpi=100)
    return path


def headline() -> Path:
    paper, qdm_recipe = table_rows("table1"), table_rows("table1_qdm")
    rows = [("the paper, classical (5 images)", paper[("FID", "paper classical")]),
            ("the paper, quantum (5 images)", paper[("FID", "paper quantum")]),
            ("ours, the paper's recipe, classical", paper[("FID", "ours classical")]),
            ("ours, the qdm recipe, classical", qdm_recipe[("FID", "ours classical")]),
            ("ours, the qdm recipe, quantum", qdm_recipe[("FID", "ours quantum")]),
            ("real vs real (the floor)", paper[("FID", "ours real-vs-real")]),
            ("noise vs real (the ceiling)", paper[("FID", "ours noise-vs-real")])]
    lines = ["| Table I, every digit measured so far | the paper's recipe | the qdm recipe |", "|---|---|---|"]
    answers = [recipe_answer(name) for name in ("table1", "table1_qdm")]
    for i, label in enumerate(["digits measured (classical, quantum)", "FID over the floor, classical (mean over digits)",
                               "FID over the floor, quantum (mean over digits)",
                               "quantum - classical FID"]):
        lines.append(f"| {label} | {answers[0][i]} | {answers[1][i]} |")
    compute = [compute_text(name, preset) for name, preset in (("table1", "paper"), ("table1_qdm", "qdm"))]
    lines.append(f"| cells per device: median minutes of training + sampling a cell; cell-hours in all "
                 "(summed over cells; cells that ran side by side overlap) | "
                 f"{compute[0]} | {compute[1]} |")
    lines += ["", "| Table I, digit 0 | FID |", "|---|---:|"] + [f"| {name} | {v:.1f} |" for name, v in rows]
    path = ROOT / "results" / "table1_headline.md"
    path.write_text("\n".join(lines) + "\n")
    readme = ROOT / "README.md"
    readme.write_text(with_headline(readme.read_text(), path.read_text()))
    return path


README_START, README_END = "<!-- table1_headline.md: written by book/landing_figures.py -->", "<!-- end -->"


def with_headline(readme: str, headline_text: str) -> str:
    """The README with its headline block (between the two markers) replaced by ``headline_text``."""
    head, rest = readme.split(README_START)
    return head + README_START + "\n" + headline_text + rest[rest.index(README_END):]


def table_csv(name: str, results: Path = ROOT / "results") -> list[dict]:
    with open(results / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(f))


def digits_text(n: int) -> str:
    return f"{n} digit" + ("" if n == 1 else "s")


def recipe_answer(name: str, results: Path = ROOT / "results") -> list[str]:
    """A written table's answer to the paper's question, read from its CSV (qdm.reproduce.write_tables
    computes it): the digits each model has, its FID over the floor averaged over them, and quantum
    minus classical: pooled ± its standard error over the digits with two seeds or more of both models
    (once there are two such digits), and its plain mean over every digit with both where that is more."""
    rows = {(r["metric"], r["row"]): r for r in table_csv(name, results)}
    digits = [str(d) for d in range(10)]

    def values(key):
        row = rows.get(key, {})
        return [float(row[d]) for d in digits if row.get(d)], row.get("Avg")
    done = {m: values(("FID / floor", f"ours {m}")) for m in ("classical", "quantum")}
    over_floor = {m: f"{float(avg):.2f} ({digits_text(len(v))})" if v else "—" for m, (v, avg) in done.items()}
    diffs, pooled_mean = values(("FID", "quantum - classical"))
    with_se, pooled_se = values(("FID", "quantum - classical s.e."))
    mean_all = f"{sum(diffs) / len(diffs):+.2f} (mean over {digits_text(len(diffs))})" if diffs else "—"
    if pooled_mean and pooled_se:
        mean, se = float(pooled_mean), float(pooled_se)
        pooled = f"{mean:+.2f} ± {se:.2f}{beyond_2se(mean, se)} (pooled over the {digits_text(len(with_se))} " \
                 "with two seeds or more of both)"
        pooled += f"; {mean_all}" if len(with_se) < len(diffs) else ""
    else:
        pooled = mean_all + ("; a pooled standard error needs two digits with two seeds or more of both"
                             if diffs else "")
    return [f"{len(done['classical'][0])}, {len(done['quantum'][0])} of 10", over_floor["classical"],
            over_floor["quantum"], pooled]


def compute_text(name: str, preset: str, results: Path = ROOT / "results") -> str:
    """The wall time a table's cells recorded (its ledger, <name>_cells.csv), per device they ran on:
    how many, the median minutes of training and of sampling one cell, and the hours of both in all."""
    cells, _ = recorded_cells(results / f"{name}_cells.csv", preset, protocol(preset),
                              lambda c: (c["model"], c["cls"], c["seed"]))
    parts = []
    for device in sorted({cell_device(c) for c in cells.values()}):
        mine = [c for c in cells.values() if cell_device(c) == device]
        train, sample = (median(c[k] / 60 for c in mine) for k in ("train_seconds", "sample_seconds"))
        hours = sum(c["train_seconds"] + c["sample_seconds"] for c in mine) / 3600
        parts.append(f"{device}: {len(mine)}, {train:.1f} + {sample:.1f} min; {hours:.2f} h")
    return "; ".join(parts) or "—"


def main() -> list[Path]:
    return [dead_weights(), samples_figure(), headline()]


def dead_weights() -> Path:
    x = (torch.rand(1, QUBITS, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1) * 2.5
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    titles = {"paper": "the paper's circuit (RZ ansatz)", "ry": "a trainable ansatz (RY)"}
    for ax, (ansatz, title) in zip(axes, titles.items()):
        out = outputs(ansatz, x)
        spread = (out.max(0).values - out.min(0).values).max().item()
        for row in out:
            ax.plot(range(QUBITS), row, "o-", ms=3, lw=0.8, alpha=0.6)
        ax.set(title=f"{title}\nlargest spread over {DRAWS} weight draws: {spread:.1e}",
               xlabel="qubit i", xticks=range(0, QUBITS, 3))
    axes[0].set_ylabel(r"output $\langle Z_i \rangle$ for one input")
    fig.suptitle(f"{DRAWS} random sets of the {math.prod(weight_shape('paper', QUBITS, LAYERS))} "
                 "trainable angles, one fixed input: the paper's circuit ignores its weights")
    fig.tight_layout()
    path = ROOT / "results" / "dead_weights.png"
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    for path in main():
        print(f"wrote {path.relative_to(ROOT)}")
