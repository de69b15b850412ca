"""The paper's Table I (MNIST, per digit) and Table II (PathMNIST), filled with our numbers.

Each cell (model x class x seed) is one training run plus one evaluation (qdm.experiments.cells),
kept in its own folder under ``runs/reproduce/<preset>/``, run by the grid runner
(qdm.experiments.grid: here, in worker processes, through submitit, or as printed commands) under
the cell's lease. A finished cell has its metrics file there and a row in
``results/<table>_cells.csv`` (qdm.experiments.ledger) and is never recomputed (from a fresh clone
too: the row is enough); an unfinished one resumes from its ``last.pt``. After every cell the
tables are rewritten (Markdown and CSV) with the paper's own numbers beside ours, the reference
rows that give them a scale (real-vs-real: the floor at this N; noise-vs-real: the ceiling), FID
over the floor, and quantum minus classical with its standard error. The quantum cells use the
circuit their preset names (qdm.presets: the paper's as its code ran it, or with its input
trained in the qdm recipe).

Each (preset, protocol) has results files of its own name (``table_name``), so no run replaces
another's table or figures; every rewrite merges, under the table's lock, what other processes
have recorded (qdm.locks).
"""
import csv
import shutil
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from qdm.checkpoint import atomic_write, csv_text, write_text
from qdm.data import DATASETS, load_images
from qdm.errors import UserError
from qdm.experiments.cells import OVERVIEW_IMAGES, cell_figure, run_cell, train_cell  # noqa: F401 (re-exported)
from qdm.experiments.grid import cell_flags, check_executor, grid_devices, require_finished, run_grid, runs_here
from qdm.experiments.ledger import (cell_device, cells_csv, merge_recorded, parse_value, recorded_cells,  # noqa: F401
                                    recorded_references)
from qdm.experiments.protocol import column, protocol, protocol_tag, results_name  # noqa: F401
from qdm.experiments.scoring import (evaluate_checkpoint, generate, inception_once, real_set,  # noqa: F401
                                     reference_rows, score)
from qdm.experiments.stats import beyond_2se, difference, mean_std, pooled_difference  # noqa: F401
from qdm.locks import cell_lock, ledger_lock
from qdm.presets import PAPER_CIRCUIT, get_preset
from qdm.train import make_config, resolve_device

# Table I and II of the paper, as printed (SSIM, FID; per digit 0-9 then Avg, Std).
PAPER_TABLE1 = {
    ("SSIM", "classical"): [0.0945, 0.1494, 0.1165, 0.1093, 0.1119, 0.0685, 0.1238, 0.1082, 0.1246, 0.0787, 0.1085, 0.0234],
    ("SSIM", "quantum"): [0.1241, 0.1153, 0.0961, 0.0752, 0.2000, 0.0603, 0.2052, 0.1126, 0.1228, 0.1513, 0.1263, 0.0477],
    ("FID", "classical"): [218.61, 261.67, 310.63, 219.85, 259.43, 313.99, 325.59, 293.78, 255.38, 251.58, 271.05, 38.18],
    ("FID", "quantum"): [268.96, 226.65, 236.24, 325.95, 259.93, 269.04, 270.39, 280.68, 205.28, 249.38, 259.25, 33.04],
}


PAPER_TABLE2 = {("SSIM", "classical"): 0.4107, ("SSIM", "quantum"): 0.0931,
                ("FID", "classical"): 95.72, ("FID", "quantum"): 84.40}


# table -> (dataset, its columns): a column is one class, or None for all classes together.
# Table II: all nine tissue classes, and label 1 alone as the official code trained.
TABLES = {"table1": ("mnist", list(range(10))), "table2": ("pathmnist", [None, 1])}


MODELS = ("classical", "quantum")


METRICS = ("SSIM", "FID", "KID", "SSIM_nearest")


def table_name(table: str, preset: str, proto: dict | None = None) -> str:
    """table1 for the paper's recipe and protocol, table1_qdm, table1_fast, table1_paper_ddim50-n500..."""
    return results_name(table, "paper", preset, proto)


def overview_seed(figures: Path, dataset: str, k) -> int:
    """The seed a column of the overview shows: the lowest one whose strips both models have (the same
    starting noise), else the lowest one with any strip, else 0."""
    found = {}
    for path in figures.glob(f"{dataset}-{column(k)}-*-seed*_strip.png"):
        model, seed = path.name[len(f"{dataset}-{column(k)}-"):-len("_strip.png")].rsplit("-seed", 1)
        if model in MODELS and seed.isdigit():
            found.setdefault(int(seed), set()).add(model)
    both = [s for s, models in found.items() if len(models) == len(MODELS)]
    return min(both or found or [0])


def overview_figure(figures: Path, dataset: str, columns: list, data_dir=None) -> Path | None:
    """The layout of the paper's Figs. 3-6 for every column at once: real test images, then the
    classical and the quantum model's samples (same sampling seed, so the same starting noise;
    ``overview_seed``), from the strips run_cell leaves beside each cell's figure. Written to
    <figures>/overview.png."""
    from matplotlib.figure import Figure
    from matplotlib.image import imread
    from qdm.plots import image_grid
    seeds = {k: overview_seed(figures, dataset, k) for k in columns}
    strips = {(m, k): figures / f"{dataset}-{column(k)}-{m}-seed{seeds[k]}_strip.png" for m in MODELS for k in columns}
    if not any(path.exists() for path in strips.values()):
        return None
    fig = Figure(figsize=(1.6 * len(columns) + 0.6, 2.6))
    axes = fig.subplots(3, len(columns), squeeze=False)
    for j, k in enumerate(columns):
        real = load_images(dataset, "test", None if k is None else [k], data_dir)[:OVERVIEW_IMAGES]
        panels = [image_grid(real, nrow=4).permute(1, 2, 0).numpy()]
        panels += [imread(strips[m, k]) if strips[m, k].exists() else None for m in MODELS]
        for i, (panel, label) in enumerate(zip(panels, ["real", *MODELS])):
            ax = axes[i][j]
            ax.set(xticks=[], yticks=[])
            if panel is not None:
                ax.imshow(panel, interpolation="nearest")
            else:                                # a cell not run yet, or scored before strips were kept
                scored = i > 0 and strips[MODELS[i - 1], k].with_name(
                    strips[MODELS[i - 1], k].name.replace("_strip", "")).exists()
                ax.text(0.5, 0.5, "scored before strips\nwere kept: see its\ncell figure" if scored
                        else "no samples yet", ha="center", va="center", fontsize=7, color="0.5",
                        transform=ax.transAxes)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            if i == 0:
                ax.set_title(column(k) + (f" (seed {seeds[k]})" if seeds[k] else ""), fontsize=9)
    fig.tight_layout(pad=0.3)
    path = figures / "overview.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return path


def _fmt(x, metric):
    if x is None:
        return "—"
    return f"{x:.4f}" if metric in ("SSIM", "SSIM_nearest", "KID") else f"{x:.2f}"


def paper_row(table: str, metric: str, model: str, columns: list) -> list | None:
    """The paper's numbers for the given columns (and its printed Avg, Std for Table I)."""
    if metric not in ("SSIM", "FID"):
        return None
    if table == "table1":
        printed = PAPER_TABLE1[(metric, model)]
        return [printed[c] for c in columns] + (printed[10:] if columns == list(range(10)) else [None, None])
    return [PAPER_TABLE2[(metric, model)] if c is None else None for c in columns]


def write_tables(table: str, cells: list[dict], refs: dict, columns: list, proto: dict, preset: str,
                 out_dir: Path, other_cells: list = ()) -> Path:
    """<table>.md / .csv (the paper's layout: rows per model, a column per class, Avg and Std
    over the classes; ours as mean over seeds, ± std when there are several) and
    <table>_cells.csv (every cell's numbers, and ``other_cells``: those of other protocols)."""
    header = [column(c) for c in columns] + ["Avg", "Std"]
    md = [f"# {table}: paper vs ours (preset `{preset}`)", "",
          "Protocol: " + "; ".join(f"{k} = {v}" for k, v in proto.items()) + ".", "",
          "| Metric | Row | " + " | ".join(header) + " |", "|---|---" + "|---" * len(header) + "|"]
    csv_rows = []

    def add(metric, label, values, extra, text=None, extra_text=None, shown=True):
        text = (text or [_fmt(v, metric) for v in values]) + (extra_text or [_fmt(v, metric) for v in extra])
        if shown:
            md.append(f"| {metric} | {label} | " + " | ".join(text) + " |")
        csv_rows.append({"metric": metric, "row": label, **dict(zip(header, values + extra))})

    for metric in METRICS:
        for model in MODELS:
            paper = paper_row(table, metric, model, columns)
            if paper is not None:
                add(metric, f"paper {model}", paper[:-2], paper[-2:])
            per_col = [[c[metric] for c in cells if c["model"] == model and c["cls"] == column(k)] for k in columns]
            if any(per_col):
                means = [mean_std(v)[0] for v in per_col]
                text = [_fmt(m, metric) + (f" ± {_fmt(float(np.std(v, ddof=1)), metric)}" if len(v) > 1 else "")
                        for m, v in zip(means, per_col)]
                add(metric, f"ours {model}", means, list(mean_std(means)), text)
        for ref in ("real-vs-real", "noise-vs-real"):
            values = [refs.get(k, {}).get(ref, {}).get(metric) for k in columns]
            if any(v is not None for v in values):
                add(metric, f"ours {ref}", values, list(mean_std(values)))
    floors = [refs.get(k, {}).get("real-vs-real", {}).get("FID") for k in columns]
    fids = {m: [[c["FID"] for c in cells if c["model"] == m and c["cls"] == column(k)] for k in columns]
            for m in MODELS}
    for model in MODELS:                      # FID over the column's floor: how far from real images
        ratios = [np.mean(v) / f if v and f else None for v, f in zip(fids[model], floors)]
        if any(r is not None for r in ratios):
            add("FID / floor", f"ours {model}", ratios, list(mean_std(ratios)))
    diffs = [difference(q, c) if q and c else None for q, c in zip(fids["quantum"], fids["classical"])]
    if any(diffs):                            # the paper's question: does the circuit help?
        with_se = [d for d in diffs if d is not None and d[1] is not None]
        pooled = pooled_difference(with_se) if len(with_se) >= 2 else (None, None)
        text = ["—" if d is None else f"{d[0]:+.2f}" + (f" ± {d[1]:.2f}" if d[1] is not None else "") + beyond_2se(*d)
                for d in diffs]
        pooled_text = ["—", "—"] if pooled[0] is None else [f"{pooled[0]:+.2f} ± {pooled[1]:.2f}{beyond_2se(*pooled)}",
                                                            f"over {len(with_se)} classes"]
        add("FID", "quantum - classical", [None if d is None else d[0] for d in diffs], [pooled[0], None],
            text, pooled_text)
        add("FID", "quantum - classical s.e.", [None if d is None else d[1] for d in diffs], [pooled[1], None],
            shown=False)
    md += table_notes(table, cells, proto, preset)
    name = table_name(table, preset, proto)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / f"{name}.md", "\n".join(md) + "\n")
    write_text(out_dir / f"{name}.csv", csv_text(csv_rows))
    write_text(out_dir / f"{name}_cells.csv", cells_csv(list(cells) + list(other_cells)))
    return out_dir / f"{name}.md"


def seed_coverage(cells: list[dict]) -> str:
    """Which seeds each model has in which columns, e.g. "classical: seeds 0, 1 in 0 1 2; seed 0 in 3"."""
    parts = []
    for model in MODELS:
        seeds = {}
        for c in cells:
            if c["model"] == model:
                seeds.setdefault(c["cls"], set()).add(int(c["seed"]))
        if seeds:
            groups = {}
            for cls, s in sorted(seeds.items(), key=lambda kv: kv[0].zfill(3)):      # 0 1 ... 9 (or all)
                groups.setdefault(tuple(sorted(s)), []).append(cls)
            parts.append(f"{model}: " + "; ".join(f"seed{'s' * (len(s) > 1)} {', '.join(map(str, s))} in {' '.join(k)}"
                                                  for s, k in sorted(groups.items(), key=lambda g: (-len(g[0]), g[0]))))
    return "; ".join(parts)


def table_notes(table: str, cells: list[dict], proto: dict, preset: str) -> list[str]:
    """The lines under a table: what ours, the derived rows and the paper's rows are."""
    seeds = sorted({c["seed"] for c in cells})
    machines = Counter(cell_device(c) for c in cells)
    return ["", f"Ours: {len(cells)} finished cells, mean over seeds {seeds} ± their std; {seed_coverage(cells)}.",
            "Cells per device they ran on (one protocol; only wall times depend on it): "
            + ", ".join(f"{d} {n}" for d, n in sorted(machines.items())) + ".",
            "Avg and Std are over the classes (columns) shown. Every cell's numbers, wall times included, are in "
            f"`{table_name(table, preset, proto)}_cells.csv`; SSIM, FID, KID as defined in notebooks/07_evaluation.",
            "FID / floor: our mean FID over the column's real-vs-real FID (1 would be as close as real images at "
            "this N). quantum - classical: the difference of the mean FIDs ± its standard error over the seeds; its "
            "Avg pools the D classes with two seeds or more of both models, once D >= 2 (their differences averaged, "
            "± sqrt(sum se^2) / D). The standard errors hold the spread of seeds (training and sampling) only, and "
            "with two seeds a model they rest on few degrees of freedom: \"beyond 2 s.e.\" (as in the studies) "
            "flags, it does not test.",
            "Paper: as printed; its FIDs come from 5-13 images (see the evaluation notebook), ours from N above.",
            "Quantum cells: the paper's circuit " + ("(RZ ansatz) with its input trained (not detached)."
                                                     if get_preset(preset).quantum_cells != PAPER_CIRCUIT
                                                     else "as the official code ran it (RZ ansatz, circuit input detached).")]


def cell_key(cell: dict) -> tuple:
    return cell["model"], cell["cls"], cell["seed"]


def shown_columns(columns: list, cells: dict) -> list:
    """The requested columns and those of the recorded cells, in the table's order (all first)."""
    return sorted(set(columns) | {None if c["cls"] == "all" else int(c["cls"]) for c in cells.values()},
                  key=lambda k: (k is not None, k or 0))


def record_table(table: str, cells: dict, refs: dict, columns: list, proto: dict, preset: str,
                 results: Path) -> Path:
    """Write the tables under their ledger's lock, after adding what other processes recorded
    meanwhile: their cells (ours win) and the reference rows of columns we have none for."""
    name = table_name(table, preset, proto)
    path = results / f"{name}_cells.csv"
    with ledger_lock(path):
        others = merge_recorded(cells, path, preset, proto, cell_key)
        for k, rows in recorded_references(results / f"{name}.csv").items():
            refs.setdefault(k, rows)
        return write_tables(table, list(cells.values()), refs, shown_columns(columns, cells), proto, preset,
                            results, others)


def column_references(recorded: dict | None, cls, root: Path, dataset: str, proto: dict, fid_model, device,
                      data_dir) -> dict:
    """A column's reference rows (real-vs-real floor, noise ceiling): as the written table records
    them in ``recorded``, else measured (and cached beside every preset's runs)."""
    return (recorded or {}).get(cls) or reference_rows(root.parent, dataset, cls, proto, fid_model, device, data_dir)


def run_task(task: tuple, *, root: Path, preset: str, table: str, dataset: str, proto: dict, device, data_dir,
             results: Path, progress: bool, fid_model=None, recorded: dict | None = None):
    """One cell (class, model, seed) with its column's reference rows (column_references), under the
    cell's lease. Returns (reference rows, cell result), or None when another process holds the cell."""
    device = resolve_device(str(device))          # by name from a submitit job or worker process
    cls, model, seed = task
    fid_model = fid_model or inception_once(device)
    name = f"{dataset}-{column(cls)}-{model}-seed{seed}"
    with cell_lock(root / "locks" / f"{name}.lock") as mine:
        if not mine:
            return None
        refs = column_references(recorded, cls, root, dataset, proto, fid_model, device, data_dir)
        return refs, run_cell(root / name, preset, dataset, cls, model, seed, proto, fid_model, device,
                              data_dir, results / f"{table_name(table, preset, proto)}_figures" / f"{name}.png",
                              progress)


def _columns(table: str, classes: list | None, models) -> tuple[str, list]:
    """(dataset, columns) of a table, checking the classes and models asked for."""
    if table not in TABLES:
        raise UserError(f"unknown table {table!r}: choose table1 or table2")
    dataset, columns = TABLES[table]
    if classes is not None:
        n_classes = DATASETS[dataset][1]
        bad = [c for c in classes if c not in columns and c not in range(n_classes)]
        if bad:
            raise UserError(f"{dataset} has no class {bad[0]!r}: use 0-{n_classes - 1}"
                            + (" or all" if None in columns else ""))
        columns = classes
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise UserError(f"unknown model {bad[0]!r}: choose from {', '.join(MODELS)}")
    return dataset, columns


def results_folder(preset: str, runs_dir, results_dir=None) -> Path:
    """Where a preset's tables go: ``results_dir`` if given, else results/ (or, for a preset that
    says so, e.g. fast, beside its runs)."""
    root = Path(runs_dir) / preset
    return Path(results_dir or (root / "results" if get_preset(preset).results_beside_runs else "results"))


def reproduce(table: str, preset: str = "paper", classes: list | None = None, models=MODELS,
              seeds=(0,), proto: dict | None = None, runs_dir="runs/reproduce", results_dir=None,
              device="auto", data_dir=None, progress=True, jobs: int = 1, executor: str = "local",
              cluster: str | None = None, slurm: dict | None = None) -> Path | None:
    """Fill one table cell by cell (resumable) through qdm.experiments.grid; returns the path of the
    Markdown table (None with the commands executor, which runs nothing). Results go to results/,
    or beside the runs for a preset that says so (fast). The tables are rewritten by this process
    after every finished cell (with the commands executor, by each command)."""
    dataset, columns = _columns(table, classes, models)
    if not (columns and models and seeds):
        raise UserError("give at least one class, one model and one seed")
    check_executor(executor, jobs)
    make_config(preset, dataset=dataset)                  # an unknown preset fails before any work
    proto = proto or protocol(preset)
    asked = device                                        # the printed commands pass on what was asked
    device, cells_device = grid_devices(asked, executor, jobs)
    root = Path(runs_dir) / preset
    results = results_folder(preset, runs_dir, results_dir)
    cells, _ = recorded_cells(results / f"{table_name(table, preset, proto)}_cells.csv", preset, proto,
                              cell_key)                   # never recomputed
    tasks = [(cls, model, seed) for cls in columns for model in models for seed in seeds
             if (model, column(cls), seed) not in cells]
    if jobs > 1 or executor != "local":     # columns innermost: cells at once are of different columns,
        tasks.sort(key=lambda task: (task[1], task[2]))   # not computing one column's references side by side

    def command(task):
        return (f"python -m qdm reproduce {table} --preset {preset} --classes {column(task[0])} --models {task[1]} "
                f"--seeds {task[2]} --runs-dir {runs_dir} --results-dir {results} {cell_flags(proto, asked, data_dir)}")
    if executor == "commands":
        run_grid(tasks, None, None, executor="commands", command=command)
        return None
    shown = shown_columns(columns, cells)                 # the requested columns and the recorded ones
    fid_model = inception_once(device)                    # a missing weights file fails here, once
    recorded = recorded_references(results / f"{table_name(table, preset, proto)}.csv")   # measured before
    refs = {k: column_references(recorded, k, root, dataset, proto, fid_model, device, data_dir)
            for k in shown if k not in {task[0] for task in tasks}}

    def record(task, out):
        refs[task[0]], cell = out
        cells[cell_key(cell)] = cell
        record_table(table, cells, refs, columns, proto, preset, results)
        overview_figure(results / f"{table_name(table, preset, proto)}_figures", dataset, shown, data_dir=data_dir)
        if progress:
            print(f"[reproduce {table}] cell {task} done: FID {cell['FID']:.2f}, SSIM {cell['SSIM']:.4f}", flush=True)

    here = runs_here(jobs, executor)
    work = partial(run_task, root=root, preset=preset, table=table, dataset=dataset, proto=proto,
                   device=cells_device, data_dir=data_dir, results=results,
                   progress=progress and here, fid_model=fid_model if here else None, recorded=recorded)
    run_grid(tasks, work, record, jobs=jobs, executor=executor, folder=Path(runs_dir) / "submitit",
             cluster=cluster, slurm=slurm, label=f"reproduce {table}", progress=progress)
    require_finished(cells, root)
    return record_table(table, cells, refs, columns, proto, preset, results)


def merge_results(table: str, source, preset: str = "paper", proto: dict | None = None,
                  runs_dir="runs/reproduce", results_dir=None) -> tuple[Path, int]:
    """Add the cells another machine recorded in its results folder ``source`` (its <table>_cells.csv,
    figures and reference rows; e.g. a GPU machine's, copied back) to this table: a cell recorded
    here stays as it is, the new ones bring their figures, and the tables and the overview are
    rewritten. Returns (the Markdown table, the number of cells added)."""
    dataset, columns = _columns(table, None, MODELS)
    make_config(preset, dataset=dataset)                  # an unknown preset fails before any work
    proto = proto or protocol(preset)
    name, source = table_name(table, preset, proto), Path(source)
    results = results_folder(preset, runs_dir, results_dir)
    if not (source / f"{name}_cells.csv").is_file():
        raise UserError(f"{source / f'{name}_cells.csv'} does not exist: give the results folder the other "
                        f"machine wrote for --preset {preset} and this protocol")
    theirs, _ = recorded_cells(source / f"{name}_cells.csv", preset, proto, cell_key)
    with ledger_lock(results / f"{name}_cells.csv"):
        ours, _ = recorded_cells(results / f"{name}_cells.csv", preset, proto, cell_key)
    new = {k: cell for k, cell in theirs.items() if k not in ours}
    figures = results / f"{name}_figures"
    for model, cls, seed in new:                           # the cell's figure and its overview strip
        for file in (f"{dataset}-{cls}-{model}-seed{seed}{end}.png" for end in ("", "_strip")):
            if (source / f"{name}_figures" / file).is_file() and not (figures / file).exists():
                figures.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / f"{name}_figures" / file, figures / file)
    refs = {**recorded_references(source / f"{name}.csv"), **recorded_references(results / f"{name}.csv")}
    added = len(new)
    path = record_table(table, new, refs, columns, proto, preset, results)   # adds the recorded cells to new
    overview_figure(figures, dataset, shown_columns(columns, new))
    return path, added


def against_floor(results_dir, table: str, preset: str, proto: dict | None = None) -> list[dict]:
    """Each recorded cell of a table (its protocol: the preset's default unless given) beside its
    column's real-vs-real FID from ``<table>.csv``: FID / floor, the qdm recipe's measure (its goal: at
    most 2), and the cell's wall times (training, and sampling)."""
    proto = proto or protocol(preset)
    results_dir, name = Path(results_dir), table_name(table, preset, proto)
    with open(results_dir / f"{name}.csv") as f:
        floor = next(r for r in csv.DictReader(f) if r["metric"] == "FID" and r["row"] == "ours real-vs-real")
    cells, _ = recorded_cells(results_dir / f"{name}_cells.csv", preset, proto,
                              key=lambda c: (c["cls"], c["model"], c["seed"]))
    return [{"class": c["cls"], "model": c["model"], "seed": c["seed"], "steps": c["steps"], "FID": c["FID"],
             "floor": float(floor[c["cls"]]), "FID / floor": c["FID"] / float(floor[c["cls"]]),
             "train_minutes": c["train_seconds"] / 60, "sample_minutes": c["sample_seconds"] / 60}
            for _, c in sorted(cells.items()) if floor.get(c["cls"]) not in (None, "")]


def plot_table(csv_path, metric: str = "FID", ax=None):
    """Bars per column of a written table (<table>.csv): the paper's rows, ours, and the
    real-vs-real floor and noise ceiling as lines, for one metric (not the derived rows)."""
    import csv
    import matplotlib.pyplot as plt
    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == metric]
    cols = [c for c in rows[0] if c not in ("metric", "row", "Avg", "Std")]
    ax = ax or plt.subplots(figsize=(10, 3.5))[1]
    bars = [r for r in rows if r["row"].startswith(("paper ", "ours ")) and not r["row"].endswith("-vs-real")]
    width = 0.8 / len(bars)
    for i, r in enumerate(bars):
        values = [float(r[c]) if r[c] not in ("", None) else np.nan for c in cols]
        ax.bar(np.arange(len(cols)) + (i - (len(bars) - 1) / 2) * width, values, width, label=r["row"],
               color=f"C{i}", alpha=0.45 if r["row"].startswith("paper") else 0.9)
    for r, style in zip([r for r in rows if r["row"].endswith("-vs-real")], ["k-", "k:"]):
        values = [float(r[c]) if r[c] not in ("", None) else np.nan for c in cols]
        ax.plot(np.arange(len(cols)), values, style, marker="_", ms=20, label=r["row"])
    ax.set(xticks=range(len(cols)), xticklabels=cols, xlabel="class", ylabel=metric)
    ax.legend(fontsize=7, ncol=3)
    return ax
