"""The paper's Table I (MNIST, per digit) and Table II (PathMNIST), filled with our numbers.

Each cell (model x class x seed) is one training run plus one evaluation, kept in its own
folder under ``runs/reproduce/<preset>/``; a finished cell has ``metrics.json`` there and a row
in ``results/<table>_cells.csv`` and is skipped on a rerun (from a fresh clone too: the row is
enough), an unfinished one resumes from its ``last.pt``. After every cell the
tables are rewritten (Markdown and CSV) with the paper's own numbers beside ours and
reference rows that give them a scale: real-vs-real (N training images of the class against
its test images: the floor at this N) and Gaussian noise against the same test images (the
ceiling). The quantum cells run the paper's circuit as the official code ran it (paper
ansatz, circuit input detached; see qdm.quantum).

Each (preset, protocol) has results files of its own name (``table_name``), so no run replaces
another's table or figures; several processes may fill one table at once: a cell is run under
its lock, and every rewrite of the tables merges, under the table's lock, what the others have
recorded (qdm.locks).
"""
import csv
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from qdm import metrics
from qdm.checkpoint import atomic_write, csv_text, write_json, write_text
from qdm.data import DATASETS, load_images
from qdm.diffusion import SAMPLERS
from qdm.errors import UserError
from qdm.inference import check_precision, for_sampling
from qdm.locks import cell_lock, ledger_lock
from qdm.plots import save_grid
from qdm.train import make_config, make_diffusion, model_from_checkpoint, resolve_device, train

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
QUANTUM_AS_PAPER = {"ansatz": "paper", "detach_input": True}   # what the official code ran
# the quantum cells' circuit per recipe: as the official code ran it, except in the qdm recipe,
# which trains the Linear in front of the circuit (the detached input is a bug, not a design)
QUANTUM_CELLS = {"qdm": {"ansatz": "paper", "detach_input": False}}
METRICS = ("SSIM", "FID", "KID", "SSIM_nearest")


def column(cls) -> str:
    return "all" if cls is None else str(cls)


PROTOCOL_DEFAULTS = {   # preset -> (N, sampler, steps); others: N = 1000 with DDPM-1000 (the paper's sampler)
    "fast": (16, "ddim", 5),       # seconds: checks the machinery
    "study": (500, "ddim", 50),    # the ablation and noise studies: many cells, compared at the same N
}


def protocol(preset: str, n: int | None = None, sampler: str | None = None, steps: int | None = None,
             seed: int = 0, precision: str = "fp32") -> dict:
    """How images are measured, in one place, written into every results file: N generated
    images per class (EMA weights of best.pt) against the class's test images (all of them;
    the first n_real in the fast preset), the sampler (qdm.diffusion.SAMPLERS) and its steps, the
    seed, and the network's precision while sampling (qdm.inference) when it is not fp32."""
    n_default, sampler_default, steps_default = PROTOCOL_DEFAULTS.get(preset, (1000, "ddpm", 1000))
    sampler = sampler or sampler_default
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if steps is None:
        steps = steps_default if sampler == sampler_default else (1000 if sampler == "ddpm" else 100)
    if n is not None and n < 2 or steps < 1:
        raise UserError(f"--n must be at least 2 and --steps at least 1 (got n={n}, steps={steps})")
    return {"n": n or n_default, "n_real": 64 if preset == "fast" else None,
            "real": "test split of the class", "sampler": sampler,
            "steps": steps, "seed": seed, **({"precision": precision} if check_precision(precision) != "fp32" else {}),
            "fid": "pytorch-fid InceptionV3 pool3 (2048)", "kid": "unbiased, cubic polynomial kernel",
            "ssim": "random real pair of the class (fixed seed); SSIM_nearest: best over 200 real"}


def protocol_tag(proto: dict, preset: str) -> str:
    """A protocol in a file name: sampler and steps, N, and the real images and seed where they
    are not the preset's (e.g. ddim50-n500)."""
    default = protocol(preset)
    return (f"{proto['sampler']}{proto['steps']}" + (f"-{proto['precision']}" if "precision" in proto else "")
            + f"-n{proto['n']}"
            + (f"-real{proto.get('n_real')}" if proto.get("n_real") != default["n_real"] else "")
            + (f"-seed{proto.get('seed')}" if proto.get("seed") != default["seed"] else ""))


def results_name(base: str, home: str, preset: str, proto: dict | None = None) -> str:
    """The name of a table's or a study's results files, one per (preset, protocol): ``base`` for
    its home preset with that preset's protocol, <base>_<preset> for another preset with its own
    protocol, <base>_<preset>_<protocol tag> for any other protocol. Figures go to <name>_figures/."""
    if proto is not None and proto != protocol(preset):
        return f"{base}_{preset}_{protocol_tag(proto, preset)}"
    return base if preset == home else f"{base}_{preset}"


def table_name(table: str, preset: str, proto: dict | None = None) -> str:
    """table1 for the paper's recipe and protocol, table1_qdm, table1_fast, table1_paper_ddim50-n500..."""
    return results_name(table, "paper", preset, proto)


def real_set(dataset: str, cls, proto: dict, fid_model, device, data_dir=None):
    """The real test images of a column and their (cached) Inception features."""
    classes = None if cls is None else [cls]
    real = load_images(dataset, "test", classes, data_dir)[:proto["n_real"]]
    feats = metrics.reference_features(dataset, classes, "test", len(real), fid_model, device, data_dir)
    return real, feats


def score(generated: torch.Tensor, real: torch.Tensor, real_features: np.ndarray, fid_model, device) -> dict:
    """FID (Eq. 11), KID, SSIM (Eq. 12; random real pair, and nearest real) of a set of images."""
    f = metrics.inception_features(generated, fid_model, device=device)
    kid, kid_std = metrics.kernel_inception_distance(f, real_features)
    return {"FID": metrics.frechet_distance(f, real_features), "KID": kid, "KID_std": kid_std,
            "SSIM": metrics.ssim_random_pairs(generated, real),
            "SSIM_nearest": metrics.ssim_nearest_real(generated, real)}


def generate(checkpoint, proto: dict, device="cpu", progress=False):
    """proto['n'] images from a checkpoint's EMA weights, in batches of 500, seeded."""
    model, cfg = model_from_checkpoint(checkpoint, device)
    diffusion = make_diffusion(cfg)            # its schedule and epsilon source (qdm.noise)
    eps = for_sampling(model, proto.get("precision", "fp32"))
    batches = torch.arange(proto["n"]).split(500)
    with torch.inference_mode():
        images = [diffusion.sample(eps, (len(b), DATASETS[cfg.dataset][0], 28, 28), proto["sampler"], proto["steps"],
                                   generator=torch.Generator().manual_seed(proto["seed"] + i), device=device,
                                   progress=progress).cpu() for i, b in enumerate(batches)]
    return torch.cat(images), cfg


def evaluate_checkpoint(checkpoint, proto: dict, fid_model=None, device="cpu", data_dir=None,
                        progress=False) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Sample from a checkpoint and score the images against the test images of the class(es)
    it was trained on. Returns (metrics, generated images, real images)."""
    device = resolve_device(str(device))
    fid_model = fid_model or metrics.inception(device)
    t0 = time.perf_counter()
    images, cfg = generate(checkpoint, proto, device, progress)
    seconds = time.perf_counter() - t0
    cls = None if cfg.classes is None else (cfg.classes[0] if len(cfg.classes) == 1 else None)
    if cfg.classes is not None and len(cfg.classes) > 1:
        raise UserError("evaluate needs a checkpoint trained on one class or on all classes")
    real, real_f = real_set(cfg.dataset, cls, proto, fid_model, device, data_dir or cfg.data_dir)
    result = {**score(images, real, real_f, fid_model, device), "sample_seconds": seconds, "protocol": proto}
    return result, images, real


def reference_rows(folder: Path, dataset: str, cls, proto: dict, fid_model, device, data_dir=None) -> dict:
    """Real training images vs the test images (the floor at this N) and Gaussian noise
    vs the test images (the ceiling), cached in ``folder`` as JSON."""
    path = folder / f"reference-{dataset}-{column(cls)}-n{proto['n']}-real{proto['n_real']}.json"
    if path.exists():
        return json.loads(path.read_text())
    real, real_f = real_set(dataset, cls, proto, fid_model, device, data_dir)
    train_x = load_images(dataset, "train", None if cls is None else [cls], data_dir)[:proto["n"]]
    noise = torch.randn((len(train_x), *real.shape[1:]), generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    rows = {"real-vs-real": score(train_x, real, real_f, fid_model, device),
            "noise-vs-real": score(noise, real, real_f, fid_model, device)}
    write_json(path, rows)
    return rows


def cell_figure(generated: torch.Tensor, real: torch.Tensor, title: str, path: Path, n: int = 64):
    """Generated images beside real ones, like the paper's Fig. 3-7."""
    import matplotlib.pyplot as plt
    from qdm.plots import image_grid
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, images, name in zip(axes, [generated[:n], real[:n]], ["generated", "real (test)"]):
        ax.imshow(image_grid(images, nrow=8).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set(title=name, xticks=[], yticks=[])
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


OVERVIEW_IMAGES = 8     # images per panel of the overview figure (2 rows of 4)


def overview_figure(figures: Path, dataset: str, columns: list, seed: int = 0, data_dir=None) -> Path | None:
    """The layout of the paper's Figs. 3-6 for every column at once: real test images, then the
    classical and the quantum model's samples (same sampling seed, so the same starting noise), from
    the strips run_cell leaves beside each cell's figure. Written to <figures>/overview.png."""
    import matplotlib.pyplot as plt
    from matplotlib.image import imread
    from qdm.plots import image_grid
    strips = {(m, k): figures / f"{dataset}-{column(k)}-{m}-seed{seed}_strip.png" for m in MODELS for k in columns}
    if not any(path.exists() for path in strips.values()):
        return None
    fig, axes = plt.subplots(3, len(columns), figsize=(1.6 * len(columns) + 0.6, 2.6), squeeze=False)
    for j, k in enumerate(columns):
        real = load_images(dataset, "test", None if k is None else [k], data_dir)[:OVERVIEW_IMAGES]
        panels = [image_grid(real, nrow=4).permute(1, 2, 0).numpy()]
        panels += [imread(strips[m, k]) if strips[m, k].exists() else None for m in MODELS]
        for i, (panel, label) in enumerate(zip(panels, ["real", *MODELS])):
            ax = axes[i][j]
            ax.set(xticks=[], yticks=[])
            if panel is not None:
                ax.imshow(panel, interpolation="nearest")
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            if i == 0:
                ax.set_title(column(k), fontsize=9)
    fig.tight_layout(pad=0.3)
    path = figures / "overview.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def train_cell(folder: Path, preset: str, dataset: str, cls, model: str, seed: int, device="cpu",
               data_dir=None, progress=True, overrides: dict | None = None) -> dict:
    """Train (or resume, or reuse) one cell's model in ``folder`` and return its summary: the
    preset's recipe on one class, the preset's circuit for quantum cells, DDIM previews per epoch."""
    if not (folder / "summary.json").exists():
        cfg = make_config(preset, dataset=dataset, classes=None if cls is None else [cls], model=model,
                          seed=seed, device=str(device), data_dir=data_dir,
                          **{"quantum": QUANTUM_CELLS.get(preset, QUANTUM_AS_PAPER) if model == "quantum" else {},
                             "grid_sampler": "ddim",   # per-epoch previews only; training is the preset's
                             **(overrides or {})})
        train(cfg, folder, resume=True, progress=progress)
    return json.loads((Path(folder) / "summary.json").read_text())


def run_cell(folder: Path, preset: str, dataset: str, cls, model: str, seed: int, proto: dict,
             fid_model, device, data_dir=None, figure: Path | None = None, progress=True,
             overrides: dict | None = None) -> dict:
    """Train (or resume, or reuse) one cell and evaluate its best EMA model. The metrics file,
    named after the protocol, marks the cell finished for that protocol and is never rewritten.
    ``overrides``: more TrainConfig values (e.g. ``quantum``, replacing the preset's QUANTUM_CELLS)."""
    precision = f"-{proto['precision']}" if "precision" in proto else ""
    done = folder / (f"metrics-{proto['sampler']}{proto['steps']}{precision}-n{proto['n']}-real{proto['n_real']}"
                     f"-seed{proto['seed']}.json")
    if done.exists():
        return json.loads(done.read_text())
    summary = train_cell(folder, preset, dataset, cls, model, seed, device, data_dir, progress, overrides)
    result, images, real = evaluate_checkpoint(folder / "best.pt", proto, fid_model, device, data_dir, progress)
    result.update(model=model, cls=column(cls), seed=seed, preset=preset, train_seconds=summary["train_seconds"],
                  seconds_per_step=summary["seconds_per_step"], steps=summary["steps"],
                  cell_seconds=summary["train_seconds"] + result["sample_seconds"])
    if figure is not None:
        cell_figure(images, real, f"{dataset} {column(cls)}, {model}, seed {seed} (preset {preset}, N = {proto['n']}, "
                                  f"{proto['sampler']}-{proto['steps']}): FID {result['FID']:.1f}, "
                                  f"SSIM {result['SSIM']:.3f}", figure)
        save_grid(images[:OVERVIEW_IMAGES], figure.with_name(f"{figure.stem}_strip.png"), nrow=4)
    write_json(done, result)
    return result


def cells_csv(cells: list[dict]) -> str:
    """Every cell's numbers as CSV, its protocol as one JSON column (so it can be read back)."""
    return csv_text([{**c, "protocol": json.dumps(c["protocol"])} for c in cells])


def parse_value(text: str):
    """A CSV field as written by csv_text: an int, a float, None (empty) or the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text == "" else text


def recorded_cells(path: Path, preset: str, proto: dict, key) -> tuple[dict, list]:
    """The cells a results file ``<name>_cells.csv`` already holds: those of this preset and
    protocol by ``key(cell)``, and the others (written back untouched, never shown with these).
    Run folders live in runs/, which is not committed; results/ is. So a fresh clone continues a
    table or a study from what results/ records: a recorded cell is neither recomputed nor
    dropped. Rows from before the file had a protocol column were all scored with the preset's
    default protocol."""
    cells, others = {}, []
    if not Path(path).exists():
        return cells, others
    with open(path) as f:
        rows = list(csv.DictReader(f))
    try:
        for row in rows:
            cell = {**{k: parse_value(v) for k, v in row.items()}, "cls": row["cls"]}
            cell["protocol"] = json.loads(row["protocol"]) if row.get("protocol") else protocol(cell["preset"])
            if cell["preset"] == preset and cell["protocol"] == proto:
                cells[key(cell)] = cell
            else:
                others.append(cell)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is not a cells file written by qdm ({type(e).__name__}: {e}); "
                        "restore it from git or move it away to start afresh") from None
    return cells, others


def merge_recorded(cells: dict, path: Path, preset: str, proto: dict, key) -> list:
    """Add to ``cells`` the cells another process recorded in ``path`` meanwhile (ours win); return
    the file's cells of other protocols, to be written back with them."""
    recorded, others = recorded_cells(path, preset, proto, key)
    cells.update({k: c for k, c in recorded.items() if k not in cells})
    return others


def recorded_references(path: Path) -> dict:
    """The reference rows a written table (<name>.csv) records, per column: the floor and ceiling
    of columns this process did not compute (another process did, or an earlier run whose runs/
    folder is gone), as ``reference_rows`` gives them."""
    refs = {}
    if not Path(path).exists():
        return refs
    with open(path) as f:
        rows = list(csv.DictReader(f))
    try:
        for row in rows:
            ref = row["row"].removeprefix("ours ")
            if ref not in ("real-vs-real", "noise-vs-real"):
                continue
            for col, value in row.items():
                if col not in ("metric", "row", "Avg", "Std") and value not in ("", None):
                    column_refs = refs.setdefault(None if col == "all" else int(col), {})
                    column_refs.setdefault(ref, {})[row["metric"]] = float(value)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path} is not a table written by qdm ({type(e).__name__}: {e}); "
                        "restore it from git or move it away to start afresh") from None
    return refs


def _fmt(x, metric):
    if x is None:
        return "—"
    return f"{x:.4f}" if metric in ("SSIM", "SSIM_nearest", "KID") else f"{x:.2f}"


def mean_std(values):
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def difference(a: list, b: list) -> tuple[float, float | None]:
    """mean(a) - mean(b) and its standard error sqrt(s_a^2/n_a + s_b^2/n_b) (None with one seed on
    either side): two models' metric over independently trained seeds."""
    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return diff, None
    return diff, float(np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))


def pooled_difference(diffs: list[tuple[float, float]]) -> tuple[float, float]:
    """Per-class differences averaged over the D classes, (1/D) sum_d diff_d, with standard error
    sqrt(sum_d se_d^2) / D (classes trained independently)."""
    return float(np.mean([d for d, _ in diffs])), float(np.sqrt(sum(se ** 2 for _, se in diffs)) / len(diffs))


def beyond_2se(diff: float, se: float | None) -> str:
    """The studies' mark for a difference larger than twice its standard error."""
    return " (beyond 2 s.e.)" if se is not None and abs(diff) > 2 * se else ""


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
    seeds = sorted({c["seed"] for c in cells})
    done = sorted({(c["model"], c["cls"]) for c in cells})
    md += ["", f"Ours: {len(cells)} finished cells (model, class): {done}; mean over seeds {seeds}, ± their std.",
           "Avg and Std are over the classes (columns) shown. Every cell's numbers, wall times included, are in "
           f"`{table_name(table, preset, proto)}_cells.csv`; SSIM, FID, KID as defined in notebooks/07_evaluation.",
           "FID / floor: our mean FID over the column's real-vs-real FID (1 would be as close as real images at "
           "this N). quantum - classical: the difference of the mean FIDs ± its standard error over the seeds; its "
           "Avg is the per-class differences averaged, ± sqrt(sum se^2) / D; \"beyond 2 s.e.\" as in the studies.",
           "Paper: as printed; its FIDs come from 5-13 images (see the evaluation notebook), ours from N above.",
           "Quantum cells: the paper's circuit " + ("(RZ ansatz) with its input trained (not detached)."
                                                    if QUANTUM_CELLS.get(preset, QUANTUM_AS_PAPER) != QUANTUM_AS_PAPER
                                                    else "as the official code ran it (RZ ansatz, circuit input detached).")]
    name = table_name(table, preset, proto)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / f"{name}.md", "\n".join(md) + "\n")
    write_text(out_dir / f"{name}.csv", csv_text(csv_rows))
    write_text(out_dir / f"{name}_cells.csv", cells_csv(list(cells) + list(other_cells)))
    return out_dir / f"{name}.md"


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


_worker_inception = {}


def _init_worker(threads: int):
    torch.set_num_threads(threads)


def run_task(root: Path, preset: str, table: str, dataset: str, cls, model: str, seed: int, proto: dict,
             device, data_dir, results: Path, progress: bool, fid_model=None):
    """One cell with its column's reference rows, under the cell's lock. Returns
    (reference rows, cell result or None when another process holds the cell)."""
    if fid_model is None:                           # in a worker process: one Inception per process
        fid_model = _worker_inception.setdefault(str(device), metrics.inception(device))
    name = f"{dataset}-{column(cls)}-{model}-seed{seed}"
    with cell_lock(root / "locks" / f"{name}.lock") as mine:
        if not mine:
            return None, None
        refs = reference_rows(root, dataset, cls, proto, fid_model, device, data_dir)
        return refs, run_cell(root / name, preset, dataset, cls, model, seed, proto, fid_model, device,
                              data_dir, results / f"{table_name(table, preset, proto)}_figures" / f"{name}.png",
                              progress)


def reproduce(table: str, preset: str = "paper", classes: list | None = None, models=MODELS,
              seeds=(0,), proto: dict | None = None, runs_dir="runs/reproduce", results_dir=None,
              device="auto", data_dir=None, progress=True, jobs: int = 1) -> Path:
    """Fill one table cell by cell (resumable); returns the path of the Markdown table.
    Results go to results/ for real presets and to <runs_dir>/<preset>/results for "fast".
    ``jobs`` > 1 runs that many cells at once in worker processes (each with cores / jobs
    threads); the tables are rewritten by this process after every finished cell."""
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
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    make_config(preset, dataset=dataset)                  # an unknown preset fails before any work
    proto = proto or protocol(preset)
    device = resolve_device(device)
    root = Path(runs_dir) / preset
    results = Path(results_dir or ("results" if preset != "fast" else root / "results"))
    cells, _ = recorded_cells(results / f"{table_name(table, preset, proto)}_cells.csv", preset, proto,
                              cell_key)                   # never recomputed
    tasks = [(cls, model, seed) for cls in columns for model in models for seed in seeds
             if (model, column(cls), seed) not in cells]
    shown = shown_columns(columns, cells)                 # the requested columns and the recorded ones
    fid_model = metrics.inception(device)                 # a missing weights file fails here, once
    refs = {k: reference_rows(root, dataset, k, proto, fid_model, device, data_dir)
            for k in shown if k not in {task[0] for task in tasks}}
    skipped = []

    def collect(task, out):
        ref, cell = out
        if cell is None:
            skipped.append(task)
            print(f"[reproduce {table}] cell {task} is being run by another process: skipped", flush=True)
            return
        refs[task[0]] = ref
        cells[cell_key(cell)] = cell
        record_table(table, cells, refs, columns, proto, preset, results)
        overview_figure(results / f"{table_name(table, preset, proto)}_figures", dataset, shown, data_dir=data_dir)
        if progress:
            print(f"[reproduce {table}] cell {task} done: FID {cell['FID']:.2f}, SSIM {cell['SSIM']:.4f}", flush=True)

    args = (root, preset, table, dataset)
    if jobs == 1:
        for task in tasks:
            if progress:
                print(f"[reproduce {table}] cell {task}", flush=True)
            collect(task, run_task(*args, *task, proto, device, data_dir, results, progress, fid_model))
    elif tasks:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        # columns innermost: the first cells to run at once are of different columns, so that
        # workers do not compute the same column's reference rows side by side
        tasks.sort(key=lambda task: (task[1], task[2]))
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(run_task, *args, *task, proto, str(device), data_dir, results, False): task
                       for task in tasks}
            for future in as_completed(futures):
                collect(futures[future], future.result())
    if not cells:
        raise UserError("no cell was finished: every cell is held by another process (see "
                        f"{root / 'locks'}; delete a lock whose process has died)")
    return record_table(table, cells, refs, columns, proto, preset, results)


def against_floor(results_dir, table: str, preset: str, proto: dict | None = None) -> list[dict]:
    """Each recorded cell of a table (its protocol: the preset's default unless given) beside its
    column's real-vs-real FID from ``<table>.csv``: FID / floor, the qdm recipe's measure (its goal: at
    most 2), and the cell's wall times (training, and sampling + scoring)."""
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
    real-vs-real floor and noise ceiling as lines, for one metric."""
    import csv
    import matplotlib.pyplot as plt
    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == metric]
    cols = [c for c in rows[0] if c not in ("metric", "row", "Avg", "Std")]
    ax = ax or plt.subplots(figsize=(10, 3.5))[1]
    bars = [r for r in rows if not r["row"].endswith("-vs-real")]
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
