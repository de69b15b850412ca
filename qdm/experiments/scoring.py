"""Scoring a model as every table and study does: N images sampled from a checkpoint's EMA weights
against the test images of its class (FID Eq. 11, KID, SSIM Eq. 12), and the reference rows that
give the numbers a scale (real-vs-real: the floor at this N; noise-vs-real: the ceiling)."""
import json
import time
from pathlib import Path

import numpy as np
import torch

from qdm import metrics
from qdm.checkpoint import load_checkpoint, save_checkpoint, sha256, write_json
from qdm.data import DATASETS, load_images
from qdm.errors import UserError
from qdm.experiments.protocol import check_ddpm_steps, column
from qdm.inference import compile_choice, for_sampling, worth_compiling
from qdm.train import make_diffusion, model_from_checkpoint, resolve_device


_inception = {}


def inception_once(device):
    """This process's Inception network on ``device``, loaded once (workers of a grid each load theirs),
    compiled for whole batches unless QDM_COMPILE=0: a grid scores many sets."""
    if str(device) not in _inception:
        _inception[str(device)] = metrics.inception(device, compiled=compile_choice() != "0")
    return _inception[str(device)]


def real_set(dataset: str, cls, proto: dict, fid_model, device, data_dir=None):
    """The real test images of a column and their (cached) Inception features."""
    classes = None if cls is None else [cls]
    real = load_images(dataset, "test", classes, data_dir)[:proto["n_real"]]
    feats = metrics.reference_features(dataset, classes, "test", len(real), fid_model, device, data_dir)
    return real, feats


def score(generated: torch.Tensor, real: torch.Tensor, real_features: np.ndarray, fid_model, device) -> dict:
    """FID (Eq. 11), KID, SSIM (Eq. 12; random real pair, and nearest real) of a set of images."""
    f = metrics.inception_features(generated, fid_model, device=device)
    kid, kid_std = metrics.kernel_inception_distance(f, real_features)
    return {"FID": metrics.frechet_distance(f, real_features), "KID": kid, "KID_std": kid_std,
            "SSIM": metrics.ssim_random_pairs(generated, real),
            "SSIM_nearest": metrics.ssim_nearest_real(generated, real)}


BATCH = 500     # images sampled at once; batch i starts from the generator seeded with seed + i


def batch_path(folder: Path, proto: dict, i: int) -> Path:
    """Where ``generate`` keeps batch i of a protocol's images."""
    return Path(folder) / (f"generated-{proto['sampler']}{proto['steps']}-{proto.get('precision', 'fp32')}"
                           f"-n{proto['n']}-seed{proto['seed']}-batch{i}.pt")


def kept_batch(path: Path | None, weights: str) -> dict | None:
    """A batch ``generate`` kept at ``path`` from the weights with this SHA-256, or None (no file,
    an unreadable one, or other weights: it is sampled again)."""
    if path is None or not path.exists():
        return None
    try:
        kept = load_checkpoint(path)
    except UserError:
        return None
    return kept if kept.get("weights") == weights else None


def generate(checkpoint, proto: dict, device="cpu", progress=False, keep=None):
    """proto['n'] images from a checkpoint's EMA weights, in batches of BATCH, each seeded; returns
    (images, the run's config, seconds of sampling). With ``keep`` (a folder), each finished batch
    is saved there with the checkpoint's SHA-256, and a rerun loads it instead of sampling it again:
    a job stopped in the middle loses at most the batch in progress, and the images and seconds
    are those of an uninterrupted run. A batch kept from other weights is sampled again."""
    model, cfg = model_from_checkpoint(checkpoint, device)
    check_ddpm_steps(proto["sampler"], proto["steps"], cfg.T)
    diffusion = make_diffusion(cfg)            # its schedule and epsilon source (qdm.quantum.epsilon)
    precision = proto.get("precision", "fp32")
    weights = sha256(checkpoint) if keep is not None else None
    eps, images, seconds = None, [], 0.0
    for i, b in enumerate(torch.arange(proto["n"]).split(BATCH)):
        path = None if keep is None else batch_path(keep, proto, i)
        kept = kept_batch(path, weights)
        if kept is not None:
            images.append(kept["images"])
            seconds += kept["seconds"]
            continue
        if eps is None:                        # compiled (if it pays) only when a batch is sampled
            eps = for_sampling(model, precision, worth_compiling(proto["steps"] * proto["n"], precision))
        t0 = time.perf_counter()
        with torch.inference_mode():
            batch = diffusion.sample(eps, (len(b), DATASETS[cfg.dataset][0], 28, 28), proto["sampler"], proto["steps"],
                                     generator=torch.Generator().manual_seed(proto["seed"] + i), device=device,
                                     progress=progress).cpu()
        took = time.perf_counter() - t0
        images.append(batch)
        seconds += took
        if path is not None:
            save_checkpoint(path, {"weights": weights, "images": batch, "seconds": took})
    return torch.cat(images), cfg, seconds


def evaluate_checkpoint(checkpoint, proto: dict, fid_model=None, device="cpu", data_dir=None,
                        progress=False, keep=None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Sample from a checkpoint (keeping finished batches in ``keep``: ``generate``) and score the
    images against the test images of the class(es) it was trained on. Returns (metrics, generated
    images, real images)."""
    device = resolve_device(str(device))
    fid_model = fid_model or metrics.inception(device)
    images, cfg, seconds = generate(checkpoint, proto, device, progress, keep)
    cls = None if cfg.classes is None else (cfg.classes[0] if len(cfg.classes) == 1 else None)
    if cfg.classes is not None and len(cfg.classes) > 1:
        raise UserError("evaluate needs a checkpoint trained on one class or on all classes")
    real, real_f = real_set(cfg.dataset, cls, proto, fid_model, device, data_dir or cfg.data_dir)
    result = {**score(images, real, real_f, fid_model, device), "sample_seconds": seconds, "protocol": proto}
    return result, images, real


def reference_rows(folder: Path, dataset: str, cls, proto: dict, fid_model, device, data_dir=None) -> dict:
    """Real training images vs the test images (the floor at this N) and Gaussian noise
    vs the test images (the ceiling), cached in ``folder`` as JSON. They depend on the data and N
    only, so the grids of every preset share one folder (``--runs-dir``)."""
    path = folder / f"reference-{dataset}-{column(cls)}-n{proto['n']}-real{proto['n_real']}.json"
    if path.exists():
        return json.loads(path.read_text())
    real, real_f = real_set(dataset, cls, proto, fid_model, device, data_dir)
    train_x = load_images(dataset, "train", None if cls is None else [cls], data_dir)[:proto["n"]]
    noise = torch.randn((len(train_x), *real.shape[1:]), generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    rows = {"real-vs-real": score(train_x, real, real_f, fid_model, device),
            "noise-vs-real": score(noise, real, real_f, fid_model, device)}
    write_json(path, rows)
    return rows
