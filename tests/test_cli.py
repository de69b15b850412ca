"""The command line as a user runs it: a real training run, sampling, and bad input."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, needs_mnist, one_line_error
from qdm.cli import main


def run_cli(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "qdm", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


@needs_mnist
def test_train_then_sample_smoke(tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--preset", "fast", "--digit", "0", "--out", str(out), "--no-progress", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["model"] == "classical" and summary["classes"] == [0]
    config = json.loads((out / "config.json").read_text())
    assert config["qdm_version"] and config["parameters"] == summary["parameters"]
    r = run_cli("sample", str(out / "best.pt"), "--n", "4", "--steps", "3", "--out", str(tmp_path / "s.png"),
                "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.png").stat().st_size > 0
    assert torch.load(tmp_path / "s.pt").shape == (4, 1, 28, 28)


def test_help_on_every_command():
    for cmd in ["train", "sample", "evaluate", "reproduce", "ablate", "curve", "info"]:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


def test_bad_input_gives_one_line(tmp_path, capsys):
    one_line_error(capsys, ["train", "--dataset", "cifar", "--out", str(tmp_path / "a")], "unknown dataset 'cifar'")
    one_line_error(capsys, ["train", "--digit", "12", "--out", str(tmp_path / "a")], "unknown class 12 for mnist")
    one_line_error(capsys, ["train", "--preset", "huge"], "unknown preset 'huge'")
    one_line_error(capsys, ["train", "--model", "magic", "--out", str(tmp_path / "a")], "unknown model 'magic'")
    one_line_error(capsys, ["sample", str(tmp_path / "nope.pt")], "checkpoint not found")
    one_line_error(capsys, ["sample", str(tmp_path)], "is a folder: give a checkpoint file in it")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    one_line_error(capsys, ["sample", str(tmp_path / "junk.pt")], "is corrupt or not a torch file")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    one_line_error(capsys, ["sample", str(tmp_path / "other.pt")], "is not a qdm checkpoint")
    one_line_error(capsys, ["evaluate", str(tmp_path / "nope.pt")], "checkpoint not found")
    one_line_error(capsys, ["evaluate", str(tmp_path / "junk.pt")], "is corrupt or not a torch file")
    one_line_error(capsys, ["reproduce", "table3", "--results-dir", str(tmp_path / "r")], "unknown table 'table3'")
    one_line_error(capsys, ["reproduce", "table1", "--digits", "0,x"], "must be")
    one_line_error(capsys, ["reproduce", "table1", "--models", "hybrid"], "unknown model 'hybrid'")
    one_line_error(capsys, ["reproduce", "table1", "--seeds", "a"], "--seeds must be comma-separated integers")
    for empty in (["--classes", ","], ["--classes", ""], ["--seeds", ""], ["--models", ","]):
        one_line_error(capsys, ["reproduce", "table1", "--results-dir", str(tmp_path / "r"), *empty],
                       "give at least one class, one model and one seed")
    one_line_error(capsys, ["reproduce", "table1", "--preset", "qdm", "--results-dir", str(tmp_path / "r"),
                            "--merge", str(tmp_path / "gpu")], "table1_qdm_cells.csv does not exist: give the results")
    assert not (tmp_path / "r").exists()


def test_mismatched_checkpoint(tmp_path, capsys, tiny_data):
    from qdm.checkpoint import load_checkpoint, save_checkpoint
    from qdm.train import make_config, train
    train(make_config("fast", batch_size=8, val_size=8, device="cpu"), tmp_path / "r", progress=False, data=tiny_data)
    state = load_checkpoint(tmp_path / "r" / "best.pt")
    state["config"]["dataset"] = "pathmnist"          # 1-channel weights, 3-channel model
    save_checkpoint(tmp_path / "mismatch.pt", {k: v for k, v in state.items() if k != "format"})
    one_line_error(capsys, ["sample", str(tmp_path / "mismatch.pt")], "does not match")


def test_existing_run_is_not_destroyed(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("results")
    one_line_error(capsys, ["train", "--out", str(out)], "holds other files (precious.txt), not a qdm run")
    one_line_error(capsys, ["train", "--out", str(out), "--resume"], "no last.pt to resume from")
    one_line_error(capsys, ["train", "--out", str(out), "--overwrite"], "holds other files (precious.txt)")
    one_line_error(capsys, ["train", "--out", str(out), "--overwrite", "--resume"], "give one of them")
    assert (out / "precious.txt").read_text() == "results"


@needs_mnist
def test_resume_continues_a_run_with_its_own_settings(tmp_path, capsys):
    """`train --out X --resume --epochs N` continues the run in X with the preset and digit it was
    trained with (only the flags given change); a flag that must match the run is still refused."""
    from qdm.checkpoint import load_checkpoint
    out = str(tmp_path / "three")
    assert main(["train", "--preset", "fast", "--digit", "3", "--epochs", "1", "--out", out, "--no-progress"]) == 0
    config = json.loads((tmp_path / "three" / "config.json").read_text())
    del config["grid_steps"]                              # as written by a qdm before that field: the preset's
    (tmp_path / "three" / "config.json").write_text(json.dumps(config))
    assert main(["train", "--out", out, "--resume", "--epochs", "2", "--no-progress"]) == 0
    config = json.loads((tmp_path / "three" / "config.json").read_text())
    assert (config["preset"], config["classes"], config["epochs"], config["grid_steps"]) == ("fast", [3], 2, 5)
    assert load_checkpoint(tmp_path / "three" / "last.pt")["history"]["epoch"] == 2
    capsys.readouterr()
    one_line_error(capsys, ["train", "--out", out, "--resume", "--digit", "4"], "its run has a different classes")


def test_resume_restarts_a_run_stopped_before_its_first_checkpoint(tmp_path, tiny_data, capsys):
    """Killed in its first epoch, a run folder holds config.json (and maybe logs) but no .pt:
    --resume starts it again; a folder with any other file, or whose config.json qdm did not
    write, is still refused, untouched."""
    from qdm.train import make_config, train
    cfg = make_config("fast", batch_size=8, val_size=8, device="cpu")
    out = tmp_path / "killed"
    (out / "samples").mkdir(parents=True)
    (out / "config.json").write_text('{"format": "qdm-run-v1"}')
    (out / "samples" / "epoch_001.png").write_bytes(b"")
    train(cfg, out, resume=True, progress=False, data=tiny_data)
    assert (out / "last.pt").exists() and json.loads((out / "config.json").read_text())["preset"] == "fast"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"format": "qdm-run-v1"}')
    (other / "precious.txt").write_text("results")
    one_line_error(capsys, ["train", "--out", str(other), "--resume"], "no last.pt to resume from")
    assert (other / "precious.txt").read_text() == "results"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    one_line_error(capsys, ["train", "--out", str(foreign), "--resume"], "not a qdm run")
    assert (foreign / "config.json").read_text() == "{}"


def test_every_train_config_field_is_a_described_flag():
    """The train command is built from TrainConfig's fields: each one (and each U-Net and gate option)
    has a flag whose help says what it is and its default, and the presets that change it."""
    from dataclasses import fields
    from qdm.cli import build_parser
    from qdm.train import TrainConfig
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {opt: action.help for action in train._actions for opt in action.option_strings}
    for f in fields(TrainConfig):
        if f.name == "preset":
            continue
        flags = f.metadata.get("options") or {f.name: None}
        for flag in flags:
            text = helps.get("--" + flag.replace("_", "-")) or helps.get("--" + flag)
            assert text and "preset value when omitted" not in text and len(text) > 20, (f.name, flag, text)
    assert "qdm 100" in helps["--epochs"] and "default 30" in helps["--epochs"]


def test_train_flags_build_the_config():
    from qdm.cli import build_parser, train_config
    a = build_parser().parse_args(["train", "--preset", "qdm", "--classes", "all", "--no-skip-mid", "--lr", "0.002",
                                   "--qubits", "8", "--no-ema-warmup"])
    cfg = train_config(a)
    assert cfg.classes is None and cfg.lr == 0.002 and cfg.epochs == 100 and cfg.ema_warmup is False
    assert cfg.unet == {"time_every_scale": True, "skip_mid": False} and cfg.quantum == {"n_qubits": 8}
    assert train_config(build_parser().parse_args(["train"])).classes == [0]
    assert train_config(build_parser().parse_args(["train", "--digit", "3,5"])).classes == [3, 5]


def test_output_cut_short_by_its_reader_is_not_an_error(tmp_path):
    """`python -m qdm reproduce ... --executor commands | head -1`: the commands left unread are no
    error of qdm's, so nothing on stderr and exit status 0."""
    seeds = ",".join(map(str, range(40)))                # 800 commands: more than a pipe holds
    cmd = [sys.executable, "-m", "qdm", "reproduce", "table1", "--preset", "fast", "--seeds", seeds, "--device",
           "cpu", "--executor", "commands", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert proc.stdout.readline().startswith(b"python -m qdm reproduce table1")
    proc.stdout.close()                                   # as head does after its first line
    assert proc.wait(timeout=120) == 0 and proc.stderr.read() == b""
