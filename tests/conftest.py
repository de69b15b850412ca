"""Shared test set-up: data from ../shared/data when QDM_DATA_DIR is unset (CI's layout),
a private cache folder, and small synthetic datasets."""
import csv
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
if "QDM_DATA_DIR" not in os.environ and SHARED_DATA.exists():
    os.environ["QDM_DATA_DIR"] = str(SHARED_DATA)
if "TORCH_HOME" not in os.environ and (SHARED_DATA / "torch_hub").exists():
    os.environ["TORCH_HOME"] = str(SHARED_DATA / "torch_hub")
INCEPTION_WEIGHTS = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / \
    "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"

import qdm  # noqa: E402,F401  (makes torchvision importable first)


def mnist_available() -> bool:
    raw = Path(os.environ.get("QDM_DATA_DIR", "data")) / "MNIST" / "raw"
    return (raw / "train-images-idx3-ubyte.gz").exists() or (raw / "train-images-idx3-ubyte").exists()


needs_mnist = pytest.mark.skipif(not mnist_available(), reason="MNIST not found under QDM_DATA_DIR")
needs_inception = pytest.mark.skipif(not INCEPTION_WEIGHTS.exists(),
                                     reason="pytorch-fid's Inception weights not found under TORCH_HOME")


@pytest.fixture
def tiny_data():
    """(train, val) images: 40 + 8 random blobs in [-1, 1], shape (N, 1, 28, 28)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 28, 28, generator=g) * 2 - 1
    return x[:40], x[40:]


def read_csv(path) -> list[dict]:
    """A results CSV as a list of rows (dicts of strings)."""
    with open(path) as f:
        return list(csv.DictReader(f))


def one_line_error(capsys, args, pattern):
    """The CLI with ``args`` fails with exit code 2 and one line on stderr containing ``pattern``."""
    from qdm.cli import main
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert pattern in err, err
