
import numpy as np
import pytest
import torch

from conftest import INCEPTION_WEIGHTS, needs_mnist
from qdm import metrics


@pytest.fixture(scope="module")
def fid_model():
    """pytorch-fid's Inception with its real weights when present (CI: ../shared/data/torch_hub),
    else the same network with random weights (the properties tested hold for any weights)."""
    if INCEPTION_WEIGHTS.exists():
        return metrics.inception()
    import pytorch_fid.inception as pi
    from unittest import mock
    torch.manual_seed(0)
    with mock.patch.object(pi, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda *a, **k: None):
        return pi.InceptionV3([3]).eval()


def blobs(n, seed, channels=1, noise=0.0):
    """n images of a bright disc at random places, quantised to 8 bits, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    c = 8 + 12 * torch.rand(n, 2, generator=g)
    disc = (((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) < 30).float()
    x = disc[:, None].repeat(1, channels, 1, 1) + noise * torch.randn(n, channels, 28, 28, generator=g)
    return (x.clamp(0, 1) * 255).round() / 127.5 - 1


def test_fid_zero_for_same_set_grows_with_noise_and_is_symmetric(fid_model):
    real = metrics.inception_features(blobs(24, 0), fid_model)
    other = metrics.inception_features(blobs(24, 1), fid_model)
    noisy = metrics.inception_features(blobs(24, 1, noise=0.3), fid_model)
    noisier = metrics.inception_features(blobs(24, 1, noise=0.8), fid_model)
    assert abs(metrics.frechet_distance(real, real)) < 1e-3
    d_other, d_noisy, d_noisier = (metrics.frechet_distance(real, f) for f in (other, noisy, noisier))
    assert d_other < d_noisy < d_noisier
    assert metrics.frechet_distance(other, real) == pytest.approx(d_other, rel=1e-6)


def test_fid_equals_pytorch_fid_on_the_same_images(tmp_path, fid_model, monkeypatch):
    from PIL import Image
    from pytorch_fid import fid_score
    sets = [blobs(16, 3), blobs(16, 4, noise=0.2)]
    for k, images in enumerate(sets):
        (tmp_path / str(k)).mkdir()
        for i, img in enumerate(images):
            u8 = ((img[0] + 1) * 127.5).round().byte().numpy()
            Image.fromarray(u8).save(tmp_path / str(k) / f"{i}.png")
    from unittest import mock
    monkeypatch.setattr(fid_score, "InceptionV3", mock.Mock(return_value=fid_model, BLOCK_INDEX_BY_DIM={2048: 3}))
    theirs = fid_score.calculate_fid_given_paths([str(tmp_path / "0"), str(tmp_path / "1")], 16, "cpu", 2048,
                                                 num_workers=0)
    ours = metrics.frechet_distance(*(metrics.inception_features(s, fid_model) for s in sets))
    assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-3)


@pytest.mark.parametrize("n1, n2", [(600, 500), (40, 30)])   # more samples than dimensions, and fewer
def test_frechet_distance_equals_pytorch_fids_routine(n1, n2):
    """Both of our routes (eigendecompositions; singular values when N < d) against pytorch-fid's sqrtm."""
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(0)
    f1 = rng.standard_normal((n1, 300)) * np.linspace(0.2, 3, 300)
    f2 = rng.standard_normal((n2, 300)) @ rng.standard_normal((300, 300)) * 0.2 + 0.3
    theirs = calculate_frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert metrics.frechet_distance(f1, f2) == pytest.approx(theirs, rel=1e-6 if n1 < 300 else 1e-9)


def test_kid_is_unbiased_and_detects_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    same, _ = metrics.kernel_inception_distance(a, b, subset_size=100, subsets=20)
    shifted, _ = metrics.kernel_inception_distance(a, b + 0.5, subset_size=100, subsets=20)
    assert abs(same) < 0.02 < shifted


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_is_one_for_itself_and_drops_with_noise(channels):
    x = blobs(4, 5, channels)
    assert metrics.ssim_random_pairs(x[:1], x[:1]) == pytest.approx(1.0)
    s_small = metrics.ssim_random_pairs(blobs(4, 5, channels, noise=0.1), x[:1])
    s_large = metrics.ssim_random_pairs(blobs(4, 5, channels, noise=0.5), x[:1])
    assert 1 > s_small > s_large
    assert metrics.ssim_nearest_real(x, x) == pytest.approx(1.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matrix_equals_scikit_image_for_every_pair(channels):
    """The batched SSIM (a 'valid' 7x7 average pool) against skimage's structural_similarity,
    pair by pair, on discs with and without noise (more rows than one chunk) and uniform noise."""
    a = torch.cat([blobs(40, 1, channels), blobs(30, 2, channels, noise=0.3)])
    b = torch.cat([blobs(5, 3, channels, noise=0.1), torch.rand(4, channels, 28, 28) * 2 - 1, a[:2]])
    ga, gb = metrics._to_numpy_images(a), metrics._to_numpy_images(b)
    theirs = np.array([[metrics.ssim(x, y) for y in gb] for x in ga])
    mine = metrics.ssim_matrix(a, b, chunk=32)
    assert mine.shape == (70, 11) and mine.dtype == torch.float64
    np.testing.assert_allclose(mine.numpy(), theirs, rtol=0, atol=1e-12)
    assert metrics.ssim_nearest_real(a, b) == pytest.approx(theirs.max(axis=1).mean(), abs=1e-12)


def test_reference_features_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("QDM_CACHE", str(tmp_path))
    import qdm.data
    calls = []
    monkeypatch.setattr(qdm.data, "load_images", lambda *a, **k: calls.append(a) or blobs(6, 7))
    model = lambda x: [x.mean(dim=(2, 3), keepdim=True)]   # a stand-in feature extractor
    f1 = metrics.reference_features("mnist", [0], "test", 6, model)
    f2 = metrics.reference_features("mnist", [0], "test", 6, model)
    assert len(calls) == 1 and np.array_equal(f1, f2) and f1.shape == (6, 3)
    assert metrics.cache_path("mnist", [0], "test", 6).exists()


@needs_mnist
def test_paper_protocol_compares_with_the_first_real_images_of_all_digits(fid_model):
    from qdm.data import load_images
    train = load_images("mnist", "train", None)[:10]
    same = metrics.paper_protocol(train[:5], "mnist", fid_model)
    assert same["n"] == 5 and same["SSIM"] == pytest.approx(1.0) and abs(same["FID"]) < 1e-3
    other = metrics.paper_protocol(train[5:10], "mnist", fid_model)   # five other real digits
    assert other["SSIM"] < 0.5 and other["FID"] > 10 * max(abs(same["FID"]), 1e-3)


def test_compiled_inception_gives_the_same_features(fid_model):
    """Whole batches through the compiled twin (BatchNorm folded into the convolutions), the last,
    smaller batch eagerly: the features equal the eager network's to float rounding (relative 1e-4;
    features of size ~0.1-1); dynamo compiled a graph, and a failed compilation would fail here
    instead of falling back."""
    import copy
    import warnings
    from torch._dynamo.utils import counters
    images = blobs(10, 5, noise=0.3)
    eager = metrics.inception_features(images, fid_model, batch_size=4)
    fast = metrics.compile_inception(copy.deepcopy(fid_model))
    graphs = counters["stats"]["unique_graphs"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="torch.compile failed")
        compiled = metrics.inception_features(images, fast, batch_size=4)
    assert counters["stats"]["unique_graphs"] > graphs
    assert compiled.shape == eager.shape == (10, 2048)
    assert np.linalg.norm(compiled - eager) / np.linalg.norm(eager) < 1e-4
    assert np.abs(compiled[8:] - eager[8:]).max() == 0          # the last batch ran eagerly
    copied = metrics.inception_features(images, copy.deepcopy(fast), batch_size=4)
    assert np.array_equal(copied, eager)                  # a copy of the network has no compiled twin: eager
