"""The committed weights the book uses (pretrained/, qdm.pretrained): every file is what the
manifest says, the models load with their manifest configuration, a damaged file is a one-line
error (never a quiet retrain), and an absent one is trained from the manifest's configuration."""
import json
import shutil
from dataclasses import asdict

import pytest

import qdm.pretrained as pretrained
from qdm.errors import UserError
from qdm.train import make_config
from qdm.unet import count_parameters
from conftest import needs_mnist


def test_manifest_lists_every_file_with_its_checksum_and_stays_small():
    models = pretrained.manifest()
    assert models, "no pretrained models"
    total = 0
    for name, info in models.items():
        assert info["weights"] in info["files"] and info["command"].startswith("python -m qdm ")
        for file, expected in info["files"].items():
            path = pretrained.FOLDER / file
            assert path.stat().st_size == expected["bytes"], file
            assert pretrained.sha256(path) == expected["sha256"], file
            total += expected["bytes"]
    committed = {p.relative_to(pretrained.FOLDER).as_posix() for p in pretrained.FOLDER.rglob("*")
                 if p.is_file() and p != pretrained.MANIFEST}
    assert committed == {f for info in models.values() for f in info["files"]}, "files outside the manifest"
    assert total <= 10_000_000, f"pretrained/ holds {total / 1e6:.1f} MB, more than 10 MB"


@pytest.mark.parametrize("name", list(pretrained.manifest()))
def test_each_model_loads_with_its_manifest_configuration(name):
    info = pretrained.entry(name)
    model, cfg = pretrained.load(name)
    assert {k: asdict(cfg)[k] for k in info["config"]} == info["config"]
    assert count_parameters(model) == info["trained"]["parameters"]
    assert not model.training
    logs = pretrained.log_folder(name)
    assert (logs / "loss.csv").exists() and (logs / "epochs.csv").exists()
    assert any((logs / "samples").glob("epoch_*.png"))


@pytest.fixture
def copy_of_pretrained(tmp_path, monkeypatch):
    """qdm.pretrained pointed at a copy of pretrained/ (and a private runs folder)."""
    folder = tmp_path / "pretrained"
    shutil.copytree(pretrained.FOLDER, folder)
    monkeypatch.setattr(pretrained, "FOLDER", folder)
    monkeypatch.setattr(pretrained, "MANIFEST", folder / "manifest.json")
    monkeypatch.setattr(pretrained, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(pretrained, "ROOT", tmp_path)
    return folder


def test_a_damaged_file_is_a_one_line_error_not_a_retrain(copy_of_pretrained):
    name = next(iter(pretrained.manifest()))
    weights = copy_of_pretrained / pretrained.entry(name)["weights"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError) as error:
        pretrained.load(name)
    message = str(error.value)
    assert "does not match" in message and "\n" not in message
    assert not (pretrained.RUNS / name).exists(), "a damaged file must not start a training run"
    log = copy_of_pretrained / name / "epochs.csv"
    log.write_text(log.read_text() + "\n")
    with pytest.raises(UserError, match="does not match"):
        pretrained.log_folder(name)


@needs_mnist
def test_an_absent_model_is_trained_from_its_manifest_config_then_exported(copy_of_pretrained):
    cfg = make_config("fast", device="cpu")
    models = pretrained.manifest()
    models["tiny"] = {"weights": "tiny.pt", "command": "python -m qdm train --preset fast",
                      "config": asdict(cfg), "trained": {"train_minutes": 0.1, "parameters": 0},
                      "files": {"tiny.pt": {"sha256": "0" * 64, "bytes": 1}}}
    pretrained.MANIFEST.write_text(json.dumps(models))
    model, loaded = pretrained.load("tiny")                      # absent: trained here
    run = pretrained.RUNS / "tiny"
    assert asdict(loaded) == asdict(cfg) and (run / "summary.json").exists()
    stamp = (run / "best.pt").stat().st_mtime_ns
    pretrained.load("tiny")                                      # reused, not trained again
    assert (run / "best.pt").stat().st_mtime_ns == stamp
    info = pretrained.export(run, "tiny", "python -m qdm train --preset fast", epochs=[1, 2])
    assert set(info["files"]) == {"tiny.pt", "tiny/loss.csv", "tiny/epochs.csv",
                                  "tiny/samples/epoch_001.png", "tiny/samples/epoch_002.png"}
    again, _ = pretrained.load("tiny")                           # now the committed, checked file
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), again.state_dict().values()))
