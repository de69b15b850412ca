"""Quantum-generated noise and noise scheduling (qdm.quantum.noisy, qdm.quantum.epsilon, qdm.timesteps): every option against its reference
(PennyLane default.qubit with shots, default.mixed, closed forms, N(0, 1)), and every option
off by default leaving the old code path."""
import json
import math

import pytest
import torch
from scipy import stats

import qdm.quantum.gate
import qdm.quantum.noisy as noise
from qdm.diffusion import Diffusion
from qdm.errors import UserError
from qdm.quantum import QuantumGate, bit_table, circuit_outputs, final_state, statevector_outputs, weight_shape
from qdm.quantum.epsilon import bits_to_uniform, hadamard_bit_probability, quantum_bits, quantum_randn, quantum_uniform
from qdm.quantum.noisy import (multinomial_counts, noisy_outputs, paper_channel_exponents, paper_noisy_expectation,
                               paper_probabilities, shots_at)
from qdm.timesteps import noise_level, sample_t, t_probabilities
from qdm.schedule import make_schedule, sigmoid_alpha_bar, sigmoid_betas
from qdm.train import TrainConfig, make_diffusion
from qdm.unet import UNet

N, L = 4, 3
SIGNS = 1.0 - 2.0 * bit_table(N).double()       # Z_i on each basis state


def case(ansatz, seed=0, n=N, layers=L):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(1, n, generator=g, dtype=torch.float64) * 2 - 1) * 2.5
    w = torch.rand(weight_shape(ansatz, n, layers), generator=g, dtype=torch.float64) * 2 * math.pi
    return x, w


def exact_probs(x, w, ansatz):
    """The exact distribution of the measured bitstrings, (B, 2^n)."""
    return final_state(x, w, ansatz).abs().square().detach()


# --- all options off: the old code path ----------------------------------------------------------
def test_defaults_are_off_and_leave_the_old_path(monkeypatch):
    cfg = TrainConfig()
    assert (cfg.eps_source, cfg.t_sampling, cfg.t_reweight, cfg.quantum) == ("torch", "uniform", False, {})
    gate = QuantumGate(channels=8, n_qubits=N, n_layers=2, ansatz="ry")
    assert (gate.shots, gate.channel, gate.noise_p, gate.noise_schedule) == (None, None, 0.0, "constant")
    monkeypatch.setattr(qdm.quantum.gate, "noisy_outputs", lambda *a, **k: pytest.fail("noise path taken"))
    h, t = torch.randn(3, 8, 7, 7), torch.tensor([0, 500, 999])
    x = gate.to_qubits(h.mean(dim=(2, 3)))
    expected = h * gate.from_qubits(circuit_outputs(x, gate.weights, "ry")).view(3, 8, 1, 1)
    assert torch.equal(gate(h), expected) and torch.equal(gate(h, t), expected)
    # epsilon is torch.randn, t is torch.randint, the loss is the plain MSE
    d = make_diffusion(cfg)
    assert d.noise is None
    assert torch.equal(d.randn((5, 3), torch.Generator().manual_seed(1)),
                       torch.randn((5, 3), generator=torch.Generator().manual_seed(1)))
    t1, w1 = sample_t(7, 1000, "uniform", torch.Generator().manual_seed(2))
    assert w1 is None and torch.equal(t1, torch.randint(0, 1000, (7,), generator=torch.Generator().manual_seed(2)))
    x0, tt, eps = torch.randn(4, 1, 28, 28), torch.tensor([1, 2, 3, 999]), torch.randn(4, 1, 28, 28)
    model = lambda x, t: 0.5 * x
    assert torch.allclose(d.loss(model, x0, t=tt, noise=eps, weights=torch.ones(4)), d.loss(model, x0, t=tt, noise=eps))


def test_unet_passes_t_only_to_a_gate_that_takes_it():
    seen = []

    class Gate(torch.nn.Module):
        takes_t = True

        def forward(self, h, t):
            seen.append(t)
            return h

    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 700])
    UNet(1, gate=Gate())(x, t)
    assert torch.equal(seen[0], t)
    UNet(1, gate=torch.nn.Identity())(x, t)      # Identity takes one argument


# --- shot noise ------------------------------------------------------------------------------------
def moments_check(est, probs, shots, z_sd=4.5):
    """est (K, n) shot estimates of one input: mean, and covariance (the outputs are correlated),
    against the exact values from the outcome distribution probs (2^n,)."""
    K = len(est)
    mu = probs @ SIGNS
    cov = (SIGNS.T * probs) @ SIGNS - torch.outer(mu, mu)     # Cov(Z_i, Z_k) of one shot
    assert ((est.mean(0) - mu).abs() <= z_sd * (cov.diagonal() / shots / K).sqrt() + 1e-12).all()
    sample_cov = torch.cov(est.T) * shots
    assert ((sample_cov - cov).abs() < z_sd * math.sqrt(2 / K)).all(), (sample_cov, cov)
    assert (cov - torch.diag(cov.diagonal())).abs().max() > 0.05      # a case with correlated outputs


@pytest.mark.parametrize("ansatz", ["paper", "ry", "rz_ry"])
@pytest.mark.parametrize("direct", [True, False])
def test_shot_estimates_have_the_multinomial_moments(ansatz, direct, monkeypatch):
    """Both exact samplers (shot by shot, and binomial tree) against the exact mean and covariance."""
    if not direct:
        monkeypatch.setattr(noise, "DIRECT_SHOTS", 0)
    torch.manual_seed(3)
    x, w = case(ansatz, seed=4)
    K, S = 3000, 40
    est = circuit_outputs(x.repeat(K, 1), w, ansatz, shots=S).detach()
    assert torch.allclose(est * S, (est * S).round())                  # means of S signs
    moments_check(est, exact_probs(x, w, ansatz)[0], S)


@pytest.mark.parametrize("ansatz", ["paper", "ry"])
def test_shot_estimates_agree_with_pennylane_in_distribution(ansatz):
    """The exact backend's shots against PennyLane default.qubit's at the same shots: a two-sample
    Kolmogorov-Smirnov test per output, and means and variances within binomial tolerances."""
    torch.manual_seed(5)
    x, w = case(ansatz, seed=6)
    K, S = 1500, 30
    ours = circuit_outputs(x.repeat(K, 1), w, ansatz, shots=S).detach()
    with torch.no_grad():
        ref = circuit_outputs(x.repeat(K, 1), w, ansatz, "pennylane", shots=S,
                              diff_method="parameter-shift", seed=7)
    mu = exact_probs(x, w, ansatz)[0] @ SIGNS
    var = (1 - mu ** 2) / S
    for i in range(N):      # on the counts S (1 - est)/2, integers (float rounding would split ties)
        counts = [((S * (1 - e[:, i])) / 2).round().numpy() for e in (ours, ref)]
        assert stats.ks_2samp(*counts).pvalue > 1e-3
    assert ((ours.mean(0) - ref.mean(0)).abs() < 4.5 * (2 * var / K).sqrt()).all()
    ratio = ours.var(0) / ref.var(0)                                   # F(K-1, K-1): sd ~ 0.05
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio


def test_per_sample_shots_straight_through_gradient():
    torch.manual_seed(8)
    x, w = case("ry", seed=9)
    x, w = x.repeat(3, 1).requires_grad_(), w.requires_grad_()
    shots = torch.tensor([math.inf, 10.0, 1e9])
    z = noisy_outputs(x, w, "ry", shots=shots)
    exact = statevector_outputs(x, w, "ry")
    assert torch.equal(z[0], exact[0])                                 # inf: the exact expectation
    assert torch.allclose(z[1] * 10, (z[1] * 10).round()) and not torch.allclose(z[1], exact[1], atol=1e-3)
    assert torch.allclose(z[2], exact[2], atol=1e-3)
    v = torch.randn(3, N, dtype=torch.float64)
    assert all(torch.allclose(a, b) for a, b in zip(torch.autograd.grad((z * v).sum(), [x, w]),
                                                     torch.autograd.grad((exact * v).sum(), [x, w])))


def test_multinomial_counts_are_counts():
    torch.manual_seed(10)
    probs = torch.rand(2000, 8, dtype=torch.float64).softmax(1)[:1].repeat(2000, 1)
    shots = torch.full((2000,), 1e12)
    counts = multinomial_counts(probs, shots)
    assert torch.equal(counts.sum(1), shots) and (counts >= 0).all() and torch.equal(counts, counts.round())
    small = multinomial_counts(probs, torch.full((2000,), 25.0))
    assert ((small.mean(0) - 25 * probs[0]).abs() < 4.5 * (25 * probs[0] * (1 - probs[0]) / 2000).sqrt()).all()


# --- channel noise ---------------------------------------------------------------------------------
def test_paper_channel_exponents_by_hand():
    # parity sets after 0 and 1 chains: {0},{1},{2} and {0},{0,1},{0,1,2}
    assert paper_channel_exponents(3, 2).tolist() == [2, 3, 4]
    assert paper_channel_exponents(3, 1).tolist() == [1, 1, 1]


@pytest.mark.parametrize("channel", ["depolarizing", "bitflip"])
@pytest.mark.parametrize("n, layers", [(3, 1), (3, 2), (4, 3)])
def test_paper_closed_form_with_channel_equals_default_mixed(channel, n, layers):
    x, w = case("paper", seed=n + layers, n=n, layers=layers)
    x = x.repeat(2, 1).requires_grad_()
    ref = circuit_outputs(x, w, "paper", "pennylane", channel=channel, p=0.15)
    ours = circuit_outputs(x, w, "paper", channel=channel, p=0.15)
    assert (ours - ref).abs().max() < 1e-6
    gx = torch.autograd.grad(ours.sum(), x)[0], torch.autograd.grad(ref.sum(), x)[0]
    assert (gx[0] - gx[1]).abs().max() < 1e-6
    assert (ours - circuit_outputs(x, w, "paper")).abs().max() > 0.01     # the channel does something


def mixed_probs(x, w, channel, p, n, layers):
    """The paper circuit's outcome distribution on default.mixed (the reference)."""
    import pennylane as qml

    @qml.qnode(qml.device("default.mixed", wires=n))
    def circuit():
        for i in range(n):
            qml.RY(x[0, i], wires=i)
        for layer in range(layers):
            for i in range(n):
                qml.RZ(w[layer, i, 0], wires=i)
            for c in range(n - 1):
                qml.CNOT(wires=[c, c + 1])
            for i in range(n):
                {"depolarizing": qml.DepolarizingChannel, "bitflip": qml.BitFlip}[channel](p, wires=i)
        return qml.probs(wires=range(n))

    return torch.as_tensor(circuit())


@pytest.mark.parametrize("channel", ["depolarizing", "bitflip"])
def test_paper_outcome_distribution_and_shots_with_channel(channel, monkeypatch):
    """The exact distribution of the noisy paper circuit's bitstrings equals default.mixed's; the
    bit-level shot sampler (bits -> parity map -> flips) has its moments."""
    x, w = case("paper", seed=11)
    q = noise.flip_probability(channel, torch.tensor([0.1]))
    probs = paper_probabilities(x, L, q)[0]
    assert (probs - mixed_probs(x, w, channel, 0.1, N, L)).abs().max() < 1e-6
    torch.manual_seed(12)
    est = circuit_outputs(x.repeat(3000, 1), w, "paper", shots=40, channel=channel, p=0.1).detach()
    moments_check(est, probs, 40)


@pytest.mark.parametrize("ansatz", ["ry", "rz_ry"])
@pytest.mark.parametrize("channel", ["depolarizing", "bitflip"])
def test_trajectories_average_to_default_mixed(ansatz, channel):
    """Monte-Carlo trajectories: the mean over K trajectories of the outputs and of their input
    gradients is default.mixed's, within 4.5 standard errors."""
    torch.manual_seed(13)
    x, w = case(ansatz, seed=14)
    K = 3000
    xs = x.repeat(K, 1).requires_grad_()
    z = circuit_outputs(xs, w, ansatz, channel=channel, p=0.2)
    gx = torch.autograd.grad(z.sum(), xs)[0]
    x1 = x.clone().requires_grad_()
    ref = circuit_outputs(x1, w, ansatz, "pennylane", channel=channel, p=0.2)
    ref_gx = torch.autograd.grad(ref.sum(), x1)[0][0]
    for est, target in [(z.detach(), ref.detach()[0]), (gx, ref_gx)]:
        se = est.std(0) / math.sqrt(K)
        assert ((est.mean(0) - target).abs() < 4.5 * se + 1e-9).all(), (est.mean(0), target)
    assert (ref - circuit_outputs(x, w, ansatz)).abs().max() > 0.01


def test_trajectory_simulator_without_errors_is_the_exact_circuit():
    for ansatz in ["paper", "ry", "rz_ry"]:
        x, w = case(ansatz, seed=15, n=5)
        z = exact_probs(x, w, ansatz) @ (1.0 - 2.0 * bit_table(5).double())
        assert torch.allclose(z, circuit_outputs(x, w, ansatz), atol=1e-12)
        assert torch.allclose(circuit_outputs(x, w, ansatz, channel="depolarizing", p=0.0),
                              circuit_outputs(x, w, ansatz), atol=1e-12)


# --- noise schedules over t --------------------------------------------------------------------------
def test_noise_levels_and_shots():
    t = torch.tensor([0, 333, 999])
    assert noise_level(t, 1000, "constant").tolist() == [1, 1, 1]
    u = t.double() / 999
    assert torch.allclose(noise_level(t, 1000, "linear"), u)
    assert torch.allclose(noise_level(t, 1000, "cosine"), (1 - torch.cos(math.pi * u)) / 2)
    assert noise_level(torch.tensor([499.5]), 1000, "cosine").item() == pytest.approx(0.5)
    assert shots_at(100, torch.tensor([1.0, 0.5, 0.0])).tolist() == [100, 400, math.inf]


def test_gate_noise_schedule_sets_each_samples_level():
    """Paper ansatz, depolarizing p with a linear schedule: sample b sees p t_b / (T-1) exactly
    (closed form), and shots at t = 0 give the exact expectation."""
    torch.manual_seed(16)
    gate = QuantumGate(channels=8, n_qubits=N, n_layers=L, channel="depolarizing", noise_p=0.3,
                       noise_schedule="linear", T=1000)
    h, t = torch.randn(3, 8, 7, 7), torch.tensor([0, 999, 333])
    x = gate.to_qubits(h.mean(dim=(2, 3)))
    z = paper_noisy_expectation(x, L, "depolarizing", 0.3 * t.double() / 999)
    assert torch.allclose(gate(h, t), h * gate.from_qubits(z).view(3, 8, 1, 1), atol=1e-6)
    gate.shots = 10
    exact = h[:1] * gate.from_qubits(circuit_outputs(x[:1], gate.weights, "paper")).view(1, 8, 1, 1)
    assert torch.allclose(gate(h[:1], t[:1]), exact, atol=1e-6)
    assert not torch.allclose(gate(h[1:2], t[1:2]), gate(h[1:2], t[1:2]))      # noisy at t = T-1


def test_sigmoid_schedule_is_its_closed_form():
    T = 1000
    v = lambda u: 1 / (1 + math.exp(-u))
    ab = make_schedule("sigmoid", T).alpha_bars
    for t in [1, 10, 250, 500, 750, 900]:
        expected = (v(3) - v(6 * t / T - 3)) / (v(3) - v(-3))
        assert ab[t - 1].item() == pytest.approx(expected, rel=1e-6)
    assert sigmoid_alpha_bar(torch.tensor([0.0, 500.0]), T).tolist() == pytest.approx([1.0, 0.5])
    b = sigmoid_betas(T)
    assert b.min() >= 1e-4 and b.max().item() == pytest.approx(0.999) and (b[1:] >= b[:-1]).all()


def test_weighted_t_sampling_and_importance_weights():
    T = 50
    p = t_probabilities(T, "linear")
    assert p.sum().item() == pytest.approx(1) and p[0].item() == pytest.approx(2 * p[-1].item())
    t, w = sample_t(200_000, T, "cosine", torch.Generator().manual_seed(17), reweight=True)
    freq = torch.bincount(t, minlength=T) / len(t)
    pc = t_probabilities(T, "cosine")
    assert ((freq - pc).abs() < 4.5 * (pc / len(t)).sqrt()).all()
    f = torch.arange(T, dtype=torch.float64) ** 2                     # E_p[w f(t)] = uniform mean of f
    assert (w.double() * f[t]).mean().item() == pytest.approx(f.mean().item(), rel=0.02)
    assert sample_t(4, T, "linear")[1] is None


# --- the quantum source of epsilon ----------------------------------------------------------------
def test_bits_to_uniform_midpoints():
    bits = torch.tensor([[(j >> (2 - i)) & 1 for i in range(3)] for j in range(8)], dtype=torch.uint8)
    assert bits_to_uniform(bits, 3).tolist() == [(j + 0.5) / 8 for j in range(8)]
    assert hadamard_bit_probability() == pytest.approx(0.5, abs=1e-15)


def test_quantum_epsilon_is_standard_normal():
    n = 200_000
    eps = quantum_randn((n,), torch.Generator().manual_seed(18))
    assert eps.dtype == torch.float32 and eps.abs().max() < 6.3
    assert abs(eps.mean().item()) < 4.5 / math.sqrt(n)
    assert abs(eps.var().item() - 1) < 4.5 * math.sqrt(2 / n)
    assert stats.kstest(eps.double().numpy(), "norm").pvalue > 1e-3
    same = quantum_randn((n,), torch.Generator().manual_seed(18))
    assert torch.equal(eps, same)                                     # reproducible from the seed


def test_packed_uniforms_are_bits_read_as_binary_numbers():
    """The exact source draws the k-bit number at once; bit by bit gives the same distribution."""
    g = torch.Generator().manual_seed(24)
    bits = quantum_bits(16 * 20_000, g)
    assert stats.binomtest(int(bits.sum()), len(bits), 0.5).pvalue > 1e-3
    by_bits = bits_to_uniform(bits.view(20_000, 16), 16)
    packed = quantum_uniform(20_000, g, bits=16)
    assert torch.equal(packed * 2 ** 16 - 0.5, (packed * 2 ** 16 - 0.5).round())   # on the 2^16 midpoints
    assert stats.ks_2samp(by_bits.numpy(), packed.numpy()).pvalue > 1e-3
    assert stats.kstest(packed.numpy(), "uniform").pvalue > 1e-3


def test_pennylane_bits_are_the_same_thing():
    bits = quantum_bits(4000, backend="pennylane", seed=19)
    assert bits.shape == (4000,) and set(bits.unique().tolist()) <= {0, 1}
    assert stats.binomtest(int(bits.sum()), 4000, 0.5).pvalue > 1e-3
    eps = quantum_randn((300,), bits=12, backend="pennylane", seed=20)
    assert stats.kstest(eps.double().numpy(), "norm").pvalue > 1e-3


def test_diffusion_uses_the_quantum_source_for_training_and_sampling():
    d = make_diffusion(TrainConfig(eps_source="quantum"))
    assert d.noise is quantum_randn
    assert torch.equal(d.randn((2, 3), torch.Generator().manual_seed(21)),
                       quantum_randn((2, 3), torch.Generator().manual_seed(21)))
    seen = []
    model = lambda x, t: seen.append(x) or torch.zeros_like(x)
    x0 = torch.zeros(2, 1, 28, 28)
    d.loss(model, x0, generator=torch.Generator().manual_seed(22), t=torch.tensor([999, 999]))
    ab = d.schedule.alpha_bars[999].item()
    eps = quantum_randn(x0.shape, torch.Generator().manual_seed(22))
    assert torch.allclose(seen[0], (1 - ab) ** 0.5 * eps)             # q_sample got quantum epsilon
    a = d.sample_ddim(model, (2, 1, 28, 28), steps=3, eta=1.0, generator=torch.Generator().manual_seed(23))
    b = Diffusion(d.schedule).sample_ddim(model, (2, 1, 28, 28), steps=3, eta=1.0,
                                          generator=torch.Generator().manual_seed(23))
    assert not torch.equal(a, b)


# --- errors and the command line -------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [({"channel": "amplitude"}, "channel"), ({"noise_p": 1.5}, "probability"),
                                           ({"noise_schedule": "step"}, "noise schedule"), ({"shots": 0}, "shots"),
                                           ({"noise_schedule": "linear", "backend": "pennylane"}, "exact backend")])
def test_bad_noise_options_are_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        QuantumGate(n_qubits=N, **kwargs)


def test_a_channel_probability_needs_a_channel():
    with pytest.raises(UserError, match="needs a channel"):
        QuantumGate(n_qubits=N, noise_p=0.1)
    x, w = case("ry")
    for backend in ("exact", "pennylane"):
        with pytest.raises(UserError, match="needs a channel"):
            circuit_outputs(x, w, "ry", backend, p=0.1)
    assert torch.equal(circuit_outputs(x, w, "ry", p=torch.zeros(1)), circuit_outputs(x, w, "ry"))


def test_bad_eps_source_and_t_sampling():
    with pytest.raises(UserError, match="eps source"):
        make_diffusion(TrainConfig(eps_source="dice"))
    with pytest.raises(UserError, match="t sampling"):
        t_probabilities(10, "dice")


def test_old_runs_resume_with_the_new_fields(tmp_path):
    from dataclasses import asdict

    from qdm.checkpoint import save_checkpoint
    from qdm.train import _prepare_folder
    cfg = TrainConfig()
    old = {k: v for k, v in asdict(cfg).items() if k not in ("eps_source", "t_sampling", "t_reweight")}
    save_checkpoint(tmp_path / "last.pt", {"config": old})
    assert _prepare_folder(tmp_path, cfg, resume=True, overwrite=False)["config"] == old
    with pytest.raises(UserError, match="eps_source"):
        _prepare_folder(tmp_path, TrainConfig(eps_source="quantum"), resume=True, overwrite=False)


def test_all_noise_flags_through_the_cli(tmp_path, tiny_data, monkeypatch):
    import qdm.train
    from qdm.cli import main
    monkeypatch.setattr(qdm.train, "train_val_images", lambda *a, **k: tiny_data)
    out = tmp_path / "run"
    assert main(["train", "--preset", "fast", "--model", "quantum", "--qubits", "4", "--ansatz", "ry",
                 "--shots", "100", "--channel", "depolarizing", "--noise-p", "0.05", "--noise-schedule", "cosine",
                 "--eps-source", "quantum", "--t-sampling", "linear", "--t-reweight", "--schedule", "sigmoid",
                 "--batch-size", "16", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["quantum"] == {"ansatz": "ry", "n_qubits": 4, "shots": 100, "channel": "depolarizing",
                                 "noise_p": 0.05, "noise_schedule": "cosine"}
    assert (config["eps_source"], config["t_sampling"], config["t_reweight"], config["schedule"]) == \
        ("quantum", "linear", True, "sigmoid")
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
