"""Studies that compare variants of one model trained alike: the ablations for the paper's question
"is it the quantum circuit that helps?" (``GATES``), the quantum noise options
(``NOISE``) and the qdm recipe's changes, each taken back out (``RECIPE``).

Every variant is the same U-Net with a gate at the bottleneck (Eq. 8) and some TrainConfig
overrides. Each (digit, variant, seed) cell is trained with the same preset and evaluated with the
same protocol through qdm.experiments.cells.run_cell, on the grid runner of qdm.experiments.grid
(resumable: a finished cell is reused, an unfinished one resumes), under the cell's lease (a cell
another process holds is skipped). Cells are named by
variant, so a variant in both studies (the classical model, the paper's quantum model) is trained
once. After every cell, ``<study>.md`` and ``<study>.csv`` are
rewritten: per digit, a row per variant with its trainable gate parameters, FID, KID and SSIM as
mean ± std over seeds and the training step time, the real-vs-real floor, and each variant's FID
difference from its reference variant with the standard error of that difference; plus
``<study>_cells.csv`` (every cell's numbers) and ``<study>.png`` (bars with error bars), each rewrite
merging, under the study's lock, the cells and floors that other processes recorded meanwhile.
"""
import csv
from functools import partial
from pathlib import Path

import numpy as np

from qdm.checkpoint import atomic_write, csv_text, write_text
from qdm.data import check_dataset
from qdm.errors import UserError
from qdm.gates import gate_parameters, inert_parameters
from qdm.experiments.cells import run_cell
from qdm.experiments.grid import cell_flags, check_executor, grid_devices, require_finished, run_grid, runs_here
from qdm.experiments.ledger import cells_csv, merge_recorded, parse_value, recorded_cells
from qdm.experiments.protocol import protocol, results_name
from qdm.experiments.scoring import inception_once, reference_rows
from qdm.experiments.stats import beyond_2se, difference, mean_std, pooled_difference
from qdm.locks import cell_lock, ledger_lock
from qdm.presets import PAPER_CIRCUIT, PRESETS as ALL_PRESETS, get_preset
from qdm.train import TrainConfig, build_model, make_config, resolve_device

DATASET = "mnist"
PAPER_QUANTUM = PAPER_CIRCUIT    # Table I's quantum model (the official code)
GATES = {   # name -> (TrainConfig.model, more TrainConfig values, what it is)
    "classical": ("classical", {}, "no gate (identity)"),
    "quantum-paper-detached": ("quantum", {"quantum": PAPER_QUANTUM},
                               "the paper's circuit (RZ + CNOT chain), input detached as in the official code "
                               "(Table I's quantum model)"),
    "quantum-paper": ("quantum", {"quantum": {"ansatz": "paper", "detach_input": False}},
                      "the paper's circuit, the Linear in front of it trained"),
    "quantum-rz_ry": ("quantum", {"quantum": {"ansatz": "rz_ry"}}, "RZ + RY circuit (the official repository's later fix)"),
    "quantum-ry": ("quantum", {"quantum": {"ansatz": "ry"}}, "RY circuit (real amplitudes)"),
    "cosine": ("cosine", {}, "product of cosines over the parity sets: the paper circuit's function, plain torch"),
    "mlp": ("mlp", {}, "a 16 -> 2 -> 16 tanh MLP in place of the circuit"),
    "se": ("se", {}, "squeeze-and-excitation: relu in place of the circuit, sigmoid on the channel weights"),
}


def _noisy(what: str, **options):
    return ("quantum", {"quantum": {**PAPER_QUANTUM, **options}}, what)


NOISE = {   # the paper's quantum model with each quantum noise option of qdm.quantum.noisy
    "classical": GATES["classical"],
    "quantum-paper-detached": GATES["quantum-paper-detached"][:2] + ("no quantum noise (exact expectations)",),
    "shots-1000": _noisy("1000 shots per circuit evaluation", shots=1000),
    "shots-1000-linear": _noisy("1000 / g(t)^2 shots: shot noise proportional to t", shots=1000, noise_schedule="linear"),
    "shots-100": _noisy("100 shots per circuit evaluation", shots=100),
    "shots-100-linear": _noisy("100 / g(t)^2 shots", shots=100, noise_schedule="linear"),
    "depolarizing-0.01": _noisy("depolarizing p = 0.01 after every layer", channel="depolarizing", noise_p=0.01),
    "depolarizing-0.01-linear": _noisy("depolarizing p = 0.01 g(t)", channel="depolarizing", noise_p=0.01,
                                       noise_schedule="linear"),
    "depolarizing-0.05": _noisy("depolarizing p = 0.05 after every layer", channel="depolarizing", noise_p=0.05),
    "depolarizing-0.05-linear": _noisy("depolarizing p = 0.05 g(t)", channel="depolarizing", noise_p=0.05,
                                       noise_schedule="linear"),
    "eps-quantum": ("quantum", {"quantum": PAPER_QUANTUM, "eps_source": "quantum"},
                    "diffusion noise epsilon from measured |+> bits (qdm.quantum.epsilon.quantum_randn)"),
}
QDM_RECIPE = {k: ALL_PRESETS["qdm"].train[k] for k in ("lr", "lr_schedule", "warmup_steps", "grad_clip", "ema_warmup", "unet")}
PAPER_RECIPE = {k: getattr(TrainConfig(), k) for k in QDM_RECIPE}    # the same keys as the paper trained them


def _without(what: str, **changes):
    return ("classical", {**QDM_RECIPE, **changes}, what)


RECIPE = {  # the classical model with the qdm recipe, with each of its changes undone in turn;
    # the number of steps is the preset's, so that the study asks what each change buys at one budget
    "qdm": _without("the qdm recipe (training options of the qdm preset)"),
    "no-time-every-scale": _without("time embedding at the bottleneck only, as in the paper",
                                    unet={**QDM_RECIPE["unet"], "time_every_scale": False}),
    "no-skip-mid": _without("no second skip connection at 14x14, as in the paper",
                            unet={**QDM_RECIPE["unet"], "skip_mid": False}),
    "constant-lr": _without("constant learning rate (no warm-up, no cosine decay)", lr_schedule="constant",
                            warmup_steps=0),
    "lr-3e-4": _without("the paper's learning rate 3e-4 (warm-up and cosine decay kept)", lr=PAPER_RECIPE["lr"]),
    "no-grad-clip": _without("no gradient clipping", grad_clip=None),
    "no-ema-warmup": _without("EMA 0.999 from the first step (the random initial weights decay as 0.999^k)",
                              ema_warmup=False),
    "paper": ("classical", PAPER_RECIPE, "all of them undone: the paper's recipe"),
}
STUDIES = {  # study -> (variants, the variant each row is compared with, a title)
    "ablations": (GATES, "classical", "the gate at the U-Net's bottleneck"),
    "noise": (NOISE, "quantum-paper-detached", "quantum noise options on the paper's quantum model"),
    "recipe": (RECIPE, "qdm", "the qdm recipe's changes, each undone (classical model)"),
}
METRICS = ("FID", "KID", "SSIM")


def gate_counts(variant: str, preset: str = "paper", variants: dict = GATES) -> tuple[int, int]:
    """(trainable gate parameters, of which inert) of a variant, counted on the model that trains."""
    model, overrides, _ = variants[variant]
    unet = build_model(make_config(preset, model=model, **overrides))
    return gate_parameters(unet), inert_parameters(unet)


def _fmt(mean, std, metric):
    if mean is None:
        return "—"
    f = (lambda x: f"{x:.4f}") if metric in ("KID", "SSIM") else (lambda x: f"{x:.2f}")
    return f(mean) + (f" ± {f(std)}" if std is not None else "")


def summary_rows(cells: list[dict], floors: dict, variants: list, counts: dict, reference: str) -> list[dict]:
    """One row per (digit, variant) with mean and std over seeds, and the FID difference from the
    reference variant with its standard error sqrt(s1^2/n1 + s2^2/n2) (none with a single seed on
    either side); then the digit's real-vs-real floor."""
    rows = []
    for cls in floors:
        by_variant = {v: [c for c in cells if c["variant"] == v and c["cls"] == str(cls)] for v in variants}
        ref_fid = [c["FID"] for c in by_variant.get(reference, [])]
        for v, mine in by_variant.items():
            if not mine:
                continue
            row = {"digit": cls, "variant": v, "gate_parameters": counts[v][0], "inert_parameters": counts[v][1]}
            for m in METRICS:
                row[m], row[f"{m}_seed_std"] = mean_std([c[m] for c in mine])
            row["dFID"] = row["dFID_se"] = None
            if v != reference and ref_fid:
                row["dFID"], row["dFID_se"] = difference([c["FID"] for c in mine], ref_fid)
            row["ms_per_step"] = 1000 * float(np.median([c["seconds_per_step"] for c in mine]))
            row["seeds"] = len(mine)
            rows.append(row)
        rows.append({"digit": cls, "variant": "real-vs-real", **{m: floors[cls][m] for m in METRICS}})
    return rows


def pooled_rows(rows: list[dict], reference: str) -> list[dict]:
    """Each variant's FID difference from the reference averaged over the digits that have one,
    (1/D) sum_d dFID_d, with standard error sqrt(sum_d se_d^2) / D (digits trained independently):
    the same question as the per-digit rows, asked with D times the seeds."""
    pooled = []
    for v in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == v and r.get("dFID_se") is not None]
        if v == reference or len(mine) < 2:
            continue
        diff, se = pooled_difference([(r["dFID"], r["dFID_se"]) for r in mine])
        pooled.append({"variant": v, "digits": " ".join(str(r["digit"]) for r in mine), "dFID": diff, "dFID_se": se})
    return pooled


def _diff(r: dict) -> str:
    if r["dFID_se"] is None:
        return f"{r['dFID']:+.2f} (one seed: no s.e.)"
    return f"{r['dFID']:+.2f} ± {r['dFID_se']:.2f}" + beyond_2se(r["dFID"], r["dFID_se"])


MODEL_COLORS = {"classical": "tab:gray", "quantum": "tab:purple"}    # other gates: tab:blue


def plot_study(rows: list[dict], title: str, path: Path, models: dict) -> None:
    """FID per variant as bars (mean over seeds, error bars: seed std; colour: the variant's
    model, ``models``), one panel per digit, the real-vs-real floor as a dashed line."""
    from matplotlib.figure import Figure
    digits = list(dict.fromkeys(r["digit"] for r in rows))
    width = max(5.0, 0.6 * len(models))
    fig = Figure(figsize=(1 + width * len(digits), 4.8))
    axes = fig.subplots(1, len(digits), squeeze=False)
    for ax, d in zip(axes[0], digits):
        mine = [r for r in rows if r["digit"] == d and r["variant"] != "real-vs-real"]
        floor = next(r["FID"] for r in rows if r["digit"] == d and r["variant"] == "real-vs-real")
        ax.bar(range(len(mine)), [r["FID"] for r in mine], yerr=[r["FID_seed_std"] or 0 for r in mine],
               capsize=3, color=[MODEL_COLORS.get(models[r["variant"]], "tab:blue") for r in mine])
        ax.axhline(floor, ls="--", color="k", label=f"real-vs-real {floor:.1f}")
        ax.set_xticks(range(len(mine)), [r["variant"] for r in mine], rotation=60, ha="right", fontsize=8)
        ax.set(title=f"digit {d}", ylabel="FID (lower is better)")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def study_name(study: str, preset: str, proto: dict | None = None) -> str:
    """The results' file name, one per (preset, protocol): the study's own for the study preset and
    its protocol, <study>_<preset> for another preset (ablations_paper, ablations_fast), and
    <study>_<preset>_<protocol tag> for another protocol (ablations_study_ddpm1000-n1000)."""
    return results_name(study, "study", preset, proto)


def write_study_tables(study: str, cells: list[dict], floors: dict, variants: list, counts: dict, proto: dict,
                       preset: str, out_dir: Path, other_cells: list = ()) -> Path:
    """<study>.md, .csv (``summary_rows``), <study>_cells.csv (every cell, and ``other_cells``: those
    of other protocols) and <study>.png; the files are named by ``study_name``."""
    table, reference, title = STUDIES[study]
    rows = summary_rows(cells, floors, variants, counts, reference)
    md = [f"# {study.capitalize()}: {title} (preset `{preset}`)", "",
          "Protocol: " + "; ".join(f"{k} = {v}" for k, v in proto.items()) + ".", "",
          f"| Digit | Variant | Gate parameters | FID | KID | SSIM | FID - {reference} | ms/step | Seeds |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["variant"] == "real-vs-real":
            params, diff, step, seeds = "—", "—", "—", "—"
        else:
            params = f"{r['gate_parameters']}" + (f" ({r['inert_parameters']} inert)" if r["inert_parameters"] else "")
            diff = "—" if r["dFID"] is None else _diff(r)
            step, seeds = f"{r['ms_per_step']:.0f}", str(r["seeds"])
        values = [_fmt(r[m], r.get(f"{m}_seed_std"), m) for m in METRICS]
        md.append(f"| {r['digit']} | {r['variant']} | {params} | " + " | ".join(values) + f" | {diff} | {step} | {seeds} |")
    pooled = pooled_rows(rows, reference)
    if pooled:
        md += ["", f"Over digits: FID - {reference}, the per-digit differences averaged "
               "(± the standard error of that average):", "", "| Variant | Digits | FID - " + reference + " |",
               "|---|---|---|"] + [f"| {r['variant']} | {r['digits']} | {_diff(r)} |" for r in pooled]
    md += ["", "Mean over seeds, ± their standard deviation (with two seeds or more). Gate parameters: the "
           "gate's trainable parameters; inert ones cannot change its outputs (the paper circuit's RZ angles). "
           f"FID - {reference}: the difference of the mean FIDs, ± its standard error from the seed-to-seed "
           "spread; \"beyond 2 s.e.\" marks a difference larger than twice that. "
           "ms/step: training step time, median over the seeds' runs (depends on the device and its load). real-vs-real: N training "
           "images of the digit against its test images, the floor at this N.", "", "Variants:"]
    md += [f"- `{v}`: {table[v][2]}" for v in variants]
    name = study_name(study, preset, proto)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / f"{name}.md", "\n".join(md) + "\n")
    write_text(out_dir / f"{name}.csv", csv_text(rows))
    if pooled:
        write_text(out_dir / f"{name}_pooled.csv", csv_text(pooled))
    write_text(out_dir / f"{name}_cells.csv", cells_csv(list(cells) + list(other_cells)))
    plot_study(rows, f"{study}: {title}\n(preset {preset}, N = {proto['n']}, {proto['sampler']}-{proto['steps']}; "
                     "mean ± std over seeds)", out_dir / f"{name}.png", {v: table[v][0] for v in variants})
    return out_dir / f"{name}.md"


def cell_key(cell: dict) -> tuple:
    return cell["variant"], cell["cls"], cell["seed"]


def recorded_floors(path: Path) -> dict:
    """The real-vs-real rows a written study table (<name>.csv) records, per digit: the floors of
    digits this process did not compute (another process did)."""
    if not Path(path).exists():
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    try:
        return {int(r["digit"]): {m: parse_value(r[m]) for m in METRICS}
                for r in rows if r["variant"] == "real-vs-real"}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is not a study table written by qdm ({type(e).__name__}: {e}); "
                        "restore it from git or move it away to start afresh") from None


def record_study(study: str, cells: dict, floors: dict, variants: list, counts: dict, proto: dict, preset: str,
                 results: Path) -> Path:
    """Write the study's files under their ledger's lock, after adding what other processes recorded
    meanwhile: their cells (ours win) and the floors of digits we have none for. Shown: ``variants``
    and those of every recorded cell, the digits with a floor."""
    table = STUDIES[study][0]
    name = study_name(study, preset, proto)
    path = results / f"{name}_cells.csv"
    with ledger_lock(path):
        others = merge_recorded(cells, path, preset, proto, cell_key)
        for cls, floor in recorded_floors(results / f"{name}.csv").items():
            floors.setdefault(cls, floor)
        shown = [v for v in table if v in variants or any(c["variant"] == v for c in cells.values())]
        counts.update({v: gate_counts(v, preset, table) for v in shown if v not in counts})
        return write_study_tables(study, list(cells.values()), dict(sorted(floors.items())), shown, counts, proto,
                                  preset, results, others)


def run_study_cell(task: tuple, *, root: Path, study: str, preset: str, proto: dict, device, data_dir,
                   progress: bool, fid_model=None) -> dict | None:
    """One (digit, variant, seed) cell under its lease (the lock reproduce's cells take); None when
    another process holds it."""
    device = resolve_device(str(device))          # by name from a submitit job or worker process
    cls, variant, seed = task
    model, overrides, _ = STUDIES[study][0][variant]
    name = f"{DATASET}-{cls}-{variant}-seed{seed}"
    with cell_lock(root / "locks" / f"{name}.lock") as mine:
        if not mine:
            return None
        return {"variant": variant, **run_cell(root / name, preset, DATASET, cls, model, seed, proto,
                                               fid_model or inception_once(device), device, data_dir,
                                               progress=progress, overrides=overrides)}


def ablate(classes=(0, 1, 8), variants=None, seeds=(0, 1, 2), preset: str = "paper",
           proto: dict | None = None, runs_dir="runs/ablations", results_dir=None, device="auto",
           data_dir=None, progress=True, study: str = "ablations", jobs: int = 1, executor: str = "local",
           cluster: str | None = None, slurm: dict | None = None) -> Path | None:
    """Train and evaluate every (digit, variant, seed) cell of MNIST for a study of ``STUDIES``
    (variants None: all of the study's), resumably, through qdm.experiments.grid; returns the path of
    <study>.md (None with the commands executor). Results go to results/, or beside the runs for a
    preset that says so (fast)."""
    if study not in STUDIES:
        raise UserError(f"unknown study {study!r}: choose {' or '.join(STUDIES)}")
    table = STUDIES[study][0]
    classes, variants, seeds = list(classes), list(variants or table), list(seeds)
    check_dataset(DATASET, classes)
    bad = [v for v in variants if v not in table]
    if bad:
        raise UserError(f"unknown variant {bad[0]!r} for {study}: choose from {', '.join(table)}")
    if not (classes and variants and seeds):
        raise UserError("give at least one digit, one variant and one seed")
    check_executor(executor, jobs)
    proto = proto or protocol(preset)
    make_config(preset)                                     # an unknown preset fails here, before any work
    root = Path(runs_dir) / preset
    results = Path(results_dir or (root / "results" if get_preset(preset).results_beside_runs else "results"))
    cells, _ = recorded_cells(results / f"{study_name(study, preset, proto)}_cells.csv", preset, proto, cell_key)
    tasks = [(cls, v, seed) for cls in classes for v in variants for seed in seeds
             if (v, str(cls), seed) not in cells]            # recorded in results/: kept as they are
    asked = device                                        # the printed commands pass on what was asked
    device, cells_device = grid_devices(asked, executor, jobs)

    def command(task):
        return (f"python -m qdm ablate --study {study} --preset {preset} --digits {task[0]} --variants {task[1]} "
                f"--seeds {task[2]} --runs-dir {runs_dir} --results-dir {results} {cell_flags(proto, asked, data_dir)}")
    if executor == "commands":
        run_grid(tasks, None, None, executor="commands", command=command)
        return None
    counts = {v: gate_counts(v, preset, table) for v in variants}
    fid_model = inception_once(device)
    floors = {cls: reference_rows(root, DATASET, cls, proto, fid_model, device, data_dir)["real-vs-real"]
              for cls in sorted(set(classes) | {int(c["cls"]) for c in cells.values()})}

    def record(task, cell):
        cells[(task[1], str(task[0]), task[2])] = cell
        record_study(study, cells, floors, variants, counts, proto, preset, results)

    here = runs_here(jobs, executor)
    work = partial(run_study_cell, root=root, study=study, preset=preset, proto=proto,
                   device=cells_device, data_dir=data_dir, progress=progress and here,
                   fid_model=fid_model if here else None)
    run_grid(tasks, work, record, jobs=jobs, executor=executor, folder=Path(runs_dir) / "submitit",
             cluster=cluster, slurm=slurm, label=study, progress=progress)
    require_finished(cells, root)
    return record_study(study, cells, floors, variants, counts, proto, preset, results)
