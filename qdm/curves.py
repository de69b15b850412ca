"""Learning curves: FID and KID of a run's EMA weights against training steps.

A run trained with ``snapshot_every = k`` keeps its EMA weights every k epochs in
``snapshots/epoch_NNN.pt``. ``learning_curve`` scores each snapshot with a protocol of
qdm.reproduce (the same sampler, N and test images as the tables) and caches each score next to
its snapshot, so a rerun, or a longer run, only scores what is new. ``write_curves`` gathers the
curves of several runs into ``learning_curves.csv`` and ``learning_curves.png``, with each
digit's real-vs-real floor and the wall time of training up to every point. The rows of runs (or
protocols) not scored this time are kept: their folders, under runs/, may be gone; the CSV is
what is committed. The CSV is read, merged and written under its lock (qdm.locks), so curves
written at once by two processes both stay.
"""
import csv
import json
from functools import partial
from pathlib import Path

from qdm.checkpoint import atomic_write, csv_text, load_checkpoint, write_json, write_text
from qdm.errors import UserError
from qdm.experiments.grid import cell_flags, check_executor, grid_devices, run_grid, runs_here
from qdm.experiments.ledger import parse_value
from qdm.experiments.scoring import evaluate_checkpoint, inception_once, reference_rows
from qdm.locks import cell_lock, ledger_lock
from qdm.train import resolve_device


def _protocol_name(proto: dict) -> str:
    return f"{proto['sampler']}{proto['steps']}-n{proto['n']}-seed{proto['seed']}"


def learning_curve(run: Path, proto: dict, fid_model=None, device="cpu", data_dir=None, every: int = 1) -> list[dict]:
    """One row per scored snapshot of ``run`` (every ``every``-th, counted back from the last): its
    epoch and step, the training wall time up to it, and FID, KID, SSIM of N images sampled from
    it (cached as snapshots/epoch_NNN-<protocol>.json)."""
    run = Path(run)
    snapshots = sorted((run / "snapshots").glob("epoch_*.pt"))[::-1][::every][::-1]
    if not snapshots:
        raise UserError(f"{run} has no snapshots/epoch_*.pt: train it with --snapshot-every K (the qdm preset does)")
    config = json.loads((run / "config.json").read_text())
    with open(run / "epochs.csv") as f:
        epochs = {int(r["epoch"]): r for r in csv.DictReader(f)}
    seconds, elapsed = {}, 0.0
    for e in sorted(epochs):
        steps_in_epoch = int(epochs[e]["step"]) - (int(epochs[e - 1]["step"]) if e - 1 in epochs else 0)
        elapsed += float(epochs[e]["seconds_per_step"]) * steps_in_epoch
        seconds[e] = elapsed
    rows = []
    for snap in snapshots:
        cached = snap.with_name(f"{snap.stem}-{_protocol_name(proto)}.json")
        if cached.exists():
            result = json.loads(cached.read_text())
        else:
            fid_model = fid_model or inception_once(device)
            result, _, _ = evaluate_checkpoint(snap, proto, fid_model, device, data_dir)
            write_json(cached, result)
        state = load_checkpoint(snap)
        rows.append({"run": str(run), "preset": config["preset"], "model": config["model"], "dataset": config["dataset"],
                     "digit": "all" if config["classes"] is None else "-".join(map(str, config["classes"])),
                     "seed": config["seed"], "epoch": state["epoch"], "step": state["step"],
                     "train_seconds": seconds.get(state["epoch"]), "device": config.get("device_used"),
                     **{k: result[k] for k in ("FID", "KID", "SSIM", "SSIM_nearest", "sample_seconds")},
                     "sampler": f"{proto['sampler']}-{proto['steps']}", "n": proto["n"]})
    return rows


def plot_curves(rows: list[dict], floors: dict, path: Path) -> None:
    """FID (log scale) against training steps, a colour per run, a line style per sampler (and N);
    dashed black: each digit's real-vs-real floor."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    runs = list(dict.fromkeys(r["run"] for r in rows))
    protocols = list(dict.fromkeys((r["sampler"], r["n"]) for r in rows))
    for run, proto in dict.fromkeys((r["run"], (r["sampler"], r["n"])) for r in rows):
        mine = [r for r in rows if r["run"] == run and (r["sampler"], r["n"]) == proto]
        r0 = mine[0]
        ax.plot([r["step"] for r in mine], [r["FID"] for r in mine], ["o-", "s--", "^:"][protocols.index(proto) % 3],
                color=f"C{runs.index(run)}", label=f"{r0['preset']} {r0['model']} digit {r0['digit']} seed {r0['seed']}, "
                f"{max(r['step'] for r in rows if r['run'] == run):,} steps ({r0['sampler']}, N = {r0['n']})")
    for k, (digit, fid) in enumerate(floors.items()):
        ax.axhline(fid, ls="--", color="k", lw=1, label="real-vs-real floor" if k == 0 else None)
        ax.text(ax.get_xlim()[0], fid, f" digit {digit}", va="bottom", fontsize=7)
    ax.set(xlabel="training steps", ylabel="FID", yscale="log", title="Learning curves")
    ax.legend(fontsize=6.5)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def score_run(run, *, proto: dict, device, data_dir, every: int, fid_model=None) -> list[dict] | None:
    """``learning_curve`` of one run under its lease (None when another process is scoring it)."""
    device = resolve_device(str(device))          # by name from a submitit job or worker process
    with cell_lock(Path(run) / "snapshots" / f".curve-{_protocol_name(proto)}.lock") as mine:
        if not mine:
            return None
        return learning_curve(Path(run), proto, fid_model or inception_once(device), device, data_dir, every)


def write_curves(runs: list, proto: dict, out_dir, device="auto", data_dir=None, floors_dir="runs/curves",
                 every: int = 1, jobs: int = 1, executor: str = "local", cluster: str | None = None,
                 slurm: dict | None = None) -> Path | None:
    """Score every snapshot (every ``every`` epochs) of every run, a run a cell of qdm.experiments.grid;
    write learning_curves.csv and .png in ``out_dir`` (None with the commands executor)."""
    check_executor(executor, jobs)
    asked = device                                        # the printed commands pass on what was asked
    device, cells_device = grid_devices(asked, executor, jobs)
    runs = [str(r) for r in runs]
    recorded_curves(Path(out_dir) / "learning_curves.csv", set())     # a file of another kind fails before any work
    if executor == "commands":
        run_grid(runs, None, None, executor="commands", command=lambda run: (
            f"python -m qdm curve {run} --every {every} {cell_flags(proto, asked, data_dir)} --out {out_dir}"))
        return None
    here = runs_here(jobs, executor)
    fid_model = inception_once(device)
    scored = {}
    run_grid(runs, partial(score_run, proto=proto, device=cells_device, data_dir=data_dir,
                           every=every, fid_model=fid_model if here else None),
             lambda run, rows: scored.__setitem__(run, rows), jobs=jobs, executor=executor,
             folder=Path(floors_dir) / "submitit", cluster=cluster, slurm=slurm, label="curve", progress=False)
    rows = [row for run in runs if run in scored for row in scored[run]]
    floors = {}   # one class or all classes: the real-vs-real floor at this N
    for dataset, digit in dict.fromkeys((r["dataset"], r["digit"]) for r in rows):
        if digit == "all" or digit.isdigit():
            cls = None if digit == "all" else int(digit)
            floors[digit] = reference_rows(Path(floors_dir), dataset, cls, proto, fid_model, device,
                                           data_dir)["real-vs-real"]["FID"]
    rows = [{**r, "floor_FID": floors.get(r["digit"])} for r in rows]
    out_dir = Path(out_dir)
    path = out_dir / "learning_curves.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    with ledger_lock(path):
        rows = recorded_curves(path, {(r["run"], r["sampler"], r["n"]) for r in rows}) + rows
        write_text(path, csv_text(rows))
        plot_curves(rows, {r["digit"]: r["floor_FID"] for r in rows if r["floor_FID"] is not None},
                    out_dir / "learning_curves.png")
    return path


def recorded_curves(path: Path, scored: set) -> list[dict]:
    """The rows of ``path`` whose (run, sampler, N) is not in ``scored``: other runs' curves (or other
    protocols'), as they were written."""
    if not path.exists():
        return []
    with open(path) as f:
        reader = csv.DictReader(f)
        missing = [k for k in ("run", "digit", "sampler", "n") if k not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} is not a learning-curves file written by qdm (no {', '.join(missing)} column): "
                            "move it away or choose another --out")
        kept = [{**{k: parse_value(v) for k, v in r.items()}, "digit": r["digit"]} for r in reader]
    return [r for r in kept if (r["run"], r["sampler"], r["n"]) not in scored]
