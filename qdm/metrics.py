"""Sample quality: FID (Eq. 11), KID and SSIM (Eq. 12).

FID and KID use pytorch-fid's InceptionV3 (the FID-specific TF weights, pool3 features,
2048 dimensions). Images go in as pytorch-fid expects them: in [0, 1], 3 channels
(grayscale repeated), resized to 299 by the network itself. The weights are found through
TORCH_HOME (torch.hub's cache) and downloaded by pytorch-fid where there is internet.
Feature statistics of real reference sets are cached on disk (``reference_features``).
"""
import os
import weakref
from pathlib import Path

import numpy as np
import torch

from qdm.errors import UserError
from qdm.inference import compiled_or_eager


def inception(device="cpu", compiled: bool = False):
    """pytorch-fid's InceptionV3 returning 2048-d pool3 features; with ``compiled``, its whole
    batches run compiled (``compile_inception``)."""
    from pytorch_fid.inception import InceptionV3
    try:
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    except Exception as e:  # no cached file and no network
        home = os.environ.get("TORCH_HOME", "~/.cache/torch")
        raise UserError("FID Inception weights not found in "
                        f"{home}/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth and the download failed "
                        f"({type(e).__name__}); set TORCH_HOME to a folder holding hub/checkpoints/") from None
    # Channels-last memory: the same float32 arithmetic (features equal to about 1e-5), and on a CPU
    # the convolutions at 299x299 run about 1.6x faster in this layout.
    model = model.to(device, memory_format=torch.channels_last).eval()
    return compile_inception(model) if compiled else model


_COMPILED = weakref.WeakKeyDictionary()      # an Inception network -> its compiled twin


def compile_inception(model):
    """Give the Inception network a compiled twin for whole batches (``inception_features`` runs a
    last, smaller batch eagerly, so one shape is compiled, and a set smaller than a batch never
    waits for a compilation). Inductor's freezing folds each BatchNorm into its convolution (dynamo
    then guards the weights it folded in): the same features to float rounding (tests/test_metrics.py)
    and, on a CPU, about 1.4x faster after two minutes or so of compiling
    (results/bench_inception.md), so it is for processes that score many sets (the grids, the
    sampler study), not for one ``evaluate``."""
    fast = compiled_or_eager(model)

    def frozen(x):
        with torch._inductor.config.patch(freezing=True):
            return fast(x)
    _COMPILED[model] = frozen
    return model


@torch.inference_mode()
def inception_features(images: torch.Tensor, model, batch_size: int = 100, device="cpu") -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] -> (N, 2048) float64 features."""
    out, whole_batches = [], _COMPILED.get(model, model)
    for i in range(0, len(images), batch_size):
        x = ((images[i:i + batch_size].float() + 1) / 2).clamp(0, 1).to(device)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = x.contiguous(memory_format=torch.channels_last)
        out.append((whole_batches if len(x) == batch_size else model)(x)[0].flatten(1).double().cpu())
    return torch.cat(out).numpy()


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Eq. 11: ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) of two feature sets.

    pytorch-fid computes the trace term with scipy's general matrix square root (about 10 s for
    2048 x 2048 on 2 CPU cores). Here, exactly and faster, with A_k the centred features
    (n_k x d) and S_k = A_k^T A_k / (n_k - 1):
    - fewer samples than dimensions: the nonzero eigenvalues of S_1 S_2 are the squared singular
      values of M = A_1 A_2^T / sqrt((n_1 - 1)(n_2 - 1)), so Tr (S_1 S_2)^(1/2) is the sum of
      M's singular values (an n_1 x n_2 problem);
    - otherwise: (S_1 S_2)^(1/2) has the eigenvalues of the symmetric PSD S_1^(1/2) S_2 S_1^(1/2),
      two symmetric eigendecompositions.
    Both equal pytorch-fid's ``calculate_frechet_distance`` to rounding (tests/test_metrics.py)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1, a2 = f1 - mu1, f2 - mu2
    c1, c2 = len(f1) - 1, len(f2) - 1
    if min(len(f1), len(f2)) <= f1.shape[1]:
        trace_sqrt = np.linalg.svd(a1 @ a2.T / np.sqrt(c1 * c2), compute_uv=False).sum()
    else:
        s1, s2 = a1.T @ a1 / c1, a2.T @ a2 / c2
        lam, V = np.linalg.eigh(s1)
        root = V * np.sqrt(np.clip(lam, 0, None))      # S_1^(1/2) = root @ V.T; A ~ root.T S_2 root
        trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root.T @ s2 @ root), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + (a1 ** 2).sum() / c1 + (a2 ** 2).sum() / c2 - 2 * trace_sqrt)


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subset_size: int = 1000, subsets: int = 10,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel (x.y/d + 1)^3,
    averaged over random subsets; returns (mean, std). Unbiased, so usable at small N."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(f1), len(f2))
    d = f1.shape[1]
    values = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = [(a @ b.T / d + 1) ** 3 for a, b in [(x, x), (y, y), (x, y)]]
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def _to_numpy_images(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) float64 in [0, 1]."""
    return ((images.detach().cpu().double() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Eq. 12 for two (H, W, C) images in [0, 1] (scikit-image, Gaussian-free 7x7 window)."""
    from skimage.metrics import structural_similarity
    if a.shape[-1] == 1:
        return float(structural_similarity(a[..., 0], b[..., 0], data_range=1.0))
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1))


def ssim_random_pairs(generated: torch.Tensor, real: torch.Tensor, seed: int = 0) -> float:
    """Mean SSIM of each generated image with a randomly drawn real image of the same class
    (fixed seed): the column comparable with the paper's, which does not say how it pairs."""
    g, r = _to_numpy_images(generated), _to_numpy_images(real)
    idx = np.random.default_rng(seed).integers(0, len(r), len(g))
    return float(np.mean([ssim(g[i], r[j]) for i, j in enumerate(idx)]))


def ssim_matrix(a: torch.Tensor, b: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """SSIM (Eq. 12) of every image of ``a`` (N, C, H, W) with every image of ``b`` (M, C, H, W),
    both in [-1, 1], as an (N, M) float64 tensor: ``ssim`` for all pairs at once. scikit-image's
    definition (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03, data range 1, the
    map's 3-pixel border dropped, channels averaged); the windows that survive the crop lie inside
    the image, so a 'valid' 7x7 average pool computes them exactly."""
    import torch.nn.functional as F
    x, y = [((t.detach().cpu().double() + 1) / 2).clamp(0, 1) for t in (a, b)]
    box = lambda t: F.avg_pool2d(t, 7, stride=1)                     # noqa: E731
    cov, c1, c2 = 49 / 48, 0.01 ** 2, 0.03 ** 2
    uy, vy = box(y), cov * (box(y * y) - box(y) ** 2)
    rows = []
    for xs in x.split(chunk):
        ux, vx = box(xs)[:, None], cov * (box(xs * xs) - box(xs) ** 2)[:, None]      # (n, 1, C, h, w)
        n, m = len(xs), len(y)
        uxy = box((xs[:, None] * y[None]).flatten(0, 1)).view(n, m, *uy.shape[1:])
        vxy = cov * (uxy - ux * uy)
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        rows.append(s.flatten(2).mean(-1))
    return torch.cat(rows)


def ssim_nearest_real(generated: torch.Tensor, real: torch.Tensor, max_real: int = 200) -> float:
    """Mean over generated images of their best SSIM against the first ``max_real`` real
    images: how close each sample comes to some real image (high for copies, too)."""
    return float(ssim_matrix(generated, real[:max_real]).max(dim=1).values.mean())


def cache_path(dataset: str, classes, split: str, n: int) -> Path:
    from qdm.data import cache_root
    label = "all" if classes is None else "-".join(map(str, classes))
    return cache_root() / "fid_stats" / f"{dataset}-{label}-{split}-{n}.npz"


def reference_features(dataset: str, classes, split: str, n: int, model, device="cpu",
                       data_dir: str | None = None) -> np.ndarray:
    """Inception features of the first ``n`` real images of a class and split, cached on
    disk keyed by dataset, classes, split and n (the cache is rebuilt if unreadable)."""
    from qdm.checkpoint import atomic_write
    from qdm.data import load_images
    path = cache_path(dataset, classes, split, n)
    if path.exists():
        try:
            return np.load(path)["features"]
        except Exception:
            pass
    images = load_images(dataset, split, classes, data_dir)[:n]
    feats = inception_features(images, model, device=device)
    atomic_write(path, lambda tmp: np.savez(tmp, features=feats))
    return feats


def paper_protocol(generated: torch.Tensor, dataset: str, model, n: int = 5, device="cpu",
                   data_dir: str | None = None) -> dict:
    """The paper's own measurement, imitated: the first ``n`` generated images (5 in the paper,
    later 13) against the first ``n`` *training* images of *all* classes, SSIM pairing image i
    with image i, FID from these n feature vectors (a rank-deficient 2048 x 2048 covariance,
    so the number is dominated by small-sample bias). For comparison with our protocol only."""
    from qdm.data import load_images
    g = generated[:n]
    real = load_images(dataset, "train", None, data_dir)[:len(g)]
    fid = frechet_distance(inception_features(g, model, device=device), inception_features(real, model, device=device))
    pairs = zip(_to_numpy_images(g), _to_numpy_images(real))
    return {"FID": fid, "SSIM": float(np.mean([ssim(a, b) for a, b in pairs])), "n": len(g)}
