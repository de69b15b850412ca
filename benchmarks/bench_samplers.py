"""FID against the number of network evaluations, per sampler, on trained models of both presets.

The tables keep DDPM-1000 unless a faster sampler scores within the spread of three DDPM-1000
sampling seeds on both presets (`paper`, `qdm`) and both digits (0, 1). This study measures that:
for each model (the classical seed-0 cell of Table I, trained here if absent), N = 1000 images per
(sampler, evaluations, sampling seed), scored like a table cell (qdm.reproduce.score: FID, KID,
SSIM against all test images of the digit). Sampling runs in bfloat16 (qdm.inference), whose
effect is held to the same rule: bf16 DDPM-1000's mean over three seeds must lie within the range
of three fp32 seeds (the same noise seed by seed; fp32 seed 0 is Table I's cell where this run
folder holds that cell's training).

Two diagnostics on the first model separate "few steps" from "no noise": DDIM with 1000 steps
(eta = 0, deterministic, as many evaluations as DDPM) and DDIM-100 with eta = 1 (fresh noise).

Each evaluation is cached as JSON in the model's run folder and recorded in results/samplers.csv,
so a rerun (or a fresh clone, from the CSV) continues where the last stopped; results/samplers.md
and samplers.png are rewritten after every evaluation.

    .venv/bin/python benchmarks/bench_samplers.py            # everything, resumable
    .venv/bin/python benchmarks/bench_samplers.py --models qdm:0 --seeds 0
"""
import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from qdm.checkpoint import atomic_write, csv_text, write_json, write_text
from qdm.data import DATASETS
from qdm.inference import for_sampling, worth_compiling
from qdm.experiments.ledger import recorded_cells
from qdm.experiments.protocol import column, protocol
from qdm.experiments.scoring import BATCH, generate, inception_once
from qdm.locks import cell_lock
from qdm.reproduce import cell_key, real_set, reference_rows, score, table_name, train_cell
from qdm.train import make_diffusion, model_from_checkpoint

MODELS = [("qdm", 0), ("paper", 0), ("qdm", 1), ("paper", 1)]
REFERENCE = ("ddpm", 1000)
CANDIDATES = [("dpmpp_2m", 10), ("dpmpp_2m", 20), ("dpmpp_2m", 50), ("dpmpp_2m_sde", 20), ("dpmpp_2m_sde", 50),
              ("dpmpp_2m_sde", 100), ("ddpm_respaced", 50), ("ddpm_respaced", 100), ("ddpm_respaced", 250),
              ("ddim", 50), ("ddim", 100)]
DIAGNOSTICS = [("ddim", 1000), ("ddim_eta1", 100)]      # first model only
KEY = ("preset", "digit", "sampler", "steps", "precision", "seed")


def evaluations(sampler: str, steps: int) -> int:
    return 1000 if sampler == "ddpm" else steps


def sample(run: Path, preset: str, sampler: str, steps: int, precision: str, n: int, seed: int):
    """n images from the run's EMA weights and the seconds spent sampling them. Every sampler but
    the eta = 1 diagnostic goes through qdm.experiments.scoring.generate with its batches kept in the
    run folder: a stopped study resumes in the middle of a sampling, and a Table I cell of the same
    protocol (this classical seed-0 model, this sampling seed) reuses the images instead of sampling
    them again."""
    if sampler != "ddim_eta1":
        proto = protocol(preset, n=n, sampler=sampler, steps=steps, seed=seed, precision=precision)
        images, _, seconds = generate(run / "best.pt", proto, keep=run)
        return images, seconds
    model, cfg = model_from_checkpoint(run / "best.pt")
    diffusion = make_diffusion(cfg)
    eps = for_sampling(model, precision, worth_compiling(steps * n, precision))
    t0, images = time.perf_counter(), []
    with torch.inference_mode():
        for i, b in enumerate(torch.arange(n).split(BATCH)):   # batches seeded as generate's
            g = torch.Generator().manual_seed(seed + i)
            images.append(diffusion.sample_ddim(eps, (len(b), DATASETS[cfg.dataset][0], 28, 28), steps, 1.0, g))
    return torch.cat(images), time.perf_counter() - t0


def table_twin(results: Path, run: Path, preset: str, digit: int, n: int) -> dict | None:
    """fp32 DDPM-1000 at sampling seed 0 is exactly what Table I's classical seed-0 cell measured
    (same noise: qdm.experiments.scoring.generate), if the cell was scored from this run folder's
    training: its row then, when the training's recorded wall time is the cell's. A folder trained
    again (a lost runs/) holds the same model only if the code and the machine are the same
    (training is deterministic: qdm 0 trained again scored its cell's FID to 1e-6; paper 0, first
    trained by older code, did not), so its seed 0 is measured here."""
    summary = run / "summary.json"
    if not summary.exists():
        return None
    proto = protocol(preset)
    if (proto["sampler"], proto["steps"], proto["n"], proto.get("precision", "fp32")) != (*REFERENCE, n, "fp32"):
        return None
    cells, _ = recorded_cells(results / f"{table_name('table1', preset)}_cells.csv", preset, proto, cell_key)
    cell = cells.get(("classical", column(digit), 0))
    if cell is None or cell["train_seconds"] != json.loads(summary.read_text())["train_seconds"]:
        return None
    return {"preset": preset, "digit": digit, "sampler": REFERENCE[0], "steps": REFERENCE[1], "precision": "fp32",
            "seed": 0, "evaluations": 1000, "n": n, **{k: cell[k] for k in ("FID", "KID", "KID_std", "SSIM",
                                                                            "SSIM_nearest", "sample_seconds")},
            "threads": 2}


def evaluate(run: Path, preset: str, digit: int, sampler: str, steps: int, precision: str, seed: int, n: int,
             fid_model) -> dict:
    path = run / f"sampler-{sampler}{steps}-{precision}-n{n}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    images, seconds = sample(run, preset, sampler, steps, precision, n, seed)
    real, real_f = real_set("mnist", digit, {"n_real": None}, fid_model, "cpu")
    row = {"preset": preset, "digit": digit, "sampler": sampler, "steps": steps, "precision": precision,
           "seed": seed, "evaluations": evaluations(sampler, steps), "n": n,
           **score(images, real, real_f, fid_model, "cpu"), "sample_seconds": seconds,
           "threads": torch.get_num_threads()}
    write_json(path, row)
    return row


def read_rows(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path) as f:
        rows = [{k: (v if k in ("preset", "sampler", "precision") else float(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]
    for r in rows:
        for k in ("digit", "steps", "seed", "evaluations", "n", "threads"):
            r[k] = int(r[k])
    return {tuple(r[k] for k in KEY): r for r in rows}


def spread(values):
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"))


FOLLOW_UP_SDS = 3      # a candidate's first seed this many DDPM-1000 seed s.d. outside their range: no more seeds


def out_of_reach(rows: dict, preset: str, digit: int, sampler: str, steps: int, first_seed: int) -> float | None:
    """How far (in s.d. of bf16 DDPM-1000's seeds) the candidate's first seed lies outside DDPM-1000's
    range, when that is more than FOLLOW_UP_SDS; else None. A first seed g s.d. past the range's
    edge leaves the mean of three outside unless the other two seeds average g/2 s.d. inside that
    edge, 1.5 g from the first: its other seeds are not sampled (the study's most expensive part)."""
    ref = [r["FID"] for (p, d, sa, st, pr, _), r in rows.items() if (p, d, sa, st, pr) == (preset, digit, *REFERENCE,
                                                                                            "bf16")]
    first = rows.get((preset, digit, sampler, steps, "bf16", first_seed))
    if len(ref) < 3 or first is None:
        return None
    sd = float(np.std(ref, ddof=1))
    if sd == 0:
        return None
    gap = max(min(ref) - first["FID"], first["FID"] - max(ref)) / sd
    return gap if gap > FOLLOW_UP_SDS else None


def rule_status(per_model: dict) -> str:
    """The rule's verdict from {(preset, digit): within?}: passes on every model of MODELS, fails on
    any, or not measured on every model yet; with the models so far."""
    status = ("passes" if len(per_model) == len(MODELS) and all(per_model.values())
              else "fails" if not all(per_model.values()) else "not measured on every model yet")
    shown = ", ".join(f"{p} {d}: {'yes' if ok else 'no'}" for (p, d), ok in sorted(per_model.items()))
    return status + (f" ({shown})" if shown else "")


def ddim_diagnosis(rows: dict) -> list[str]:
    """Why DDIM-100 scores worse than DDPM-1000: its few steps, or its missing noise? The first
    model's DDIM with 1000 steps (eta = 0, the same number of steps as DDPM) and DDIM-100 with
    eta = 1 (as much noise as DDPM) against DDIM-100 and DDPM-1000, all from the same starting noise."""
    preset, digit = MODELS[0]
    fid = {(sa, st): r["FID"] for (p, d, sa, st, pr, seed), r in rows.items()
           if (p, d, pr, seed) == (preset, digit, "bf16", 0)}
    need = [(*REFERENCE,), ("ddim", 100), ("ddim", 1000), ("ddim_eta1", 100)]
    if not all(k in fid for k in need):
        return []
    ddpm, ddim100, ddim1000, eta1 = (fid[k] for k in need)
    by_steps, by_noise = ddim100 - ddim1000, ddim100 - eta1
    cause = "the missing noise, not the few steps" if by_noise > by_steps else "the few steps more than the noise"
    return [f"## DDIM: few steps or no noise? (`{preset}` recipe, digit {digit}, seed 0)", "",
            f"From the same starting noise: DDPM-1000 {ddpm:.2f}; DDIM-100 (eta = 0) {ddim100:.2f}; DDIM with all "
            f"1000 steps (eta = 0) {ddim1000:.2f}; DDIM-100 with eta = 1 (fresh noise at each step, as DDPM) "
            f"{eta1:.2f}. Of DDIM-100's gap of {ddim100 - ddpm:+.2f} to DDPM-1000, taking all 1000 steps closes "
            f"{by_steps:.2f} and putting the noise back at 100 steps closes {by_noise:.2f}: the gap is {cause}. "
            "A deterministic (probability-flow) sampler carries the network's errors along its whole path; "
            "the fresh noise of a stochastic one lets later steps correct earlier ones (Karras et al. 2022, "
            "section 4).", ""]


def summarize(rows: dict, floors: dict) -> tuple[str, list]:
    """The Markdown report and, per model, the curves (for the figure)."""
    lines = ["# Samplers: FID against network evaluations", "",
             "`benchmarks/bench_samplers.py`. Per model (Table I's classical seed-0 cell of each preset), N = 1000 "
             "images per sampling seed against all test images of the digit; sampling in bfloat16 "
             "(`qdm.inference`) unless the row says fp32. FID mean ± std over the sampling seeds (n). "
             "*Within*: the mean lies inside the range (min to max) of bf16 DDPM-1000's three seeds, the rule "
             "for the tables' sampler, here judging the sampler alone (all in bf16; bf16 itself is judged "
             "against fp32 below each table). A candidate whose first seed lies more than "
             f"{FOLLOW_UP_SDS} standard deviations of those three seeds outside their range is not sampled at "
             "other seeds (its mean of three could land inside only if the other two averaged 1.5 times that "
             "distance on the other side of the first): *no*, with the distance. Seconds: sampling 1000 images "
             "as measured in this study ("
             f"{' or '.join(str(t) for t in sorted({r['threads'] for r in rows.values()}))} CPU threads, a "
             "machine shared with other work, so a rough guide; `results/bench_cell.md` has timings from one run).",
             ""]
    verdict, curves, precision_verdict = {}, [], {}
    for preset, digit in sorted({(r["preset"], r["digit"]) for r in rows.values()}, key=lambda m: MODELS.index(m)
                                if m in MODELS else 99):
        mine = [r for r in rows.values() if r["preset"] == preset and r["digit"] == digit]
        groups = {}
        for r in mine:
            groups.setdefault((r["sampler"], r["steps"], r["precision"]), []).append(r)
        ref = [r["FID"] for r in groups.get((*REFERENCE, "bf16"), [])]
        lo, hi = (min(ref), max(ref)) if len(ref) >= 3 else (None, None)
        lines += [f"## `{preset}` recipe, digit {digit} (real-vs-real floor {floors.get(digit, float('nan')):.2f})", "",
                  "| sampler | evaluations | precision | FID | KID | n | s / 1000 images | within |",
                  "|---|---:|---|---:|---:|---:|---:|---|"]
        for (sampler, steps, precision), g in sorted(groups.items(), key=lambda kv: (kv[0][0] != "ddpm", kv[0][0],
                                                                                     kv[0][1], kv[0][2])):
            fid, fid_sd = spread([r["FID"] for r in g])
            kid = np.mean([r["KID"] for r in g])
            secs = np.mean([r["sample_seconds"] * 1000 / r["n"] for r in g])
            within, judged = "", lo is not None and precision == "bf16" and (sampler, steps) != REFERENCE
            if judged and len(g) >= 3:
                within = "yes" if lo <= fid <= hi else "no"
            elif judged and len(g) == 1 and (gap := out_of_reach(rows, preset, digit, sampler, steps, g[0]["seed"])):
                within = f"no (seed {g[0]['seed']}: {gap:.1f} s.d. outside)"
            if within:
                verdict.setdefault((sampler, steps), {})[(preset, digit)] = within == "yes"
            lines.append(f"| {sampler} | {evaluations(sampler, steps)} | {precision} | {fid:.2f}"
                         + (f" ± {fid_sd:.2f}" if len(g) > 1 else "") + " | "
                         + f"{kid:.4f} | {len(g)} | {secs:.0f} | {within} |")
            if precision == "bf16":
                curves.append({"preset": preset, "digit": digit, "sampler": sampler, "evaluations":
                               evaluations(sampler, steps), "FID": fid, "sd": fid_sd, "lo": lo, "hi": hi})
        f32 = {r["seed"]: r["FID"] for r in groups.get((*REFERENCE, "fp32"), [])}
        b16 = {r["seed"]: r["FID"] for r in groups.get((*REFERENCE, "bf16"), [])}
        pairs = sorted(set(f32) & set(b16))
        if pairs:
            lines += ["", "bfloat16 against fp32, DDPM-1000 from the same noise: "
                      + "; ".join(f"seed {s}: {b16[s]:.2f} against {f32[s]:.2f} ({b16[s] - f32[s]:+.2f})" for s in pairs)
                      + "."]
        if len(f32) >= 3 and len(b16) >= 3:
            ok = min(f32.values()) <= np.mean(list(b16.values())) <= max(f32.values())
            precision_verdict[(preset, digit)] = ok
            lines.append(f"bf16's mean {np.mean(list(b16.values())):.2f} against fp32's range "
                         f"{min(f32.values()):.2f}-{max(f32.values()):.2f}: {'within' if ok else 'outside'}.")
        lines.append("")
    lines += ddim_diagnosis(rows)
    models = sorted({(r["preset"], r["digit"]) for r in rows.values()})
    lines += ["## The rule", "", "A sampler replaces DDPM-1000 in the tables only if it is *within* on every model "
              f"of {', '.join(f'{p} {d}' for p, d in MODELS)}, each with three seeds.", ""]
    for (sampler, steps), per_model in sorted(verdict.items()):
        lines.append(f"- {sampler}-{steps}: {rule_status(per_model)}")
    if not verdict:
        lines.append(f"- no sampler has three seeds on any model yet (models so far: {models})")
    lines += ["", "bf16 sampling replaces fp32 only if bf16 DDPM-1000's mean lies within the range of three fp32 "
              "DDPM-1000 seeds on every model:", ""]
    lines.append(f"- bf16 DDPM-1000: {rule_status(precision_verdict)}")
    return "\n".join(lines) + "\n", curves


def plot(curves: list, floors: dict, path: Path) -> None:
    from matplotlib.figure import Figure
    models = [m for m in MODELS if any((c["preset"], c["digit"]) == m for c in curves)]
    if not models:
        return
    fig = Figure(figsize=(4.2 * len(models), 3.6))
    axes = fig.subplots(1, len(models), squeeze=False)
    samplers = sorted({c["sampler"] for c in curves if c["sampler"] != "ddpm"})    # one colour each, every panel
    for ax, (preset, digit) in zip(axes[0], models):
        mine = [c for c in curves if (c["preset"], c["digit"]) == (preset, digit)]
        for sampler in sorted({c["sampler"] for c in mine if c["sampler"] != "ddpm"}):
            pts = sorted((c["evaluations"], c["FID"], c["sd"]) for c in mine if c["sampler"] == sampler)
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=np.nan_to_num(e), marker="o", ms=3, capsize=2, label=sampler,
                        color=f"C{samplers.index(sampler)}")
        ref = [c for c in mine if c["sampler"] == "ddpm"]
        for c in ref:
            ax.errorbar([c["evaluations"]], [c["FID"]], yerr=[np.nan_to_num(c["sd"])], marker="s", color="k",
                        capsize=2, label="DDPM-1000 (mean of its seeds)")
        if ref and ref[0]["lo"] is not None:
            ax.axhspan(ref[0]["lo"], ref[0]["hi"], color="k", alpha=0.15, label="DDPM-1000 (3 seeds, range)")
        if digit in floors:
            ax.axhline(floors[digit], color="k", ls=":", label="real-vs-real floor")
        ax.set(xscale="log", yscale="log", xlabel="network evaluations", ylabel="FID (N = 1000)",
               title=f"{preset} recipe, digit {digit}")
    legend = {}                                  # one legend under the panels: it hides no point
    for ax in axes[0]:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def plan(models, seeds):
    """(preset, digit, sampler, steps, precision, seed) in the order they run, most useful first:
    per model three bf16 DDPM-1000 seeds (the line every bf16 candidate is judged against), then
    the diagnostics on the first model and every candidate at the first seed (the curve against
    evaluations), then per model three fp32 DDPM-1000 seeds (the rule for bf16 itself), then the
    candidates at the other seeds (main skips those out of reach after their first)."""
    def reference(precision):
        return [(preset, digit, *REFERENCE, precision, seed) for preset, digit in models for seed in seeds]

    def candidates(seed):
        return [(preset, digit, sampler, steps, "bf16", seed) for preset, digit in models
                for sampler, steps in CANDIDATES]
    yield from reference("bf16")
    yield from [(*models[0], sampler, steps, "bf16", seeds[0]) for sampler, steps in DIAGNOSTICS]
    yield from candidates(seeds[0])
    yield from reference("fp32")
    for seed in seeds[1:]:
        yield from candidates(seed)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(f"{p}:{d}" for p, d in MODELS), help="preset:digit,... ")
    p.add_argument("--seeds", default="0,1,2", help="sampling seeds (default 0,1,2)")
    p.add_argument("--n", type=int, default=1000, help="images per evaluation (default 1000)")
    p.add_argument("--runs-dir", default="runs/reproduce", help="where the Table I cells' run folders are")
    p.add_argument("--out", default="results", help="folder for samplers.md, .csv, .png")
    p.add_argument("--report", action="store_true", help="only rewrite samplers.md and .png from samplers.csv")
    a = p.parse_args()
    models = [(m.split(":")[0], int(m.split(":")[1])) for m in a.models.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    rows = read_rows(out / "samplers.csv")
    fid_model = inception_once("cpu")              # compiled for whole batches: the study scores ~100 sets
    floors = {digit: reference_rows(Path(a.runs_dir), "mnist", digit, {"n": a.n, "n_real": None}, fid_model,
                                    "cpu")["real-vs-real"]["FID"] for preset, digit in models}   # cached after the first
    if a.report:
        text, curves = summarize(rows, floors)
        write_text(out / "samplers.md", text)
        plot(curves, floors, out / "samplers.png")
        return
    for preset, digit, sampler, steps, precision, seed in plan(models, seeds):
        key = (preset, digit, sampler, steps, precision, seed)
        if key in rows or seed != seeds[0] and out_of_reach(rows, preset, digit, sampler, steps, seeds[0]):
            continue
        run = Path(a.runs_dir) / preset / f"mnist-{digit}-classical-seed0"
        with cell_lock(run.parent / "locks" / f"{run.name}.lock") as mine:     # the lease a Table I grid takes
            if not mine:
                print(f"{key}: {run} is in use by another process (a Table I grid?); left for the next run", flush=True)
                continue
            twin = table_twin(out, run, preset, digit, a.n) \
                if (sampler, steps, precision, seed) == (*REFERENCE, "fp32", 0) else None
            if twin is None:
                train_cell(run, preset, "mnist", digit, "classical", 0, "cpu", progress=False)
            rows[key] = twin or evaluate(run, preset, digit, sampler, steps, precision, seed, a.n, fid_model)
        print(f"{key}: FID {rows[key]['FID']:.2f} ({rows[key]['sample_seconds']:.0f} s sampling)", flush=True)
        write_text(out / "samplers.csv", csv_text([{k: v for k, v in r.items() if k != "protocol"}
                                                    for r in rows.values()]))
        text, curves = summarize(rows, floors)
        write_text(out / "samplers.md", text)
        plot(curves, floors, out / "samplers.png")
    print(summarize(rows, floors)[0])


if __name__ == "__main__":
    main()
