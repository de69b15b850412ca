"""The matrix-product-state simulator (qdm.quantum.mps): equal to the statevector and to PennyLane for
outputs and gradients, the bond bound against the statevector's Schmidt ranks, exact sampling,
exactness at 128 qubits, and any device."""

import pytest
import torch
from scipy import stats

from qdm.quantum import (chain_permutation, circuit_outputs, closed_form_outputs, exact_simulator, final_state,
                         layer_gates, mps_outputs, statevector_outputs, weight_shape)
from qdm.quantum.mps import circuit_mps, one_thread, sample_bits, site_sizes, z_strings

from test_quantum import outputs_and_grads, random_case  # noqa: E402  (the same random circuits)

TRAINABLE = ["ry", "rz_ry"]




def max_diff(a, b):
    return max((u.double() - v.double()).abs().max().item() for u, v in zip(a, b))


def mps_fn(ansatz, group=4):
    return lambda x, w: z_strings(circuit_mps(x, layer_gates(w, ansatz), group))


def dense(mps):
    """The MPS contracted to the statevector of its n qubits (B, 2^n), phantom qubits dropped."""
    A, B = mps.sites, mps.sites.shape[0]
    psi = mps.left.expand(B, 1, -1)
    for j in range(A.shape[1]):
        psi = (psi @ A[:, j].reshape(B, A.shape[2], -1)).reshape(B, -1, A.shape[4])
    psi = (psi @ mps.right)                                        # (B, 2^(slots))
    slots = A.shape[1] * (A.shape[3].bit_length() - 1)
    y = torch.arange(2 ** mps.n_qubits)
    index = sum(((y >> (mps.n_qubits - 1 - i)) & 1) << (slots - 1 - s) for i, s in enumerate(mps.slots.tolist()))
    return psi[:, index]


def before_last_chain(psi, n):
    """Undo the last CNOT chain of a final state (B, 2^n)."""
    perm = chain_permutation(n)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(2 ** n)
    return psi[:, inv]


def schmidt_ranks(psi, n):
    """Rank of psi (2^n,) across the cut after k qubits, k = 1..n-1."""
    out = []
    for k in range(1, n):
        s = torch.linalg.svdvals(psi.reshape(2 ** k, -1))
        out.append(int((s > 1e-10 * s[0]).sum()))
    return out


# --- equal to the statevector and to PennyLane ---------------------------------------------------
@pytest.mark.parametrize("ansatz", TRAINABLE)
@pytest.mark.parametrize("n, L", [(3, 1), (5, 2), (6, 3), (7, 3), (9, 2), (13, 3)])
def test_mps_matches_statevector_and_pennylane(ansatz, n, L):
    x, w = random_case(ansatz, n, L, batch=3, seed=10 * n + L)
    ref = outputs_and_grads(lambda x, w: circuit_outputs(x, w, ansatz, "pennylane"), x, w)
    assert ref[1].abs().max() > 1e-3 and ref[2].abs().max() > 1e-3
    assert max_diff(outputs_and_grads(lambda x, w: mps_outputs(x, w, ansatz), x, w), ref) < 1e-10
    assert max_diff(outputs_and_grads(lambda x, w: statevector_outputs(x, w, ansatz), x, w), ref) < 1e-10
    assert max_diff(outputs_and_grads(lambda x, w: circuit_outputs(x, w, ansatz, simulator="mps"), x, w),
                    ref) < 1e-10


@pytest.mark.parametrize("ansatz", TRAINABLE)
@pytest.mark.parametrize("n, L", [(2, 3), (8, 3), (10, 4), (11, 2), (12, 5)])
@pytest.mark.parametrize("group", [1, 2, 4])
def test_every_site_size_matches_the_statevector(ansatz, n, L, group):
    """Sites of 1, 2, 4 qubits (never fewer than L-1), with and without phantom qubits."""
    x, w = random_case(ansatz, n, L, batch=2, seed=n + 7 * L + group)
    assert all(size >= max(group, L - 1) or len(site_sizes(n, L, group)) == 1
               for size in site_sizes(n, L, group))
    ref = outputs_and_grads(lambda x, w: statevector_outputs(x, w, ansatz), x, w)
    assert max_diff(outputs_and_grads(mps_fn(ansatz, group), x, w), ref) < 1e-10


@pytest.mark.parametrize("ansatz", TRAINABLE)
def test_float32_at_16_qubits(ansatz):
    x, w = random_case(ansatz, 16, 3, batch=2, seed=16)
    ref = outputs_and_grads(lambda x, w: statevector_outputs(x, w, ansatz), x, w)
    x32, w32 = (t.detach().float().requires_grad_() for t in (x, w))
    z, gx, gw = outputs_and_grads(lambda x, w: mps_outputs(x, w, ansatz), x32, w32)
    assert z.dtype == gx.dtype == gw.dtype == torch.float32
    assert max_diff((z, gx, gw), ref) < 5e-5


# --- the state itself and its bond dimension ----------------------------------------------------
@pytest.mark.parametrize("ansatz", TRAINABLE)
@pytest.mark.parametrize("n, L, group", [(6, 1, 1), (6, 2, 1), (8, 3, 2), (9, 4, 3), (10, 5, 4)])
def test_bond_bound_is_the_schmidt_rank(ansatz, n, L, group):
    """The statevector's Schmidt rank across the cut after k qubits is min(2^L, 2^k, 2^(n-k))
    (reached for random angles) and min(2^(L-1), 2^k, 2^(n-k)) before the last chain; the MPS is
    that state before the last chain, with its bond 2^(L-1) at every cut between its sites."""
    x, w = random_case(ansatz, n, L, batch=2, seed=n * L)
    psi = final_state(x, w, ansatz).detach()
    before = before_last_chain(psi, n)
    for b in range(2):
        assert schmidt_ranks(psi[b], n) == [min(2 ** L, 2 ** k, 2 ** (n - k)) for k in range(1, n)]
        assert schmidt_ranks(before[b], n) == [min(2 ** (L - 1), 2 ** k, 2 ** (n - k)) for k in range(1, n)]
    mps = circuit_mps(x, layer_gates(w, ansatz), group)
    assert (dense(mps) - before).abs().max() < 1e-12
    cuts = torch.tensor(site_sizes(n, L, group)).cumsum(0)[:-1].tolist()
    assert len(cuts) > 0 and mps.sites.shape[2] == mps.sites.shape[4] == 2 ** (L - 1)
    assert all(schmidt_ranks(before[0], n)[k - 1] == 2 ** (L - 1) for k in cuts)   # no bond to spare


# --- exact sampling -----------------------------------------------------------------------------
@pytest.mark.parametrize("ansatz", TRAINABLE)
def test_sampled_bitstrings_follow_the_statevector_distribution(ansatz):
    """Bitstrings drawn from the MPS (5 qubits in sites of 3 + a phantom and 2) against
    |final state|^2: a chi-square goodness-of-fit test on 100000 shots per sample."""
    n, L, shots = 5, 3, 100_000
    x, w = random_case(ansatz, n, L, batch=2, seed=3)
    mps = circuit_mps(x.detach(), layer_gates(w.detach(), ansatz), group=2)
    assert site_sizes(n, L, 2) == [3, 2]
    bits = sample_bits(mps, shots, generator=torch.Generator().manual_seed(0))
    assert bits.shape == (2, shots, n)
    probs = final_state(x, w, ansatz).detach().abs().square()
    index = (bits << torch.arange(n - 1, -1, -1)).sum(-1)
    for b in range(2):
        counts = torch.bincount(index[b], minlength=2 ** n).double()
        expected = probs[b] * shots
        keep = expected > 5                  # chi-square's rule; the rest pooled into one cell
        obs, exp = counts[keep], expected[keep]
        if (~keep).any() and expected[~keep].sum() > 5:
            obs, exp = torch.cat([obs, counts[~keep].sum()[None]]), torch.cat([exp, expected[~keep].sum()[None]])
        exp = exp * obs.sum() / exp.sum()
        assert stats.chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3
        assert counts[probs[b] < 1e-12].sum() == 0          # impossible outcomes never drawn


def test_shots_come_from_the_same_mps_straight_through(monkeypatch):
    """Shots with the MPS: one simulation gives the expectation (and its gradient) and the
    bitstrings; estimates are means of S signs around the exact expectation."""
    import qdm.quantum.noisy
    n, L, S, K = 6, 3, 50, 2000
    x, w = random_case("rz_ry", n, L, batch=1, seed=4)
    exact = mps_outputs(x, w, "rz_ry")
    calls = []
    monkeypatch.setattr(qdm.quantum.noisy, "circuit_mps", lambda *a: calls.append(1) or circuit_mps(*a))
    monkeypatch.setattr(qdm.quantum.noisy, "final_state", lambda *a: pytest.fail("a second simulation"))
    xs = x.detach().repeat(K, 1).requires_grad_()
    torch.manual_seed(0)
    est = circuit_outputs(xs, w, "rz_ry", shots=S, simulator="mps")
    assert len(calls) == 1 and torch.allclose(est * S, (est * S).round())
    sd = ((1 - exact.detach()[0] ** 2) / S / K).sqrt()
    assert ((est.mean(0) - exact.detach()[0]).abs() < 4.5 * sd + 1e-12).all()
    v = torch.randn(n, dtype=torch.float64)
    gx, gw = torch.autograd.grad((est * v).sum(), [xs, w])
    gx1, gw1 = torch.autograd.grad((exact * v).sum(), [x, w])
    assert torch.allclose(gx, gx1.expand(K, n)) and torch.allclose(gw, K * gw1)


# --- exact at 128 qubits -------------------------------------------------------------------------
@pytest.mark.parametrize("ansatz", TRAINABLE)
def test_128_qubits_agree_with_smaller_circuits_and_the_closed_form(ansatz):
    """Two exact references at n = 128, L = 3. (1) The CNOT chain flows from qubit i to i+1;
    back only by dephasing its control, one qubit per layer before the last chain. So the first
    k - (L-1) outputs of the 128-qubit circuit are those of the k-qubit circuit with the same
    first k inputs and weights (k = 12, statevector). (2) With the RY weights at zero the
    circuit is the paper's (RZ only or nothing): the closed form prod cos(x_j)."""
    x, w = random_case(ansatz, 128, 3, batch=2, seed=128)
    z, gx, gw = outputs_and_grads(lambda x, w: mps_outputs(x, w, ansatz), x, w)
    assert torch.isfinite(gx).all() and torch.isfinite(gw).all() and (z.abs() <= 1 + 1e-12).all()
    k = 12
    head = statevector_outputs(x[:, :k], w[:, :k], ansatz).detach()
    assert (z[:, :k - 2] - head[:, :k - 2]).abs().max() < 1e-10
    assert (z[:, k - 2:k] - head[:, k - 2:]).abs().max() > 1e-6           # qubits k, k+1 do reach back
    w0 = w.detach().clone()
    w0[..., -1] = 0                                                  # the RY angles
    assert (mps_outputs(x, w0, ansatz) - closed_form_outputs(x, 3)).abs().max() < 1e-10


# --- the choice of simulator and devices ---------------------------------------------------------
def test_auto_simulator_picks_the_mps_for_wide_circuits():
    assert exact_simulator(16, 3) == "mps" and exact_simulator(128, 3) == "mps"
    assert exact_simulator(6, 3) == "statevector" and exact_simulator(16, 8) == "statevector"
    assert exact_simulator(6, 3, "mps") == "mps" and exact_simulator(128, 3, "statevector") == "statevector"


@pytest.mark.parametrize("ansatz", TRAINABLE)
@pytest.mark.parametrize("n", [5, 16])
def test_mps_allocates_on_the_input_device(ansatz, n):
    """On the meta device (shapes only, no data) any tensor made on the CPU would fail the ops."""
    x = torch.empty(4, n, device="meta", requires_grad=True)
    w = torch.empty(weight_shape(ansatz, n, 3), device="meta", requires_grad=True)
    z = mps_outputs(x, w, ansatz)
    z.sum().backward()
    assert z.shape == (4, n) and z.device.type == x.grad.device.type == w.grad.device.type == "meta"


def test_one_thread_gives_the_same_outputs_and_gradients():
    """mps_outputs runs on one CPU thread (qdm.quantum.mps.one_thread), forward and backward."""
    x, w = random_case("rz_ry", 9, 3, batch=3, seed=9)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen, seen_backward = [], []

        def fn(x, w):
            seen.append(torch.get_num_threads())
            z = mps_fn("rz_ry")(x, w)
            if z.requires_grad:
                z.register_hook(lambda g: seen_backward.append(torch.get_num_threads()))
            return z
        got = outputs_and_grads(lambda x, w: one_thread(fn, x, w), x, w)
        assert seen == seen_backward == [1] and torch.get_num_threads() == 2
        with torch.no_grad():
            assert torch.equal(one_thread(fn, x, w), got[0]) and seen == [1, 1]
    finally:
        torch.set_num_threads(before)
    assert max_diff(got, outputs_and_grads(mps_fn("rz_ry"), x, w)) < 1e-12
