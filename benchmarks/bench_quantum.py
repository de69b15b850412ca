"""Speed of the quantum layer, measured in one run on this machine.

1. One training step (batch 64 random MNIST-shaped images: the diffusion eps-MSE loss,
   backward, Adam step) of the classical U-Net and of the quantum model (16 qubits, L = 3),
   exact backend: the paper ansatz (closed form), "ry" and "rz_ry" with the default simulator
   (the matrix product state, qdm.mps) and with the statevector.
2. The circuit alone at 16 qubits, L = 3, batch 64: forward, and forward + gradient w.r.t.
   inputs and weights. The MPS, the statevector, and the peers: PennyLane lightning.qubit
   (adjoint; its Jacobian comes with the forward) and default.qubit (backprop), and
   tensorcircuit-ng on JAX (jit, vmap over the batch) where it is installed. The PennyLane peers
   take a second or more per circuit through PennyLane's per-tape overhead, so they are timed on
   --peer-batch samples and scaled to 64 (PennyLane runs a batch as independent tapes: time is
   linear in the batch); tensorcircuit-ng on the full batch.
3. The MPS at 16, 32, 64, 128 qubits (no statevector fits 2^32 amplitudes per sample).

The fast cases are timed in interleaved rounds (random order in each) and reported as medians,
so that drift in the machine's speed (it is shared) hits them alike; ratios are within this run. Prints a Markdown
report with the goals and pass/fail.

    .venv/bin/python benchmarks/bench_quantum.py [--rounds 20] [--out results/bench_quantum.md]
    .venv/bin/python benchmarks/bench_quantum.py --crossover    # MPS vs statevector, per L
"""
import argparse
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from qdm.diffusion import Diffusion
from qdm.quantum import circuit_outputs, weight_shape
from qdm.schedule import make_schedule
from qdm.train import build_model, make_config

BATCH, QUBITS, LAYERS = 64, 16, 3
WIDTHS = (16, 32, 64, 128)
TRAINABLE = ("ry", "rz_ry")
GOAL_X_CLASSICAL = 1.1          # trainable-ansatz train step, at most this many classical steps
GOAL_X_PEER = 5.0               # circuit alone at 16 qubits: at least this many times the fastest peer
GOAL_SECONDS_128 = 1.0          # 128 qubits, forward + gradient
TC = "tensorcircuit-ng (JAX, jit)"


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


def circuit_step(ansatz: str, n: int = QUBITS, grad: bool = True, batch: int = BATCH,
                 dtype=torch.float32, layers: int = LAYERS, **kw):
    """The circuit alone on (batch, n) inputs: forward, or forward + backward (gradients w.r.t.
    inputs and weights). kw: circuit_outputs options (backend, simulator, pl_device, diff_method)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, n, generator=g, dtype=dtype) * 2 - 1).requires_grad_(grad)
    w = (torch.rand(weight_shape(ansatz, n, layers), generator=g, dtype=dtype) * 6.28).requires_grad_(grad)
    v = torch.randn(batch, n, generator=g, dtype=dtype)

    def step():
        if not grad:
            with torch.no_grad():
                return circuit_outputs(x, w, ansatz, **kw)
        x.grad = w.grad = None
        (circuit_outputs(x, w, ansatz, **kw) * v).sum().backward()
    return step


def interleaved(cases: dict, rounds: int) -> dict:
    """Seconds of each case in every round (one call of each per round, in a new random order
    each round so that no case always follows the same one), after two warm-up calls."""
    for step in cases.values():
        step(), step()
    times, order = {key: [] for key in cases}, list(cases)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for key in order:
            t0 = time.perf_counter()
            cases[key]()
            times[key].append(time.perf_counter() - t0)
    return times


def medians(times: dict) -> dict:
    return {key: statistics.median(t) for key, t in times.items()}


def once(step, warmup: bool = True) -> float:
    if warmup:
        step()
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def tensorcircuit_step(ansatz: str, grad: bool, batch: int = BATCH):
    """The circuit in tensorcircuit-ng on JAX (vmapped over the batch, jit-compiled, complex64):
    the statevector by tensor contraction, <Z_i> = |psi|^2 @ signs; forward, or the value and
    gradient w.r.t. inputs and weights. None if tensorcircuit-ng or JAX is not installed (both
    optional, benchmark-only: pip install -c requirements.txt tensorcircuit-ng jax jaxlib)."""
    try:
        import jax
        import numpy as np
        import tensorcircuit as tc
    except ImportError:
        return None
    K = tc.set_backend("jax")
    tc.set_dtype("complex64")
    y = np.arange(2 ** QUBITS)[:, None] >> (QUBITS - 1 - np.arange(QUBITS))
    signs = jax.numpy.asarray(1.0 - 2.0 * (y & 1), dtype="float32")     # Z_i on each basis state

    def one(x, w):
        c = tc.Circuit(QUBITS)
        for i in range(QUBITS):
            c.ry(i, theta=x[i])
        for layer in range(LAYERS):
            for i in range(QUBITS):
                if ansatz == "rz_ry":
                    c.rz(i, theta=w[layer, i, 0])
                c.ry(i, theta=w[layer, i, -1])
            for i in range(QUBITS - 1):
                c.cnot(i, i + 1)
        return (K.abs(c.state()) ** 2) @ signs

    outputs = K.vmap(one, vectorized_argnums=0)
    g = torch.Generator().manual_seed(0)     # the inputs as arguments: constants would be folded at compile time
    x = jax.numpy.asarray((torch.rand(batch, QUBITS, generator=g) * 2 - 1).numpy())
    w = jax.numpy.asarray((torch.rand(weight_shape(ansatz, QUBITS, LAYERS), generator=g) * 6.28).numpy())
    v = jax.numpy.asarray(torch.randn(batch, QUBITS, generator=g).numpy())
    if grad:
        fn = K.jit(K.value_and_grad(lambda x, w, v: K.sum(outputs(x, w) * v), argnums=(0, 1)))
    else:
        fn = K.jit(lambda x, w, v: outputs(x, w))
    return lambda: jax.block_until_ready(fn(x, w, v))


def run(rounds: int, peer_batch: int) -> dict:
    r = {"model": {}, "model_x": {}, "model_x_iqr": {}, "circuit": {}, "peers": {}, "widths": {}, "notes": []}
    # 1. train steps: the goal cases interleaved with the classical step, then the statevector
    # (whose big buffers would slow whatever runs after it) with the classical step again
    base = dict(n_qubits=QUBITS, n_layers=LAYERS)
    groups = [{("classical", "-", "-"): model_step("classical"),
               ("classical", "-", "(a second copy: the noise)"): model_step("classical"),
               ("quantum", "paper", "closed form"): model_step("quantum", dict(ansatz="paper", **base)),
               **{("quantum", a, "mps"): model_step("quantum", dict(ansatz=a, simulator="mps", **base))
                  for a in TRAINABLE}},
              {("classical", "-", "-"): model_step("classical"),
               **{("quantum", a, "statevector"): model_step("quantum", dict(ansatz=a, simulator="statevector", **base))
                  for a in TRAINABLE}}]
    for cases, n_rounds in zip(groups, (rounds, max(5, rounds // 3))):
        times = interleaved(cases, n_rounds)
        classical = times[("classical", "-", "-")]
        for key, t in times.items():
            ratios = [a / b for a, b in zip(t, classical)]
            r["model"].setdefault(key, statistics.median(t))
            r["model_x"].setdefault(key, statistics.median(ratios))
            r["model_x_iqr"].setdefault(key, statistics.quantiles(ratios, n=4)[::2])
    print("train steps", {k: round(v, 4) for k, v in r["model"].items()}, flush=True)
    # 2. the circuit alone at 16 qubits, ours
    for sim in ("mps", "statevector"):
        ours = {(a, sim, grad): circuit_step(a, grad=grad, simulator=sim) for a in TRAINABLE for grad in (False, True)}
        r["circuit"].update(medians(interleaved(ours, rounds)))
    print("circuit", {k: round(v, 4) for k, v in r["circuit"].items()}, flush=True)
    # 3. the MPS at every width
    widths = {(n, a, grad): circuit_step(a, n, grad=grad, simulator="mps")
              for n in WIDTHS for a in TRAINABLE for grad in (False, True)}
    r["widths"] = medians(interleaved(widths, max(3, rounds // 3)))
    print("widths", {k: round(v, 4) for k, v in r["widths"].items()}, flush=True)
    # 2'. peers, last and alone (their allocations would slow the fast cases), scaled to BATCH
    scale = BATCH / peer_batch
    for a in TRAINABLE:
        for name, kw in (("lightning.qubit adjoint", dict(pl_device="lightning.qubit", diff_method="adjoint")),
                         ("default.qubit backprop", dict(pl_device="default.qubit", diff_method="backprop"))):
            for grad in (False, True):
                step = circuit_step(a, grad=grad, batch=peer_batch, dtype=torch.float64, backend="pennylane", **kw)
                r["peers"][(name, a, grad)] = once(step) * scale
                print(name, a, grad, round(r["peers"][(name, a, grad)], 3), flush=True)
        for grad in (False, True):              # the full batch: jit and vmap are not linear in it
            step = tensorcircuit_step(a, grad)
            if step is not None:
                step()                              # compiles
                r["peers"][(TC, a, grad)] = statistics.median(once(step, warmup=False) for _ in range(5))
                print(TC, a, grad, round(r["peers"][(TC, a, grad)], 3), flush=True)
    if any(k[0] == TC for k in r["peers"]):
        r["notes"].append(f"{TC}: timed on the full batch of {BATCH} (median of 5 calls after the "
                          "compiling one), complex64; JAX on all cores.")
    else:
        r["notes"].append("tensorcircuit-ng is not installed: skipped (an optional, benchmark-only "
                          "dependency: pip install -c requirements.txt tensorcircuit-ng jax jaxlib).")
    r["notes"].append(f"PennyLane peers timed on a batch of {peer_batch} and scaled to {BATCH} (x{scale:g}); "
                      "float64 (PennyLane's default), ours float32 as in training.")
    return r


def report(r: dict) -> str:
    out = ["### Train step (batch 64, 16 qubits, L = 3)", "",
           "x classical: the median over rounds of this step's time / the classical step's in the same round "
           "(the statevector rows in a second series of rounds); middle half: the quartiles of that ratio "
           "over the rounds, the spread the machine's noise gives it.", "",
           "| model | ansatz | simulator | seconds (median) | x classical step | middle half of rounds | goal | pass |",
           "|---|---|---|---:|---:|---:|---|---|"]
    for key, s in r["model"].items():
        (model, a, sim), x, (q1, q3) = key, r["model_x"][key], r["model_x_iqr"][key]
        goal = ok = ""
        if a in TRAINABLE and sim == "mps":
            goal, ok = f"<= {GOAL_X_CLASSICAL}x classical", "pass" if x <= GOAL_X_CLASSICAL else "FAIL"
        out.append(f"| {model} | {a} | {sim} | {s:.4f} | {x:.3f} | {q1:.2f}-{q3:.2f} | {goal} | {ok} |")
    classical = r["model"][("classical", "-", "-")]
    shares = ", ".join(f"{a} {r['circuit'][(a, 'mps', True)] / classical:.1%}" for a in TRAINABLE)
    out += ["", f"The circuit's own forward + gradient (below) is, of the classical step's median: {shares}. "
            "The second copy of the classical model, and the paper ansatz's gate (a closed form, under a "
            "millisecond), show how far apart equal or nearly equal steps measure on this machine.", ""]
    out += ["", "### The circuit alone (16 qubits, L = 3, batch 64)", "",
            "| engine | ansatz | forward s | forward + gradient s | fastest peer / this (fwd + grad) | goal | pass |",
            "|---|---|---:|---:|---:|---|---|"]
    fastest = {a: min(s for (name, b, grad), s in r["peers"].items() if b == a and grad) for a in TRAINABLE}
    for a in TRAINABLE:
        for sim in ("mps", "statevector"):
            f, fg = r["circuit"][(a, sim, False)], r["circuit"][(a, sim, True)]
            goal = ok = ""
            if sim == "mps":
                goal, ok = f">= {GOAL_X_PEER:g}x the fastest peer", "pass" if fastest[a] / fg >= GOAL_X_PEER else "FAIL"
            out.append(f"| exact, {sim} | {a} | {f:.4f} | {fg:.4f} | {fastest[a] / fg:.0f} | {goal} | {ok} |")
        for (name, b, grad), s in r["peers"].items():
            if b == a and grad:
                out.append(f"| {name} | {a} | {r['peers'][(name, a, False)]:.2f} | {s:.2f} | {fastest[a] / s:.2f} | | |")
    out += ["", "### The MPS at every width (L = 3, batch 64)", "",
            "| qubits | ansatz | forward s | forward + gradient s | goal | pass |", "|---:|---|---:|---:|---|---|"]
    for n in WIDTHS:
        for a in TRAINABLE:
            f, fg = r["widths"][(n, a, False)], r["widths"][(n, a, True)]
            goal, ok = (f"< {GOAL_SECONDS_128:g} s", "pass" if fg < GOAL_SECONDS_128 else "FAIL") if n == 128 else ("", "")
            out.append(f"| {n} | {a} | {f:.4f} | {fg:.4f} | {goal} | {ok} |")
    out += ["", *[f"- {note}" for note in r["notes"]]]
    return "\n".join(out)


def crossover(layers=(1, 2, 3, 4, 5), repeats: int = 5) -> None:
    """For each ansatz and L, the MPS / statevector time ratio (forward + gradient, batch 64)
    against n: the MPS is used from the n where it drops below 1 (qdm.quantum.exact_simulator)."""
    for a in TRAINABLE:
        for L in layers:
            row = []
            for n in range(max(4, L), 19):
                steps = {sim: circuit_step(a, n, layers=L, simulator=sim) for sim in ("mps", "statevector")}
                t = {sim: min(once(s, warmup=False) for _ in range(repeats)) for sim, s in steps.items()}
                row.append(f"{n}:{t['mps'] / t['statevector']:.2f}")
                if t["statevector"] > 3 * t["mps"] and n > 8:
                    break
            print(f"{a}, L = {L}, n:mps/statevector: " + " ".join(row), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds of the fast cases")
    p.add_argument("--peer-batch", type=int, default=4, help="batch the PennyLane peers are timed on")
    p.add_argument("--crossover", action="store_true", help="only the MPS / statevector crossover")
    p.add_argument("--out", help="also write the Markdown report to this file")
    a = p.parse_args()
    if a.crossover:
        return crossover()
    load_before = os.getloadavg()
    header = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads; "
              f"load average before {', '.join(f'{v:.2f}' for v in load_before)}")
    print(header, flush=True)
    t0 = time.perf_counter()
    r = run(a.rounds, a.peer_batch)
    text = (f"{header}; after {', '.join(f'{v:.2f}' for v in os.getloadavg())}; run of "
            f"{time.perf_counter() - t0:.0f} s (the machine is shared: compare ratios within the run)\n\n{report(r)}\n")
    print("\n" + text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
