"""The qdm recipe (issue 10): U-Net options, learning-rate schedule, gradient clipping, EMA
snapshots and learning curves; the paper's recipe unchanged."""
import json
import shutil

import pytest
import torch

from conftest import needs_inception, needs_mnist, read_csv
from qdm.checkpoint import load_checkpoint
from qdm.cli import main
from qdm.errors import UserError
from qdm.reproduce import table_name
from qdm.train import PRESETS, build_model, lr_at, make_config, train
from qdm.unet import UNet, count_parameters


def fast_cfg(**kw):
    return make_config("fast", device="cpu", batch_size=8, **kw)


def test_the_paper_network_is_unchanged_and_the_qdm_options_add_what_they_say():
    assert count_parameters(build_model(make_config("paper"))) == 445_985
    assert PRESETS["paper"] == {} and make_config("paper").unet == {}
    w = 32
    extra_time = sum(128 * c + c for c in (w, 2 * w, 2 * w, w))          # four Linear(128, c)
    extra_skip = 2 * w * w * 2 * 2                                       # dec2 takes 2w more channels
    assert count_parameters(UNet(1, time_every_scale=True)) == 445_985 + extra_time
    assert count_parameters(UNet(1, skip_mid=True)) == 445_985 + extra_skip
    assert count_parameters(build_model(make_config("qdm"))) == 445_985 + extra_time + extra_skip



def test_recipe_study_undoes_one_change_at_a_time():
    """Each variant of the recipe study differs from the qdm recipe in the one change it names (and
    the paper variant in all of them, set back to the paper's values); the U-Net options change the
    network by exactly their parameters; the study's steps are the preset's."""
    from qdm.ablations import PAPER_RECIPE, QDM_RECIPE, RECIPE
    qdm_cfg, paper_cfg = make_config("qdm"), make_config("paper")
    assert QDM_RECIPE == {k: getattr(qdm_cfg, k) for k in QDM_RECIPE}
    assert PAPER_RECIPE == {k: getattr(paper_cfg, k) for k in QDM_RECIPE}
    assert all(QDM_RECIPE[k] != PAPER_RECIPE[k] for k in QDM_RECIPE)    # every key is a change of the recipe
    changed = {}
    for name, (model, overrides, _) in RECIPE.items():
        assert model == "classical" and "epochs" not in overrides
        cfg = make_config("quick", **overrides)
        changed[name] = {k for k in QDM_RECIPE if getattr(cfg, k) != QDM_RECIPE[k]}
    assert changed["qdm"] == set() and changed["paper"] == set(QDM_RECIPE)
    assert all(len(c) in (1, 2) for n, c in changed.items() if n not in ("qdm", "paper"))
    assert changed["constant-lr"] == {"lr_schedule", "warmup_steps"} and changed["lr-3e-4"] == {"lr"}
    full = count_parameters(build_model(make_config("quick", **RECIPE["qdm"][1])))
    params = {n: count_parameters(build_model(make_config("quick", **RECIPE[n][1])))
              for n in ("no-time-every-scale", "no-skip-mid", "paper")}
    assert params["paper"] == 445_985
    assert full - params["no-time-every-scale"] + full - params["no-skip-mid"] == full - 445_985


def _t_dependence(model, x):
    """How much the output changes with t when the bottleneck's time embedding is zeroed."""
    with torch.no_grad():
        model.time_embed.linear.weight.zero_(), model.time_embed.linear.bias.zero_()
        return (model(x, torch.full((2,), 10)) - model(x, torch.full((2,), 900))).abs().max().item()


def test_time_reaches_every_scale_only_with_the_option():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    assert _t_dependence(UNet(1), x) == 0.0                 # the paper: t enters at the bottleneck only
    assert _t_dependence(UNet(1, time_every_scale=True), x) > 1e-3


def test_the_second_skip_carries_the_14x14_map_past_the_bottleneck():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    for skip, reaches in ((False, False), (True, True)):
        model = UNet(1, skip_mid=skip)
        with torch.no_grad():                                # cut the bottleneck: dec1's input is 0
            model.gate = torch.nn.Module()
            model.gate.forward = lambda h: torch.zeros_like(h)
        model(x, torch.full((2,), 5)).sum().backward()
        assert (model.enc2.weight.grad is not None and model.enc2.weight.grad.abs().max() > 0) == reaches


def test_unknown_unet_option_is_one_clear_error():
    with pytest.raises(UserError, match="unknown U-Net option"):
        build_model(make_config("paper", unet={"attention": True}))


def test_warmup_cosine_learning_rate():
    cfg = make_config("paper", lr=1e-3, lr_schedule="warmup_cosine", warmup_steps=10)
    total = 110
    lrs = [lr_at(cfg, s, total) for s in range(total)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)       # linear warm-up
    assert lrs[10] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)     # cosine to lr / 10
    assert lrs[60] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 50 / 99)).item())))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(make_config("paper"), 5, total) == 3e-4                           # the paper: constant


def test_training_uses_the_schedule_and_clips_the_gradient(tmp_path, tiny_data, monkeypatch):
    seen = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(parameters, max_norm, *a, **k):
        parameters = list(parameters)
        norm = real_clip(parameters, max_norm, *a, **k)
        seen.append((max_norm, torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])).item()))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    cfg = fast_cfg(epochs=2, lr=1e-3, lr_schedule="warmup_cosine", warmup_steps=2, grad_clip=1e-3, val_size=8)
    train(cfg, tmp_path / "run", progress=False, data=tiny_data)
    steps = cfg.epochs * cfg.steps_per_epoch
    assert len(seen) == steps and all(m == 1e-3 and n <= 1e-3 * (1 + 1e-4) for m, n in seen)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr_at(cfg, steps - 1, steps)) == 1e-4


def test_resume_refuses_other_unet_options(tmp_path, tiny_data):
    train(fast_cfg(epochs=1, val_size=8), tmp_path / "run", progress=False, data=tiny_data)
    with pytest.raises(UserError, match="different unet"):
        train(fast_cfg(epochs=2, val_size=8, unet={"skip_mid": True}), tmp_path / "run", resume=True,
              progress=False, data=tiny_data)


def test_snapshots_hold_the_ema_of_their_epoch(tmp_path, tiny_data):
    train(fast_cfg(epochs=3, val_size=8, snapshot_every=2), tmp_path / "run", progress=False, data=tiny_data)
    assert [p.name for p in sorted((tmp_path / "run" / "snapshots").glob("*.pt"))] == ["epoch_002.pt"]
    snap = load_checkpoint(tmp_path / "run" / "snapshots" / "epoch_002.pt")
    assert snap["epoch"] == 2 and snap["step"] == 2 * 3
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert any(not torch.equal(snap["ema"][k], last["ema"][k]) for k in snap["ema"])   # epoch 3 moved on


def test_table_names_keep_the_recipes_apart():
    assert table_name("table1", "paper") == "table1" and table_name("table1", "qdm") == "table1_qdm"
    assert table_name("table2", "quick") == "table2_quick"


@needs_mnist
@needs_inception
def test_learning_curve_scores_every_snapshot_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QDM_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "--preset", "fast", "--epochs", "2", "--snapshot-every", "1", "--out", str(run),
                 "--device", "cpu", "--no-progress", "--time-every-scale", "--skip-mid"]) == 0
    assert json.loads((run / "config.json").read_text())["unet"] == {"time_every_scale": True, "skip_mid": True}
    out = tmp_path / "results"
    args = ["curve", str(run), "--out", str(out), "--device", "cpu"]     # the fast protocol: 16 vs 64 images
    assert main(args) == 0
    rows = read_csv(out / "learning_curves.csv")
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "3"), ("2", "6")]
    assert all(float(r["FID"]) > 0 and float(r["floor_FID"]) > 0 and float(r["train_seconds"]) > 0 for r in rows)
    assert float(rows[1]["train_seconds"]) > float(rows[0]["train_seconds"])
    assert (out / "learning_curves.png").stat().st_size > 0
    cached = sorted((run / "snapshots").glob("*.json"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert main(args) == 0                                   # a rerun scores nothing again
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert main(args + ["--every", "2"]) == 0                # every 2nd snapshot, counted back from the last
    assert [r["epoch"] for r in read_csv(out / "learning_curves.csv")] == ["2"]
    assert sorted(p.stat().st_mtime_ns for p in cached) == sorted(stamps)   # read from the cache
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--every", "0"]) == 2
    assert "--every must be a positive" in capsys.readouterr().err
    assert main(["curve", str(tmp_path), "--out", str(out), "--device", "cpu"]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["curve", str(run), str(tmp_path), "--out", str(out), "--device", "cpu"]) == 2
    assert "has no snapshots" in capsys.readouterr().err
    assert len(read_csv(out / "learning_curves.csv")) == 2                   # the failed call wrote nothing
    # another run's curve joins the file; the first run's rows stay as written, its folder gone
    other = tmp_path / "other"
    assert main(["train", "--preset", "fast", "--epochs", "1", "--snapshot-every", "1", "--out", str(other),
                 "--device", "cpu", "--no-progress"]) == 0
    before = read_csv(out / "learning_curves.csv")
    shutil.rmtree(run)
    assert main(["curve", str(other), "--out", str(out), "--device", "cpu"]) == 0
    rows = read_csv(out / "learning_curves.csv")
    assert rows[:2] == before and [(r["run"], r["epoch"]) for r in rows[2:]] == [(str(other), "1")]
