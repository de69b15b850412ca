"""The datasets of the paper's Section V-A as tensors in [-1, 1].

- MNIST (grayscale, 1 channel) through ``torchvision.datasets.MNIST``;
- PathMNIST (RGB, 3 channels, each channel normalised to [-1, 1]) through ``medmnist``.

Both keep their libraries' real download paths and read local copies first. The data root
is ``--data-dir``, else the environment variable ``QDM_DATA_DIR``, else ``./data``:
MNIST is looked for in ``<root>/MNIST/raw`` (as torchvision lays it out, plain or .gz),
PathMNIST in ``<root>/medmnist/pathmnist.npz`` (as medmnist names it).
"""
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from qdm.errors import UserError

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
DATASETS = {  # name: (channels, number of classes, splits)
    "mnist": (1, 10, ("train", "test")),
    "pathmnist": (3, 9, ("train", "val", "test")),
}


def data_root(data_dir: str | None = None) -> Path:
    return Path(data_dir or os.environ.get("QDM_DATA_DIR") or "data")


def cache_root() -> Path:
    """Where qdm unpacks what it must not write next to read-only data (QDM_CACHE)."""
    return Path(os.environ.get("QDM_CACHE") or Path.home() / ".cache" / "qdm")


def check_dataset(dataset: str, classes: list[int] | None = None) -> None:
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    n = DATASETS[dataset][1]
    bad = [c for c in classes or [] if not 0 <= c < n]
    if bad:
        raise UserError(f"unknown class {bad[0]} for {dataset}: its classes are 0-{n - 1}")


def parse_classes(spec: str | None) -> list[int] | None:
    """'0' -> [0]; '0,1' -> [0, 1]; 'all' or None -> None (every class)."""
    if spec is None or str(spec).lower() == "all":
        return None
    try:
        return [int(c) for c in str(spec).split(",")]
    except ValueError:
        raise UserError(f"bad class list {spec!r}: give integers separated by commas, or 'all'") from None


def _to_model_range(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N,H,W) or (N,H,W,C) -> float32 (N,C,H,W) in [-1, 1], each channel alike."""
    x = torch.as_tensor(np.asarray(images_uint8))
    x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.float() / 127.5 - 1


def _mnist(root: Path, train: bool):
    from torchvision.datasets import MNIST
    raw = root / "MNIST" / "raw"
    if all((raw / f).exists() for f in MNIST_FILES):
        return MNIST(str(root), train=train, download=False)
    if all((raw / f"{f}.gz").exists() for f in MNIST_FILES):
        cache = cache_root() / "mnist"  # unpack next to nothing we do not own
        (cache / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        for f in MNIST_FILES:
            target = cache / "MNIST" / "raw" / f
            if not target.exists():
                tmp = target.with_name(f".{f}.{os.getpid()}.tmp")  # safe when processes race
                with gzip.open(raw / f"{f}.gz", "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, target)
        return MNIST(str(cache), train=train, download=False)
    try:
        root.mkdir(parents=True, exist_ok=True)
        return MNIST(str(root), train=train, download=True)
    except Exception as e:
        raise UserError(f"MNIST not found: no {raw}/{MNIST_FILES[0]}(.gz) and the download failed "
                        f"({type(e).__name__}); set QDM_DATA_DIR or --data-dir to a folder holding MNIST/raw") from None


def _pathmnist(root: Path, split: str):
    import medmnist
    folder = root / "medmnist"
    path = folder / "pathmnist.npz"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return medmnist.PathMNIST(split=split, root=str(folder), download=not path.exists(), size=28)
    except Exception as e:
        if not path.exists():
            raise UserError(f"PathMNIST not found: no {path} and the download failed ({type(e).__name__}); "
                            "set QDM_DATA_DIR or --data-dir to a folder holding medmnist/pathmnist.npz") from None
        raise UserError(f"{path} is not a readable medmnist file ({type(e).__name__}: {e}); "
                        "delete it to download it again") from None


def load_images(dataset: str, split: str = "train", classes: list[int] | None = None,
                data_dir: str | None = None) -> torch.Tensor:
    """Images of ``dataset``'s ``split`` whose label is in ``classes`` (all when None),
    as float32 (N, C, 28, 28) in [-1, 1]."""
    check_dataset(dataset, classes)
    if split not in DATASETS[dataset][2]:
        raise UserError(f"{dataset} has no split {split!r}: choose one of {', '.join(DATASETS[dataset][2])}")
    root = data_root(data_dir)
    if dataset == "mnist":
        ds = _mnist(root, train=split == "train")
        images, labels = ds.data.numpy(), ds.targets.numpy()
    else:
        ds = _pathmnist(root, split)
        images, labels = ds.imgs, ds.labels.reshape(-1)
    if classes is not None:
        keep = np.isin(labels, classes)
        images = images[keep]
    return _to_model_range(images)


def train_val_images(dataset: str, classes: list[int] | None, val_size: int,
                     data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images and a held-out validation set. MNIST has no validation split, so
    its last ``val_size`` training images of the class are held out; PathMNIST uses the
    first ``val_size`` images of its own val split. The test split stays untouched for
    the metrics."""
    if dataset == "pathmnist":
        return (load_images(dataset, "train", classes, data_dir),
                load_images(dataset, "val", classes, data_dir)[:val_size])
    images = load_images(dataset, "train", classes, data_dir)
    if len(images) <= val_size:
        raise UserError(f"only {len(images)} training images: val_size must be smaller")
    return images[:-val_size], images[-val_size:]


def write_synthetic_pathmnist(data_dir, n: int = 30, seed: int = 0) -> dict:
    """A small *synthetic* PathMNIST in medmnist's exact file format (uint8 (N, 28, 28, 3)
    images, uint8 (N, 1) labels cycling over the 9 classes, for each split) at
    ``<data_dir>/medmnist/pathmnist.npz``: exercises the PathMNIST code path where the real
    file cannot be downloaded (tests, CI). Its images are random pixels. Returns the arrays."""
    path = Path(data_dir) / "medmnist" / "pathmnist.npz"
    if path.exists():
        raise UserError(f"{path} exists: refusing to overwrite it with synthetic data")
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in DATASETS["pathmnist"][2]:
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n, dtype=np.uint8) % 9).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays
