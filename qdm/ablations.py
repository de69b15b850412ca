"""Ablations for the paper's question "is it the quantum circuit that helps?" (issue 9).

Every gate of ``GATES`` sits at the same place of the same U-Net (the bottleneck, Eq. 8). Each
(digit, gate, seed) cell is trained with the same preset and evaluated with the same protocol
through qdm.reproduce.run_cell (resumable: a finished cell is reused, an unfinished one resumes).
After every cell, ``ablations.md`` and ``ablations.csv`` are rewritten: per digit, a row per gate
with its trainable gate parameters, FID, KID and SSIM as mean ± std over seeds and the training
step time, and the real-vs-real floor; ``ablations_cells.csv`` holds every cell's numbers.
"""
from pathlib import Path

import numpy as np

from qdm import metrics
from qdm.checkpoint import csv_text, write_text
from qdm.data import check_dataset
from qdm.errors import UserError
from qdm.gates import gate_parameters, inert_parameters
from qdm.reproduce import mean_std, protocol, reference_rows, run_cell
from qdm.train import build_model, make_config, resolve_device

DATASET = "mnist"
GATES = {   # name -> (TrainConfig.model, TrainConfig.quantum, what it is)
    "classical": ("classical", {}, "no gate (identity)"),
    "quantum-paper-detached": ("quantum", {"ansatz": "paper", "detach_input": True},
                               "the paper's circuit (RZ + CNOT chain), input detached as in the official code "
                               "(Table I's quantum model)"),
    "quantum-paper": ("quantum", {"ansatz": "paper", "detach_input": False},
                      "the paper's circuit, the Linear in front of it trained"),
    "quantum-rz_ry": ("quantum", {"ansatz": "rz_ry"}, "RZ + RY circuit (the official repository's later fix)"),
    "quantum-ry": ("quantum", {"ansatz": "ry"}, "RY circuit (real amplitudes)"),
    "cosine": ("cosine", {}, "product of cosines over the parity sets: the paper circuit's function, plain torch"),
    "mlp": ("mlp", {}, "a 16 -> 2 -> 16 tanh MLP in place of the circuit"),
    "se": ("se", {}, "squeeze-and-excitation: relu in place of the circuit, sigmoid on the channel weights"),
}
METRICS = ("FID", "KID", "SSIM")


def gate_counts(gate: str, preset: str = "paper") -> tuple[int, int]:
    """(trainable gate parameters, of which inert) of a gate, counted on the model that trains."""
    model, quantum, _ = GATES[gate]
    unet = build_model(make_config(preset, model=model, quantum=quantum))
    return gate_parameters(unet), inert_parameters(unet)


def _fmt(mean, std, metric):
    if mean is None:
        return "—"
    f = (lambda x: f"{x:.4f}") if metric in ("KID", "SSIM") else (lambda x: f"{x:.2f}")
    return f(mean) + (f" ± {f(std)}" if std is not None else "")


def summary_rows(cells: list[dict], floors: dict, gates: list, counts: dict) -> list[dict]:
    """One row per (digit, gate) with mean and std over seeds, then the digit's real-vs-real floor."""
    rows = []
    for cls in floors:
        for gate in gates:
            mine = [c for c in cells if c["gate"] == gate and c["cls"] == str(cls)]
            if not mine:
                continue
            row = {"digit": cls, "gate": gate, "gate_parameters": counts[gate][0], "inert_parameters": counts[gate][1]}
            for m in METRICS:
                row[m], row[f"{m}_seed_std"] = mean_std([c[m] for c in mine])
            row["ms_per_step"] = 1000 * mean_std([c["seconds_per_step"] for c in mine])[0]
            row["seeds"] = len(mine)
            rows.append(row)
        rows.append({"digit": cls, "gate": "real-vs-real", **{m: floors[cls][m] for m in METRICS}})
    return rows


def write_ablation_tables(cells: list[dict], floors: dict, gates: list, counts: dict, proto: dict,
                          preset: str, out_dir: Path) -> Path:
    """ablations.md, ablations.csv (``summary_rows``) and ablations_cells.csv (every cell)."""
    rows = summary_rows(cells, floors, gates, counts)
    md = [f"# Ablations: the gate at the U-Net's bottleneck (preset `{preset}`)", "",
          "Protocol: " + "; ".join(f"{k} = {v}" for k, v in proto.items()) + ".", "",
          "| Digit | Gate | Gate parameters | FID | KID | SSIM | ms/step | Seeds |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["gate"] == "real-vs-real":
            params, step, seeds = "—", "—", "—"
        else:
            params = f"{r['gate_parameters']}" + (f" ({r['inert_parameters']} inert)" if r["inert_parameters"] else "")
            step, seeds = f"{r['ms_per_step']:.0f}", str(r["seeds"])
        values = [_fmt(r[m], r.get(f"{m}_seed_std"), m) for m in METRICS]
        md.append(f"| {r['digit']} | {r['gate']} | {params} | " + " | ".join(values) + f" | {step} | {seeds} |")
    md += ["", "Mean over seeds, ± their standard deviation (with two seeds or more). Gate parameters: the "
           "gate's trainable parameters; inert ones cannot change its outputs (the paper circuit's RZ angles). "
           "ms/step: mean training step time (depends on the device and its load). real-vs-real: N training "
           "images of the digit against its test images, the floor at this N.", "", "Gates:"]
    md += [f"- `{g}`: {GATES[g][2]}" for g in gates]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "ablations.md", "\n".join(md) + "\n")
    write_text(out_dir / "ablations.csv", csv_text(rows))
    write_text(out_dir / "ablations_cells.csv", csv_text([{k: v for k, v in c.items() if k != "protocol"}
                                                          for c in cells]))
    return out_dir / "ablations.md"


def ablate(classes=(0, 1, 8), gates=None, seeds=(0, 1, 2), preset: str = "paper",
           proto: dict | None = None, runs_dir="runs/ablations", results_dir=None, device="auto",
           data_dir=None, progress=True) -> Path:
    """Train and evaluate every (digit, gate, seed) cell of MNIST (gates None: all of ``GATES``),
    resumably; returns the path of ablations.md. Results go to results/ for real presets and
    to <runs_dir>/<preset>/results for "fast"."""
    classes, gates, seeds = list(classes), list(gates or GATES), list(seeds)
    check_dataset(DATASET, classes)
    bad = [g for g in gates if g not in GATES]
    if bad:
        raise UserError(f"unknown gate {bad[0]!r}: choose from {', '.join(GATES)}")
    if not (classes and gates and seeds):
        raise UserError("give at least one digit, one gate and one seed")
    counts = {g: gate_counts(g, preset) for g in gates}      # an unknown preset fails here, before any work
    proto = proto or protocol(preset)
    device = resolve_device(device)
    fid_model = metrics.inception(device)
    root = Path(runs_dir) / preset
    results = Path(results_dir or ("results" if preset != "fast" else root / "results"))
    cells, floors, path = [], {}, None
    for cls in classes:
        floors[cls] = reference_rows(root, DATASET, cls, proto, fid_model, device, data_dir)["real-vs-real"]
        for gate in gates:
            model, quantum, _ = GATES[gate]
            for seed in seeds:
                name = f"{DATASET}-{cls}-{gate}-seed{seed}"
                if progress:
                    print(f"[ablate] cell {name}", flush=True)
                cell = run_cell(root / name, preset, DATASET, cls, model, seed, proto, fid_model, device,
                                data_dir, progress=progress, overrides={"quantum": quantum})
                cells.append({"gate": gate, **cell})
                path = write_ablation_tables(cells, floors, gates, counts, proto, preset, results)
    return path
