import numpy as np
import pytest
import torch

from conftest import needs_mnist
from qdm.data import load_images, parse_classes, train_val_images, write_synthetic_pathmnist
from qdm.errors import UserError


@needs_mnist
def test_mnist_one_digit_in_model_range(tmp_path, monkeypatch):
    monkeypatch.setenv("QDM_CACHE", str(tmp_path))   # unpacks the .gz copies here, not next to the data
    train, val = train_val_images("mnist", [0], 256)
    assert len(train) + len(val) == 5923          # the number of zeros in MNIST's training set
    assert train.shape[1:] == (1, 28, 28) and train.dtype == torch.float32
    assert train.min() == -1 and train.max() == 1
    test = load_images("mnist", "test", [0, 1])
    assert len(test) == 980 + 1135


def write_fake_pathmnist(folder, n=30, seed=0):
    """qdm's synthetic file in medmnist's format, with one known pixel to check the scaling."""
    arrays = write_synthetic_pathmnist(folder, n, seed)
    arrays["train_images"][0, 0, 0] = [0, 128, 255]
    np.savez_compressed(folder / "medmnist" / "pathmnist.npz", **arrays)
    return arrays


def test_pathmnist_rgb_one_class_each_channel_normalised(tmp_path):
    arrays = write_fake_pathmnist(tmp_path)
    x = load_images("pathmnist", "train", [1], data_dir=str(tmp_path))
    n1 = int((arrays["train_labels"] == 1).sum())
    assert x.shape == (n1, 3, 28, 28)
    raw = arrays["train_images"][arrays["train_labels"][:, 0] == 1]
    assert torch.allclose(x, torch.tensor(raw).permute(0, 3, 1, 2).float() / 127.5 - 1)
    every = load_images("pathmnist", "train", None, data_dir=str(tmp_path))
    assert torch.allclose(every[0, :, 0, 0], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)
    train, val = train_val_images("pathmnist", [1], 2, data_dir=str(tmp_path))
    assert len(val) == 2 and len(train) == n1


def test_missing_data_says_what_and_where(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST
    import medmnist.dataset

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(MNIST, "download", offline)
    monkeypatch.setattr(medmnist.dataset.MedMNIST, "download", offline)
    with pytest.raises(UserError, match=r"MNIST not found: no .*MNIST/raw/train-images-idx3-ubyte"):
        load_images("mnist", "train", [0], data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"PathMNIST not found: no .*medmnist/pathmnist.npz"):
        load_images("pathmnist", "train", [0], data_dir=str(tmp_path))
    assert not (tmp_path / "medmnist").exists()             # the failed download left no empty folder
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"PathMNIST not found"):
        load_images("pathmnist", "train", [0], data_dir=str(tmp_path / "a_file"))


def test_corrupt_pathmnist_file(tmp_path):
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist" / "pathmnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="not a readable medmnist file"):
        load_images("pathmnist", "train", None, data_dir=str(tmp_path))


def test_bad_names():
    with pytest.raises(UserError, match="unknown dataset 'cifar'"):
        load_images("cifar")
    with pytest.raises(UserError, match="unknown class 10 for mnist"):
        load_images("mnist", "train", [10])
    with pytest.raises(UserError, match="has no split 'val'"):
        load_images("mnist", "val", [0])
    assert parse_classes("3") == [3] and parse_classes("0,1") == [0, 1] and parse_classes("all") is None
    with pytest.raises(UserError, match="bad class list"):
        parse_classes("zero")
