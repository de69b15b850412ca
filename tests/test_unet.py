import pytest
import torch
from torch import nn

from qdm.unet import UNet, count_parameters


@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_equals_input_shape(channels):
    m = UNet(channels)
    x = torch.randn(5, channels, 28, 28)
    assert m(x, torch.randint(0, 1000, (5,))).shape == x.shape


class Recorder(nn.Module):
    """A gate that records what it sees and scales the map, as Eq. 8 does."""
    def __init__(self, scale):
        super().__init__()
        self.scale, self.seen = scale, None

    def forward(self, h):
        self.seen = h.shape
        return h * self.scale


def test_gate_sees_the_bottleneck_and_changes_the_output():
    torch.manual_seed(0)
    plain = UNet(1)
    gated = UNet(1, gate=Recorder(0.0))
    gated.load_state_dict(plain.state_dict(), strict=False)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([10, 700])
    out = gated(x, t)
    assert gated.gate.seen == (2, 128, 7, 7)
    assert not torch.allclose(out, plain(x, t))
    gated.gate.scale = 1.0
    assert torch.allclose(gated(x, t), plain(x, t))   # identity gate = classical model


def test_time_conditioning_matters():
    m = UNet(1)
    x = torch.randn(1, 1, 28, 28)
    assert not torch.allclose(m(x, torch.tensor([0])), m(x, torch.tensor([999])))


def test_parameter_count_and_bad_shape():
    m = UNet(1)
    assert count_parameters(m) == sum(p.numel() for p in m.parameters())
    assert count_parameters(UNet(3)) > count_parameters(m)
    with pytest.raises(ValueError, match="expects images of shape"):
        m(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]))
