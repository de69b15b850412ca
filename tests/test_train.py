import copy
import os

import pytest
import torch

from qdm.checkpoint import atomic_write, load_checkpoint, save_checkpoint, write_text
from qdm.diffusion import Diffusion
from qdm.errors import UserError
from qdm.schedule import make_schedule
from qdm.presets import get_preset
from qdm.inference import memory_layout
from qdm.train import build_model, ema_decay_at, ema_update, make_config, make_diffusion, train
from qdm.unet import UNet


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model, d = UNet(1), Diffusion(make_schedule())
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 1, 28, 28, generator=g) * 2 - 1
    t, noise = torch.randint(0, 1000, (16,), generator=g), torch.randn(16, 1, 28, 28, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = d.loss(model, x0, t=t, noise=noise)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("kind", ["classical", "quantum"])
def test_channels_last_training_step_equals_the_default_layout(kind):
    """train() runs on a CPU in channels-last memory (memory_layout): the same loss and gradients,
    to float rounding, as the default layout, for the qdm recipe's networks."""
    assert memory_layout(torch.device("cpu")) == torch.channels_last
    cfg = make_config("qdm", model=kind, quantum=get_preset("qdm").quantum_cells if kind == "quantum" else {})
    torch.manual_seed(0)
    dense = build_model(cfg)
    packed = copy.deepcopy(dense).to(memory_format=torch.channels_last)
    assert not packed.enc2.weight.is_contiguous()                   # the layout differs, the values do not
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(8, 1, 28, 28, generator=g) * 2 - 1
    t, noise = torch.randint(0, 1000, (8,), generator=g), torch.randn(8, 1, 28, 28, generator=g)
    diffusion = make_diffusion(cfg)
    losses = [diffusion.loss(net, x0, t=t, noise=noise) for net in (dense, packed)]
    assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-5)
    for loss in losses:
        loss.backward()
    for (name, a), b in zip(dense.named_parameters(), packed.parameters()):
        scale = a.grad.abs().max().item() + 1e-12
        assert (a.grad - b.grad).abs().max().item() <= 1e-4 * scale, name


def test_ema_update_is_eq10():
    torch.manual_seed(0)
    model, ema = UNet(1), UNet(1)
    before = copy.deepcopy(ema.state_dict())
    ema_update(ema, model, 0.9)
    for name, p in ema.named_parameters():
        assert torch.allclose(p, 0.9 * before[name] + 0.1 * model.state_dict()[name], atol=1e-7)


def test_ema_warmup_schedule():
    cfg = make_config("paper")
    assert ema_decay_at(cfg, 1) == 0.999                     # the paper: constant
    warm = make_config("paper", ema_warmup=True)
    assert ema_decay_at(warm, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(warm, 10 ** 6) == 0.999


def fast_cfg(**kw):
    return make_config("fast", device="cpu", batch_size=8, **kw)


def test_resume_after_interrupt_gives_identical_weights(tmp_path, tiny_data, monkeypatch):
    cfg = fast_cfg(epochs=3, val_size=8)
    train(cfg, tmp_path / "straight", progress=False, data=tiny_data)

    calls = {"n": 0}
    real_loss = Diffusion.loss

    def loss_then_crash(self, *a, **k):
        calls["n"] += torch.is_grad_enabled()          # count training steps, not validation
        if calls["n"] == cfg.steps_per_epoch + 2:    # in the middle of epoch 2
            raise KeyboardInterrupt
        return real_loss(self, *a, **k)

    monkeypatch.setattr(Diffusion, "loss", loss_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False, data=tiny_data)
    monkeypatch.setattr(Diffusion, "loss", real_loss)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["history"]["epoch"] == 1
    train(cfg, tmp_path / "resumed", resume=True, progress=False, data=tiny_data)

    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key in ["model", "ema"]:
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert [r["loss"] for r in a["history"]["steps"]] == [r["loss"] for r in b["history"]["steps"]]


def test_run_folder_contents_and_no_clobbering(tmp_path, tiny_data):
    out = tmp_path / "run"
    summary = train(fast_cfg(val_size=8), out, progress=False, data=tiny_data)
    for f in ["config.json", "loss.csv", "epochs.csv", "loss.png", "samples/epoch_001.png", "samples/epoch_002.png",
              "best.pt", "last.pt", "samples.png", "summary.json"]:
        assert (out / f).is_file(), f
    assert summary["steps"] == 6 and summary["epochs"] == 2
    assert len((out / "loss.csv").read_text().splitlines()) == 1 + 6
    stamp = (out / "last.pt").stat().st_mtime_ns
    with pytest.raises(UserError, match="already holds a run"):
        train(fast_cfg(val_size=8), out, progress=False, data=tiny_data)
    with pytest.raises(UserError, match="different lr"):
        train(fast_cfg(val_size=8, lr=1e-2), out, resume=True, progress=False, data=tiny_data)
    assert (out / "last.pt").stat().st_mtime_ns == stamp   # untouched
    assert not [p for p in out.rglob(".*tmp*")]             # no temporary files left


def test_best_by_last_batch_option(tmp_path, tiny_data):
    s = train(fast_cfg(val_size=8, best_by="last_batch"), tmp_path / "r", progress=False, data=tiny_data)
    rows = load_checkpoint(tmp_path / "r" / "last.pt")["history"]["epochs"]
    assert s["best_score"] == min(r["last_batch_loss"] for r in rows)


def test_wrong_image_shape_is_a_user_error(tmp_path):
    bad = (torch.zeros(8, 3, 28, 28), torch.zeros(2, 3, 28, 28))   # RGB for an MNIST model
    with pytest.raises(UserError, match="model expects"):
        train(fast_cfg(val_size=2), tmp_path / "r", progress=False, data=bad)


def test_atomic_write_leaves_old_file_when_write_fails(tmp_path):
    target = tmp_path / "result.txt"
    write_text(target, "old result")

    def half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write("half a new res")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old result"
    assert os.listdir(tmp_path) == ["result.txt"]


def test_checkpoint_save_failure_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"x": torch.ones(3)})

    def broken_save(obj, f):
        open(f, "wb").write(b"\x80partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"x": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pt"]
