import torch

from qdm.embedding import TimeEmbedding, sinusoidal_embedding


def test_shape_and_sin_cos_structure():
    t = torch.tensor([0, 1, 17, 999])
    e = sinusoidal_embedding(t, 128)
    assert e.shape == (4, 128)
    sin, cos = e[:, :64], e[:, 64:]
    assert torch.allclose(sin ** 2 + cos ** 2, torch.ones(4, 64), atol=1e-6)
    assert torch.all(e[0, :64] == 0) and torch.all(e[0, 64:] == 1)     # t = 0
    assert torch.allclose(e[:, 0], torch.sin(t.float()))                 # highest frequency is 1
    assert torch.allclose(e[:, 63], torch.sin(t.float() / 10000), atol=1e-7)  # lowest is 1/10000


def test_embedding_distinguishes_timesteps():
    e = sinusoidal_embedding(torch.arange(1000), 128)
    d = torch.cdist(e, e)
    assert (d + torch.eye(1000) * 1e9).min() > 0.1   # no two timesteps share an embedding


def test_time_embedding_is_linear_of_eq5():
    m = TimeEmbedding(128, 128)
    t = torch.tensor([3, 500])
    assert m(t).shape == (2, 128)
    assert torch.allclose(m(t), m.linear(sinusoidal_embedding(t, 128)))
