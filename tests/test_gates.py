"""The classical control gates (qdm.gates) and the ablation runner (qdm.ablations): shapes,
gradients, the cosine-product control equals the paper's circuit, matched parameter counts,
training through the CLI, and the ablation table's layout."""
import inspect
import json
import math

import numpy as np
import pytest
import torch

from conftest import needs_inception, needs_mnist, one_line_error, read_csv
from qdm import gates as gates_module
from qdm.ablations import GATES, ablate, gate_counts, pooled_rows, summary_rows
from qdm.cli import main
from qdm.errors import UserError
from qdm.gates import CONTROL_GATES, CosineProductGate, gate_parameters, inert_parameters, xor_sets
from qdm.quantum import QuantumGate, parity_sets
from qdm.train import TrainConfig, build_model
from qdm.unet import UNet


def as_mask(sets, n):
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i, s in enumerate(sets):
        mask[i, list(s)] = True
    return mask


@pytest.mark.parametrize("n, L", [(1, 1), (4, 3), (7, 2), (16, 3), (16, 5)])
def test_xor_sets_are_the_circuits_parity_sets(n, L):
    assert torch.equal(xor_sets(n, L), as_mask(parity_sets(n, L), n))


def test_xor_sets_follow_the_binomial_rule_for_three_passes():
    a = xor_sets(16, 3)
    for i in range(16):
        for j in range(16):
            assert a[i, j] == (j <= i and math.comb(i - j + 2, 2) % 2 == 1)


def test_cosine_control_is_written_without_quantum_words():
    source = "".join(inspect.getsource(f) for f in (gates_module.xor_sets, gates_module.cosine_product,
                                                     CosineProductGate)).lower()
    for word in ("quantum", "qubit", "circuit", "cnot", "pennylane", "qml"):
        assert word not in source
    module = inspect.getsource(gates_module)
    assert "from qdm.quantum" not in module and "import pennylane" not in module


@pytest.mark.parametrize("name", list(CONTROL_GATES))
def test_control_gate_shapes(name):
    gate = CONTROL_GATES[name]()
    h = torch.randn(3, 128, 7, 7)
    assert gate(h).shape == h.shape
    model = build_model(TrainConfig(model=name))
    assert isinstance(model.gate, CONTROL_GATES[name])
    x = torch.randn(2, 1, 28, 28)
    assert model(x, torch.tensor([3, 500])).shape == x.shape


@pytest.mark.parametrize("name", list(CONTROL_GATES))
def test_every_parameter_of_a_control_gate_gets_a_gradient(name):
    torch.manual_seed(0)
    gate = CONTROL_GATES[name]()
    gate(torch.randn(4, 128, 7, 7)).square().sum().backward()
    for pname, p in gate.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, pname


@pytest.mark.parametrize("detach", [True, False])
def test_paper_gate_gradients_with_and_without_detached_input(detach):
    torch.manual_seed(0)
    gate = QuantumGate(ansatz="paper", detach_input=detach)
    gate(torch.randn(4, 128, 7, 7)).square().sum().backward()
    grad = gate.to_qubits.weight.grad
    assert (grad is not None and grad.abs().max() > 0) == (not detach)
    assert gate.from_qubits.weight.grad.abs().max() > 0
    assert gate.weights.grad.abs().max() == 0            # the RZ angles: exactly zero


def copy_linears(quantum_gate, cosine_gate):
    cosine_gate.down.load_state_dict(quantum_gate.to_qubits.state_dict())
    cosine_gate.up.load_state_dict(quantum_gate.from_qubits.state_dict())


def test_cosine_gate_equals_the_paper_circuit_exact_backend():
    torch.manual_seed(1)
    q = QuantumGate(ansatz="paper", backend="exact")
    c = CosineProductGate()
    copy_linears(q, c)
    h = torch.randn(5, 128, 7, 7, requires_grad=True)
    out_q, out_c = q(h), c(h)
    assert torch.equal(out_q, out_c)
    # and the same gradients for the input and the Linears
    v = torch.randn(out_q.shape)
    gq = torch.autograd.grad((out_q * v).sum(), [h, q.to_qubits.weight, q.from_qubits.weight])
    gc = torch.autograd.grad((out_c * v).sum(), [h, c.down.weight, c.up.weight])
    for a, b in zip(gq, gc):
        assert (a - b).abs().max() < 1e-6


def test_cosine_gate_equals_the_paper_circuit_on_pennylane():
    torch.manual_seed(2)
    q = QuantumGate(channels=8, n_qubits=4, n_layers=3, ansatz="paper", backend="pennylane").double()
    c = CosineProductGate(channels=8, width=4, passes=3).double()
    copy_linears(q, c)
    h = torch.randn(3, 8, 7, 7, dtype=torch.float64)
    assert (q(h) - c(h)).abs().max() < 1e-6


def test_parameter_counts_match_the_quantum_gate():
    counts = {g: gate_counts(g) for g in GATES}
    print("\ntrainable gate parameters (inert):", counts)
    quantum = counts["quantum-paper-detached"][0]
    assert counts == {"classical": (0, 0), "quantum-paper-detached": (4288, 48), "quantum-paper": (4288, 48),
                      "quantum-rz_ry": (4336, 0), "quantum-ry": (4288, 0), "cosine": (4240, 0),
                      "mlp": (4322, 0), "se": (4240, 0)}
    for g in CONTROL_GATES:
        assert abs(counts[g][0] - quantum) / quantum < 0.15
    # counted on a UNet or on the gate alone alike
    gate = CONTROL_GATES["mlp"]()
    assert gate_parameters(UNet(1, gate=gate)) == gate_parameters(gate) == 4322
    assert inert_parameters(UNet(1)) == 0 and gate_parameters(UNet(1)) == 0


def test_unknown_model_lists_every_model():
    with pytest.raises(UserError, match="choose classical, quantum, cosine, mlp or se"):
        build_model(TrainConfig(model="magic"))


@pytest.mark.parametrize("name", list(CONTROL_GATES))
def test_control_model_trains_through_the_cli(tmp_path, tiny_data, monkeypatch, name):
    import qdm.train
    monkeypatch.setattr(qdm.train, "train_val_images", lambda *a, **k: tiny_data)   # no MNIST needed
    out = tmp_path / name
    assert main(["train", "--preset", "fast", "--model", name, "--batch-size", "16", "--device", "cpu",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["model"] == name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["model"] == name
    model, _ = qdm.train.model_from_checkpoint(out / "best.pt")
    assert isinstance(model.gate, CONTROL_GATES[name])


# --- the ablation runner ------------------------------------------------------------------------
def test_ablate_bad_input_gives_one_line_before_any_work(tmp_path, capsys):
    where = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "r")]
    one_line_error(capsys, ["ablate", "--gates", "classical,magic", *where], "unknown variant 'magic'")
    one_line_error(capsys, ["ablate", "--digits", "0,x", *where], "--digits must be")
    one_line_error(capsys, ["ablate", "--digits", "12", *where], "unknown class 12 for mnist")
    one_line_error(capsys, ["ablate", "--seeds", "a", *where], "--seeds must be comma-separated integers")
    one_line_error(capsys, ["ablate", "--preset", "huge", *where], "unknown preset 'huge'")
    one_line_error(capsys, ["ablate", "--sampler", "euler", *where], "unknown sampler 'euler'")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r").exists()


def test_pooled_difference_averages_digits_and_their_standard_errors():
    """Over D digits: mean of the per-digit FID differences, s.e. sqrt(sum se_d^2) / D, computed
    from cells (independent seeds per digit); a variant on one digit only is not pooled."""
    fid = {(0, "classical"): [200.0, 210.0, 190.0], (0, "mlp"): [180.0, 195.0, 185.0],
           (1, "classical"): [100.0, 120.0, 110.0], (1, "mlp"): [90.0, 95.0, 130.0],
           (1, "se"): [100.0, 101.0, 102.0]}
    cells = [{"variant": v, "cls": str(d), "FID": f, "KID": 0.1, "SSIM": 0.2, "seconds_per_step": 0.05}
             for (d, v), fs in fid.items() for f in fs]
    floors = {d: {"FID": 9.0, "KID": 0.0, "SSIM": 0.3} for d in (0, 1)}
    counts = {"classical": (0, 0), "mlp": (4322, 0), "se": (4240, 0)}
    rows = summary_rows(cells, floors, ["classical", "mlp", "se"], counts, "classical")
    pooled = pooled_rows(rows, "classical")
    assert [p["variant"] for p in pooled] == ["mlp"] and pooled[0]["digits"] == "0 1"
    diffs = [np.mean(fid[d, "mlp"]) - np.mean(fid[d, "classical"]) for d in (0, 1)]
    var = [(np.var(fid[d, "mlp"], ddof=1) + np.var(fid[d, "classical"], ddof=1)) / 3 for d in (0, 1)]
    assert pooled[0]["dFID"] == pytest.approx(np.mean(diffs))
    assert pooled[0]["dFID_se"] == pytest.approx(np.sqrt(sum(var)) / 2)


@needs_mnist
@needs_inception
def test_fast_ablation_table_layout(tmp_path, monkeypatch):
    from qdm.reproduce import protocol
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    runs, results = tmp_path / "runs", tmp_path / "results"
    md = ablate([0], ["classical", "cosine"], [0, 1], "fast", protocol("fast"), runs, results, "cpu", progress=False)
    rows = read_csv(results / "ablations_fast.csv")
    assert list(rows[0]) == ["digit", "variant", "gate_parameters", "inert_parameters", "FID", "FID_seed_std", "KID",
                             "KID_seed_std", "SSIM", "SSIM_seed_std", "dFID", "dFID_se", "ms_per_step", "seeds"]
    assert [(r["digit"], r["variant"]) for r in rows] == [("0", "classical"), ("0", "cosine"), ("0", "real-vs-real")]
    assert [r["gate_parameters"] for r in rows] == ["0", "4240", ""]
    for r in rows:
        assert float(r["FID"]) > 0 and float(r["KID"]) == float(r["KID"]) and -1 <= float(r["SSIM"]) <= 1
    assert float(rows[1]["ms_per_step"]) > 0 and rows[1]["seeds"] == "2" and float(rows[1]["FID_seed_std"]) >= 0
    cells = read_csv(results / "ablations_fast_cells.csv")
    assert [(c["variant"], c["model"], c["cls"], c["seed"]) for c in cells] == [
        ("classical", "classical", "0", "0"), ("classical", "classical", "0", "1"),
        ("cosine", "cosine", "0", "0"), ("cosine", "cosine", "0", "1")]
    fid = {v: [float(c["FID"]) for c in cells if c["variant"] == v] for v in ("classical", "cosine")}
    se = math.sqrt(sum(torch.tensor(f, dtype=torch.float64).var().item() / 2 for f in fid.values()))   # sample variances, n = 2 each
    assert float(rows[1]["dFID"]) == pytest.approx(sum(fid["cosine"]) / 2 - sum(fid["classical"]) / 2)
    assert float(rows[1]["dFID_se"]) == pytest.approx(se) and rows[0]["dFID"] == ""
    text = md.read_text()
    assert "| Digit | Variant | Gate parameters | FID | KID | SSIM | FID - classical | ms/step | Seeds |" in text
    assert "| 0 | cosine | 4240 |" in text and "| 0 | real-vs-real | — |" in text and "sampler = ddim" in text
    assert (results / "ablations_fast.png").stat().st_size > 0
    cfg = json.loads((runs / "fast" / "mnist-0-cosine-seed0" / "config.json").read_text())
    assert cfg["model"] == "cosine" and cfg["quantum"] == {} and cfg["classes"] == [0]


@needs_mnist
@needs_inception
def test_noise_study_shares_its_baselines_with_the_ablations(tmp_path, monkeypatch):
    """The noise study's variants reach the run's config (shots, channel, schedule, eps source), and a
    variant in both studies (here the classical model) is trained once and reused."""
    from qdm.reproduce import protocol
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    runs, results = tmp_path / "runs", tmp_path / "results"
    ablate([0], ["classical"], [0], "fast", protocol("fast"), runs, results, "cpu", progress=False)
    first = (runs / "fast" / "mnist-0-classical-seed0" / "best.pt").stat().st_mtime_ns
    ablate([0], ["classical", "shots-100-linear", "eps-quantum"], [0], "fast", protocol("fast"), runs, results,
           "cpu", progress=False, study="noise")
    assert (runs / "fast" / "mnist-0-classical-seed0" / "best.pt").stat().st_mtime_ns == first
    cfg = json.loads((runs / "fast" / "mnist-0-shots-100-linear-seed0" / "config.json").read_text())
    assert cfg["quantum"] == {"ansatz": "paper", "detach_input": True, "shots": 100, "noise_schedule": "linear"}
    cfg = json.loads((runs / "fast" / "mnist-0-eps-quantum-seed0" / "config.json").read_text())
    assert cfg["eps_source"] == "quantum" and cfg["model"] == "quantum"
    rows = read_csv(results / "noise_fast.csv")
    assert [r["variant"] for r in rows] == ["classical", "shots-100-linear", "eps-quantum", "real-vs-real"]
    assert "FID - quantum-paper-detached" in (results / "noise_fast.md").read_text()


@needs_mnist
@needs_inception
def test_a_study_continues_from_the_cells_results_records(tmp_path, monkeypatch):
    """With the run folders gone (a fresh clone), a study keeps the cells <study>_cells.csv records and
    adds new digits and variants beside them; another preset writes files of its own name."""
    import shutil
    from qdm.ablations import study_name
    from qdm.reproduce import protocol
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    runs, results = tmp_path / "runs", tmp_path / "results"
    ablate([0], ["classical"], [0], "fast", protocol("fast"), runs, results, "cpu", progress=False)
    first = read_csv(results / "ablations_fast_cells.csv")
    shutil.rmtree(runs)
    ablate([1], ["cosine"], [0], "fast", protocol("fast"), runs, results, "cpu", progress=False)
    assert sorted(p.name for p in (runs / "fast").glob("mnist-*")) == ["mnist-1-cosine-seed0"]
    cells = read_csv(results / "ablations_fast_cells.csv")
    assert [(c["variant"], c["cls"]) for c in cells] == [("classical", "0"), ("cosine", "1")]
    assert cells[0]["FID"] == first[0]["FID"]
    rows = read_csv(results / "ablations_fast.csv")
    assert [(r["digit"], r["variant"]) for r in rows] == [("0", "classical"), ("0", "real-vs-real"),
                                                          ("1", "cosine"), ("1", "real-vs-real")]
    assert [study_name("noise", p) for p in ("study", "fast", "paper", "qdm")] == ["noise", "noise_fast", "noise_paper",
                                                                                    "noise_qdm"]


def test_every_study_variant_builds_a_model_that_its_config_describes():
    from qdm.ablations import NOISE, STUDIES
    for study, (variants, reference, _) in STUDIES.items():
        assert reference in variants
        for name in variants:
            trainable, inert = gate_counts(name, "study", variants)
            assert (trainable == 0) == (variants[name][0] == "classical") and 0 <= inert < max(trainable, 1)
    assert all(NOISE[v][1]["quantum"]["ansatz"] == "paper" for v in NOISE if v != "classical")


@needs_mnist
@needs_inception
def test_recipe_study_trains_each_variant_with_its_options(tmp_path, monkeypatch):
    """The recipe study's variants reach the run's config, and with one seed the FID difference from
    the full recipe is reported without a standard error."""
    from qdm.reproduce import protocol
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    runs, results = tmp_path / "runs", tmp_path / "results"
    ablate([0], ["qdm", "no-skip-mid"], [0], "fast", protocol("fast"), runs, results, "cpu", progress=False,
           study="recipe")
    full = json.loads((runs / "fast" / "mnist-0-qdm-seed0" / "config.json").read_text())
    cut = json.loads((runs / "fast" / "mnist-0-no-skip-mid-seed0" / "config.json").read_text())
    assert full["unet"] == {"time_every_scale": True, "skip_mid": True} and full["lr_schedule"] == "warmup_cosine"
    assert cut["unet"] == {"time_every_scale": True, "skip_mid": False} and cut["grad_clip"] == 1.0
    rows = read_csv(results / "recipe_fast.csv")
    assert [r["variant"] for r in rows] == ["qdm", "no-skip-mid", "real-vs-real"]
    assert float(rows[1]["dFID"]) == pytest.approx(float(rows[1]["FID"]) - float(rows[0]["FID"]))
    assert rows[1]["dFID_se"] == "" and "(one seed: no s.e.)" in (results / "recipe_fast.md").read_text()
