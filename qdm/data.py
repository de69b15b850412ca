"""The datasets of the paper's Section V-A as tensors in [-1, 1].

- MNIST (grayscale, 1 channel) through ``torchvision.datasets.MNIST``;
- PathMNIST (RGB, 3 channels, each channel normalised to [-1, 1]) through ``medmnist``.

Both keep their libraries' real download paths and read local copies first. The data root
is ``--data-dir``, else the environment variable ``QDM_DATA_DIR``, else ``./data``:
MNIST is looked for in ``<root>/MNIST/raw`` (as torchvision lays it out, plain or .gz),
PathMNIST in ``<root>/medmnist/pathmnist.npz`` (as medmnist names it). Local files are checked
against the published md5 sums (each file hashed once; the sums are cached by path, size and
modification time in the cache folder).
"""
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from qdm.checkpoint import pid_alive, write_json
from qdm.errors import UserError

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
MNIST_MD5 = {   # the published sums: the .gz files (torchvision.datasets.MNIST.resources) and their content
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
PATHMNIST_MD5 = "a8b06965200029087d5bd730944a56c1"   # medmnist's INFO["pathmnist"]["MD5"]
SYNTHETIC = "qdm_synthetic"     # the array that marks write_synthetic_pathmnist's files
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


def file_md5(path: Path) -> str:
    """The md5 of a file, hashed once per path, size and modification time (cached in cache_root())."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    book = cache_root() / "md5.json"
    try:
        known = json.loads(book.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    entry = known.get(str(path))
    if isinstance(entry, list) and entry[:2] == stamp:
        return entry[2]
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    known = {k: v for k, v in known.items() if os.path.exists(k)}    # forget files that are gone
    known[str(path)] = [*stamp, h.hexdigest()]
    try:
        write_json(book, known)
    except OSError:                 # a read-only cache only costs the hashing next time
        pass
    return h.hexdigest()


def _check_md5(path: Path, expected: str, what: str, shown: Path | None = None) -> None:
    got = file_md5(path)
    if got != expected:
        raise UserError(f"{shown or path} is not the published {what} (md5 {got}, expected {expected}): it is "
                        "damaged, truncated or another file; replace it with the original")


def _check_idx(path: Path) -> None:
    """Refuse, naming the file, an IDX file whose header or length is not MNIST's."""
    ndim = 3 if "images" in path.name else 1
    with open(path, "rb") as f:
        head = f.read(4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim or head[:4] != bytes([0, 0, 8, ndim]):
        raise UserError(f"{path} is not an MNIST IDX file (bad magic number): replace it with the original")
    size = len(head) + math.prod(struct.unpack(f">{ndim}I", head[4:]))
    if path.stat().st_size != size:
        raise UserError(f"{path} is truncated or too long ({path.stat().st_size:,} bytes, its header says "
                        f"{size:,}): replace it with the original")


def _gunzip(src: Path, target: Path) -> None:
    """Unpack ``src`` to ``target`` through a temporary file that never outlives a failure."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # safe when processes race
    try:
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, target)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"{src} is truncated or not a gzip file ({type(e).__name__}): "
                        "replace it with the original") from None
    finally:
        tmp.unlink(missing_ok=True)


def _remove_dead_unpacking(folder: Path) -> None:
    """Remove what _gunzip left behind in processes that were killed."""
    for p in folder.glob(".*.tmp"):
        m = re.fullmatch(r"\..+\.(\d+)\.tmp", p.name)
        if m and not pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)


def _mnist(root: Path, train: bool):
    from torchvision.datasets import MNIST
    raw = root / "MNIST" / "raw"
    split = MNIST_FILES[:2] if train else MNIST_FILES[2:]
    present = {f: (raw / f).exists() or (raw / f"{f}.gz").exists() for f in MNIST_FILES}
    if any(present.values()):
        missing = [f for f in MNIST_FILES if not present[f]]
        if missing:
            raise UserError(f"MNIST file missing: no {raw / missing[0]}(.gz), though other MNIST files are there; "
                            f"copy it there, or empty {raw} to have MNIST downloaded again")
    if all((raw / f).exists() for f in MNIST_FILES):
        for f in split:
            _check_idx(raw / f)
        for f in split:
            _check_md5(raw / f, MNIST_MD5[f], f"MNIST file {f}")
        return MNIST(str(root), train=train, download=False)
    if all((raw / f"{f}.gz").exists() for f in MNIST_FILES):
        cache = cache_root() / "mnist"  # unpack next to nothing we do not own
        (cache / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        _remove_dead_unpacking(cache / "MNIST" / "raw")
        for f in MNIST_FILES:
            target = cache / "MNIST" / "raw" / f
            if f in split:
                _check_md5(raw / f"{f}.gz", MNIST_MD5[f"{f}.gz"], f"MNIST file {f}.gz")
            if not target.exists() or (f in split and file_md5(target) != MNIST_MD5[f]):
                _gunzip(raw / f"{f}.gz", target)
        for f in split:                   # the content of a checked .gz: differs only if the sums do
            _check_md5(cache / "MNIST" / "raw" / f, MNIST_MD5[f], f"content of MNIST file {f}.gz",
                       shown=raw / f"{f}.gz")
        return MNIST(str(cache), train=train, download=False)
    if any(present.values()):
        f = next(f for f in MNIST_FILES if not (raw / f).exists())
        raise UserError(f"{raw} holds MNIST files both plain and .gz (no plain {f}): give all four one way")
    try:
        root.mkdir(parents=True, exist_ok=True)
        return MNIST(str(root), train=train, download=True)
    except Exception as e:
        raise UserError(f"MNIST not found: no {raw}/{MNIST_FILES[0]}(.gz) and the download failed "
                        f"({type(e).__name__}); set QDM_DATA_DIR or --data-dir to a folder holding MNIST/raw") from None


def _check_pathmnist(path: Path) -> None:
    """The file's md5 is medmnist's, or it is a synthetic file of write_synthetic_pathmnist (marked)."""
    if file_md5(path) == PATHMNIST_MD5:
        return
    try:
        with np.load(path) as npz:
            synthetic = SYNTHETIC in npz.files
    except Exception as e:
        raise UserError(f"{path} is not a readable medmnist file ({type(e).__name__}: {e}); "
                        "delete it to download it again") from None
    if not synthetic:
        _check_md5(path, PATHMNIST_MD5, "pathmnist.npz (medmnist)")


def _pathmnist(root: Path, split: str):
    import medmnist
    folder = root / "medmnist"
    path = folder / "pathmnist.npz"
    if path.exists():
        _check_pathmnist(path)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return medmnist.PathMNIST(split=split, root=str(folder), download=not path.exists(), size=28)
    except Exception as e:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()                        # a failed download leaves no empty folder behind
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
    file cannot be downloaded (tests, CI). Its images are random pixels; an extra array
    ``qdm_synthetic`` marks it (it cannot have the real file's md5). Returns the arrays."""
    path = Path(data_dir) / "medmnist" / "pathmnist.npz"
    if path.exists():
        raise UserError(f"{path} exists: refusing to overwrite it with synthetic data")
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in DATASETS["pathmnist"][2]:
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n, dtype=np.uint8) % 9).reshape(n, 1)
    arrays[SYNTHETIC] = np.array(True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays
