"""The quantum layer (qdm.quantum): the exact simulator against PennyLane, what the paper's
circuit really computes, finite shots, and the gate in the U-Net."""
import math

import pytest
import torch

from qdm.quantum import statevector
from qdm.errors import UserError
from qdm.quantum import (QuantumGate, chain_permutation, circuit_outputs, closed_form_outputs,
                         exact_simulator, parity_sets, statevector_outputs, weight_shape)
from qdm.unet import UNet

ANSATZE = ["paper", "rz_ry", "ry"]


def random_case(ansatz, n, L, batch, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, n, generator=g, dtype=dtype) * 2 - 1) * math.pi
    w = torch.rand(weight_shape(ansatz, n, L), generator=g, dtype=dtype) * 2 * math.pi
    return x.requires_grad_(), w.requires_grad_()


def outputs_and_grads(fn, x, w, seed=0):
    """z = fn(x, w) and the gradients of a random linear function of z w.r.t. x and w."""
    z = fn(x, w)
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    gx, gw = torch.autograd.grad((z * v.to(z.dtype)).sum(), [x, w], allow_unused=True)
    return z.detach(), gx, torch.zeros_like(w) if gw is None else gw


def exact(ansatz):
    return lambda x, w: circuit_outputs(x, w, ansatz, "exact")


def pennylane(ansatz, **kw):
    return lambda x, w: circuit_outputs(x, w, ansatz, "pennylane", **kw)


def assert_close(a, b, tol=1e-5):
    for u, v in zip(a, b):
        assert (u.double() - v.double()).abs().max().item() < tol


# --- exact == PennyLane default.qubit ---------------------------------------------------------
@pytest.mark.parametrize("ansatz", ANSATZE)
@pytest.mark.parametrize("n, L", [(1, 1), (4, 3), (5, 2), (6, 3)])
def test_exact_matches_pennylane_outputs_and_gradients(ansatz, n, L):
    x, w = random_case(ansatz, n, L, batch=3, seed=n * 10 + L)
    ref = outputs_and_grads(pennylane(ansatz), x, w)
    assert_close(outputs_and_grads(exact(ansatz), x, w), ref)
    # the statevector simulator too, also for the paper ansatz (whose exact path is the closed form)
    assert_close(outputs_and_grads(lambda x, w: statevector_outputs(x, w, ansatz), x, w), ref)
    # gradients are not trivially zero where they should not be
    assert ref[1].abs().max() > 1e-3
    if ansatz != "paper":
        assert ref[2].abs().max() > 1e-3


def test_lightning_adjoint_matches_exact():
    """PennyLane's C++ simulator with the adjoint method (its values carry errors of ~3e-8)."""
    x, w = random_case("ry", 6, 3, batch=2, seed=5)
    got = outputs_and_grads(pennylane("ry", pl_device="lightning.qubit", diff_method="adjoint"), x, w)
    assert_close(got, outputs_and_grads(exact("ry"), x, w), tol=1e-6)


@pytest.mark.parametrize("ansatz", ["rz_ry", "ry"])
def test_exact_matches_pennylane_at_16_qubits(ansatz):
    """The paper's size, n = 16, L = 3, in float64 and in the float32 that training uses."""
    x, w = random_case(ansatz, 16, 3, batch=2, seed=16)
    ref = outputs_and_grads(pennylane(ansatz), x, w)
    assert_close(outputs_and_grads(exact(ansatz), x, w), ref, tol=1e-10)
    x32, w32 = (t.detach().float().requires_grad_() for t in (x, w))
    assert_close(outputs_and_grads(exact(ansatz), x32, w32), ref, tol=5e-5)   # float32 over 2^16 amplitudes: 1.5e-5 seen


def test_paper_closed_form_at_16_qubits_equals_pennylane():
    x, w = random_case("paper", 16, 3, batch=2, seed=7)
    ref = outputs_and_grads(pennylane("paper"), x, w)
    assert_close(outputs_and_grads(exact("paper"), x, w), ref, tol=1e-10)


# --- what the paper's circuit computes ---------------------------------------------------------
@pytest.mark.parametrize("backend", ["exact", "pennylane"])
def test_paper_ansatz_weights_have_zero_gradient_and_no_effect(backend):
    x, w = random_case("paper", 6, 3, batch=4, seed=3)
    z, gx, gw = outputs_and_grads(lambda x, w: circuit_outputs(x, w, "paper", backend), x, w)
    assert gw.abs().max().item() < 1e-12            # exactly zero up to float rounding
    assert gx.abs().max().item() > 1e-3
    for seed in range(3):                           # any other weights: the same outputs
        _, w2 = random_case("paper", 6, 3, batch=1, seed=100 + seed)
        z2 = circuit_outputs(x, w2, "paper", backend).detach()
        assert (z2 - z).abs().max().item() < 1e-12


@pytest.mark.parametrize("ansatz", ["rz_ry", "ry"])
def test_trainable_ansatz_weights_change_the_outputs(ansatz):
    x, w = random_case(ansatz, 6, 3, batch=4, seed=5)
    _, w2 = random_case(ansatz, 6, 3, batch=1, seed=6)
    z, z2 = (circuit_outputs(x, v, ansatz, "pennylane").detach() for v in (w, w2))
    assert (z - z2).abs().max().item() > 1e-2


def brute_force_chain(n, L):
    """Output basis index of every input basis index after L CNOT chains, gate by gate on bits."""
    bits = [(torch.arange(2 ** n) >> (n - 1 - q)) & 1 for q in range(n)]   # bit of qubit q
    for _ in range(L):
        for c in range(n - 1):
            bits[c + 1] = bits[c + 1] ^ bits[c]                            # CNOT(c, c + 1)
    return bits


def test_parity_sets_are_what_the_cnot_chain_computes():
    n, L = 16, 3
    bits_out = brute_force_chain(n, L)
    bits_in = [(torch.arange(2 ** n) >> (n - 1 - q)) & 1 for q in range(n)]
    sets = parity_sets(n, L)
    assert len(sets) == n
    for i, s in enumerate(sets):
        parity = torch.zeros(2 ** n, dtype=torch.long)
        for j in s:
            parity ^= bits_in[j]
        assert torch.equal(parity, bits_out[i]), f"qubit {i}: {s}"
        assert i in s and max(s) == i                 # a chain only reads qubits at or above
    # and the statevector's permutation is that same map (a gather with its inverse)
    y = sum(b << (n - 1 - q) for q, b in enumerate(brute_force_chain(n, 1)))
    perm = chain_permutation(n)
    assert torch.equal(perm[y], torch.arange(2 ** n))
    assert torch.equal(perm, torch.arange(2 ** n) ^ (torch.arange(2 ** n) >> 1))   # Gray code


def test_closed_form_is_the_product_of_cosines_over_parity_sets():
    x, _ = random_case("paper", 16, 3, batch=5, seed=11)
    z = closed_form_outputs(x.detach(), 3)
    for i, s in enumerate(parity_sets(16, 3)):
        assert torch.allclose(z[:, i], torch.cos(x.detach()[:, list(s)]).prod(dim=1))


# --- finite shots -------------------------------------------------------------------------------
def test_finite_shots_spread_matches_binomial_variance():
    n, L, shots, copies = 3, 2, 1000, 400
    x = torch.tensor([[0.9, 2.0, -1.2]]).repeat(copies, 1)
    w = torch.tensor([0.3, 1.1, 2.5, 0.7, 1.9, 0.2]).reshape(weight_shape("ry", n, L))
    mu = circuit_outputs(x[:1], w, "ry", "exact")[0]
    with torch.no_grad():
        est = circuit_outputs(x, w, "ry", "pennylane", shots=shots, diff_method="parameter-shift",
                              seed=1234)
    assert est.shape == (copies, n)
    assert ((mu.abs() > 0.1) & (mu.abs() < 0.9)).all()     # a case where the spread is visible
    var = (1 - mu ** 2) / shots
    ratio = est.var(dim=0) / var                 # ~ chi2/(copies-1): sd sqrt(2/399) = 0.07
    assert ((ratio > 0.75) & (ratio < 1.25)).all(), ratio
    assert ((est.mean(dim=0) - mu).abs() < 4 * (var / copies).sqrt()).all()


def test_shots_with_backprop_is_a_user_error():
    with pytest.raises(UserError, match="parameter-shift"):
        QuantumGate(n_qubits=4, backend="pennylane", shots=100)


# --- the simulator's memory handling ------------------------------------------------------------
def test_chunked_batches_and_overlapping_graphs_give_the_same_gradients(monkeypatch):
    monkeypatch.setattr(statevector._Simulator, "CHUNK", 3 * 2 ** 5)    # chunks of 3 samples
    x, w = random_case("rz_ry", 5, 3, batch=7, seed=21)
    ref = outputs_and_grads(pennylane("rz_ry"), x, w)
    # two forward passes alive at once, then both backward passes (buffers must not be shared)
    z1, z2 = circuit_outputs(x, w, "rz_ry"), circuit_outputs(x * 0.5, w, "rz_ry")
    with torch.no_grad():
        z3 = circuit_outputs(x, w, "rz_ry")                          # a no-grad call in between
    v = torch.randn(z1.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g1 = torch.autograd.grad((z1 * v).sum(), [x, w])
    torch.autograd.grad(z2.sum(), [x, w])
    assert_close((z1.detach(), *g1), ref)
    assert_close((z3,), ref[:1])


def test_buffer_pool_shrinks_to_what_the_calls_use():
    """Big buffers come back to the pool for the next call; one no call has taken for
    KEEP_CALLS calls is let go (a training-size state is not held for ever)."""
    pool = statevector._BufferPool()
    big = pool.take(3, 1000, torch.float32, torch.device("cpu"))
    pool.give_back(big)
    assert pool.held_bytes() == 3 * 4000
    again = pool.take(1, 500, torch.float32, torch.device("cpu"))      # reuses the smallest that fits
    assert again[0]._base is not None and again[0]._base.data_ptr() in {b._base.data_ptr() for b in big}
    pool.give_back(again)
    for _ in range(pool.KEEP_CALLS + 1):
        pool.give_back(pool.take(1, 100, torch.float32, torch.device("cpu")))
    assert pool.held_bytes() == 4000                                  # only the one still in use


# --- the gate -----------------------------------------------------------------------------------
def test_gate_output_shape_equals_input_shape():
    gate = QuantumGate(channels=128, n_qubits=16, n_layers=3, ansatz="ry")
    h = torch.randn(3, 128, 7, 7)
    assert gate(h).shape == h.shape
    model = UNet(1, gate=QuantumGate())
    x = torch.randn(2, 1, 28, 28)
    assert model(x, torch.tensor([3, 500])).shape == x.shape


@pytest.mark.parametrize("detach, trains", [(True, False), (False, True)])
def test_detach_input_freezes_the_linear_in_front_of_the_circuit(detach, trains):
    torch.manual_seed(0)
    gate = QuantumGate(channels=8, n_qubits=4, n_layers=2, ansatz="ry", detach_input=detach)
    gate(torch.randn(5, 8, 7, 7)).square().sum().backward()
    grad = gate.to_qubits.weight.grad
    assert (grad is not None and grad.abs().max() > 0) == trains
    assert gate.from_qubits.weight.grad.abs().max() > 0


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_gate_weight_gradients(ansatz):
    torch.manual_seed(1)
    gate = QuantumGate(channels=8, n_qubits=5, n_layers=3, ansatz=ansatz)
    assert gate.weights.shape == weight_shape(ansatz, 5, 3)
    assert 0 <= gate.weights.min() and gate.weights.max() < 2 * math.pi
    gate(torch.randn(4, 8, 7, 7)).square().sum().backward()
    if ansatz == "paper":
        assert gate.weights.grad.abs().max() == 0
    else:
        assert (gate.weights.grad.abs() > 0).float().mean() > 0.9


@pytest.mark.parametrize("ansatz", ANSATZE)
def test_gate_same_output_on_both_backends(ansatz):
    torch.manual_seed(2)
    a = QuantumGate(channels=8, n_qubits=4, n_layers=3, ansatz=ansatz, backend="exact")
    b = QuantumGate(channels=8, n_qubits=4, n_layers=3, ansatz=ansatz, backend="pennylane")
    b.load_state_dict(a.state_dict())
    h = torch.randn(3, 8, 7, 7)
    assert (a(h) - b(h)).abs().max() < 5e-5
    assert b.config()["backend"] == "pennylane" and a.config()["ansatz"] == ansatz


@pytest.mark.parametrize("kwargs, what", [({"ansatz": "rx"}, "ansatz"), ({"backend": "qiskit"}, "backend"),
                                          ({"n_layers": 0}, "layer"), ({"simulator": "tn"}, "simulator")])
def test_bad_names_are_user_errors(kwargs, what):
    with pytest.raises(UserError, match=what):
        QuantumGate(**kwargs)
    if "n_layers" not in kwargs:
        with pytest.raises(UserError):
            circuit_outputs(torch.zeros(1, 4), torch.zeros(1, 4, 1), kwargs.get("ansatz", "paper"),
                            kwargs.get("backend", "exact"), simulator=kwargs.get("simulator", "auto"))


@pytest.mark.parametrize("ansatz", ["rz_ry", "ry"])
def test_gate_simulators_agree(ansatz):
    """The gate's exact backend with the MPS (auto at 16 qubits), and with the statevector, to float32
    rounding through two contraction orders (1.2e-5 seen on an AVX2-only CPU, outputs up to 0.4)."""
    torch.manual_seed(3)
    a = QuantumGate(channels=8, n_qubits=16, n_layers=3, ansatz=ansatz)
    b = QuantumGate(channels=8, n_qubits=16, n_layers=3, ansatz=ansatz, simulator="statevector")
    b.load_state_dict(a.state_dict())
    assert a.config()["simulator"] == "auto" and exact_simulator(16, 3) == "mps"
    h = torch.randn(3, 8, 7, 7)
    assert (a(h) - b(h)).abs().max() < 5e-5


# --- devices -------------------------------------------------------------------------------------
@pytest.mark.parametrize("ansatz", ANSATZE)
@pytest.mark.parametrize("simulator", ["statevector", "mps"])
def test_exact_backend_allocates_on_the_input_device(ansatz, simulator):
    """Every state, buffer and table follows the input's device. On the meta device (shapes
    only) a tensor made on the CPU fails the first op that mixes the two."""
    for n in (5, 12):
        x = torch.empty(4, n, device="meta", requires_grad=True)
        w = torch.empty(weight_shape(ansatz, n, 3), device="meta", requires_grad=True)
        z = (statevector_outputs(x, w, ansatz) if simulator == "statevector" else
             circuit_outputs(x, w, ansatz, simulator=simulator))
        z.sum().backward()
        assert z.shape == (4, n) and {t.device.type for t in (z, x.grad, w.grad)} == {"meta"}


# --- the full quantum model through the command line -----------------------------------------
@pytest.mark.parametrize("backend, ansatz", [("exact", "ry"), ("pennylane", "paper")])
def test_quantum_model_trains_through_the_cli(tmp_path, tiny_data, monkeypatch, backend, ansatz):
    import json

    import qdm.train
    from qdm.cli import main
    monkeypatch.setattr(qdm.train, "train_val_images", lambda *a, **k: tiny_data)   # no MNIST needed
    out = tmp_path / backend
    assert main(["train", "--preset", "fast", "--model", "quantum", "--quantum-backend", backend,
                 "--ansatz", ansatz, "--qubits", "4", "--batch-size", "16", "--device", "cpu",
                 "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "quantum"
    assert config["quantum"] == {"backend": backend, "ansatz": ansatz, "n_qubits": 4}
    assert (out / "best.pt").exists()
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
