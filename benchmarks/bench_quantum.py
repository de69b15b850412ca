"""Speed of the quantum layer (issue 4), measured in one run on this machine.

Times, for a batch of 64 MNIST-shaped images (random data), one training step (the diffusion
eps-MSE loss, backward, Adam step) of the classical U-Net and of the quantum model for each
backend and ansatz, and the circuit alone (forward + backward on (64, 16) inputs) with the
exact simulator and PennyLane default.qubit backprop. Prints a Markdown table with each time's
ratio to the classical step and to PennyLane, and the issue's goals with pass/fail.

    .venv/bin/python benchmarks/bench_quantum.py [--quick] [--out results/bench_quantum.md]
"""
import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from qdm.diffusion import Diffusion
from qdm.quantum import circuit_outputs, weight_shape
from qdm.schedule import make_schedule
from qdm.train import build_model, make_config

BATCH, QUBITS, LAYERS = 64, 16, 3
ANSATZE = ("paper", "ry", "rz_ry")
# (kind, ansatz) -> the goal of the issue: at most this many classical steps, or at least this
# many times faster than PennyLane default.qubit backprop
MAX_X_CLASSICAL = {("model", "paper"): 1.1, ("model", "ry"): 2.0, ("model", "rz_ry"): 4.0}
MIN_X_FASTER_THAN_PENNYLANE = {("circuit", "ry"): 50.0, ("circuit", "rz_ry"): 50.0}


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def model_step(model: str, quantum: dict | None = None):
    """One training step of the full model on a fixed random batch."""
    torch.manual_seed(0)
    net = build_model(make_config("paper", model=model, quantum=quantum or {}))
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    diffusion = Diffusion(make_schedule("cosine", 1000))
    x0 = torch.rand(BATCH, 1, 28, 28) * 2 - 1
    gen = torch.Generator().manual_seed(0)

    def step():
        loss = diffusion.loss(net, x0, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def circuit_step(ansatz: str, backend: str):
    """Forward + backward of the circuit alone (gradients w.r.t. inputs and weights)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(BATCH, QUBITS, generator=g) * 2 - 1).requires_grad_()
    w = (torch.rand(weight_shape(ansatz, QUBITS, LAYERS), generator=g) * 6.28).requires_grad_()
    v = torch.randn(BATCH, QUBITS, generator=g)

    def step():
        x.grad = w.grad = None
        (circuit_outputs(x, w, ansatz, backend) * v).sum().backward()
    return step


def run(quick: bool) -> list[dict]:
    """The fast cases (classical, exact) are timed in interleaved rounds, one step of each per
    round, and reported as medians: drift of the machine's speed then hits all of them alike.
    PennyLane last, alone: its huge allocations would slow the fast cases timed after it."""
    rounds = 7 if quick else 21
    pl_ansatze = ("paper",) if quick else ANSATZE
    fast = {("model", "-", "classical"): model_step("classical")}
    for kind in ("model", "circuit"):
        for a in ANSATZE:
            fast[(kind, "exact", a)] = (model_step("quantum", dict(backend="exact", ansatz=a, n_qubits=QUBITS,
                                                                   n_layers=LAYERS))
                                        if kind == "model" else circuit_step(a, "exact"))
    times = {key: [] for key in fast}
    for step in fast.values():                  # warm-up: first calls allocate and plan
        step(), step()
    for _ in range(rounds):
        for key, step in fast.items():
            times[key].append(median_seconds(step, 1, warmup=0))
    rows = [dict(kind=k, backend=b, ansatz=a, s=statistics.median(t)) for (k, b, a), t in times.items()]
    for r in rows:
        print(f"  {r['kind']:7s} {r['backend']:9s} {r['ansatz']:9s} {r['s']:8.4f} s", flush=True)
    for kind in ("model", "circuit"):
        for ansatz in pl_ansatze:               # ~25 s a step: one warm-up (full run), one timed step
            step = (model_step("quantum", dict(backend="pennylane", ansatz=ansatz, n_qubits=QUBITS, n_layers=LAYERS))
                    if kind == "model" else circuit_step(ansatz, "pennylane"))
            s = median_seconds(step, 1, warmup=0 if quick else 1)
            rows.append(dict(kind=kind, backend="pennylane", ansatz=ansatz, s=s))
            print(f"  {kind:7s} pennylane {ansatz:9s} {s:8.3f} s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    classical = rows[0]["s"]
    pennylane = {(r["kind"], r["ansatz"]): r["s"] for r in rows if r["backend"] == "pennylane"}
    lines = ["| step (batch 64) | backend | ansatz | seconds (median) | x classical step | PennyLane backprop / this "
             "| goal | pass |", "|---|---|---|---:|---:|---:|---|---|"]
    order = {"model": 0, "circuit": 1}
    for r in sorted(rows, key=lambda r: order[r["kind"]]):      # stable: classical, exact, pennylane
        key = (r["kind"], r["ansatz"])
        ref = pennylane.get(key, pennylane.get((r["kind"], "paper")))
        star = "" if key in pennylane or ref is None or r["ansatz"] == "classical" else "*"
        vs_pl = f"{ref / r['s']:.1f}{star}" if ref and r["backend"] != "pennylane" else "-"
        goal, ok = "", ""
        if r["backend"] == "exact" and key in MAX_X_CLASSICAL:
            goal, ok = f"<= {MAX_X_CLASSICAL[key]}x classical", r["s"] / classical <= MAX_X_CLASSICAL[key]
        if r["backend"] == "exact" and key in MIN_X_FASTER_THAN_PENNYLANE and ref:
            goal = f">= {MIN_X_FASTER_THAN_PENNYLANE[key]:.0f}x faster than PennyLane"
            ok = ref / r["s"] >= MIN_X_FASTER_THAN_PENNYLANE[key]
        what = "full model train step" if r["kind"] == "model" else "circuit alone, fwd+bwd"
        lines.append(f"| {what} | {r['backend']} | {r['ansatz']} | {r['s']:.4f} | {r['s'] / classical:.2f} "
                     f"| {vs_pl} | {goal} | {'' if ok == '' else ('pass' if ok else 'FAIL')} |")
    if any("*" in line for line in lines):
        lines.append("\n\\* against PennyLane with the paper ansatz (this ansatz was not timed on PennyLane: --quick)")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="PennyLane only for the paper ansatz, fewer repeats")
    p.add_argument("--out", help="also write the Markdown report to this file")
    a = p.parse_args()
    load_before = os.getloadavg()
    header = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads; "
              f"load average before {', '.join(f'{v:.2f}' for v in load_before)}")
    print(header, flush=True)
    t0 = time.perf_counter()
    rows = run(a.quick)
    report = (f"{header}; after {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
              f"{'quick' if a.quick else 'full'} run of {time.perf_counter() - t0:.0f} s\n\n{table(rows)}\n")
    print("\n" + report)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(report)


if __name__ == "__main__":
    main()
