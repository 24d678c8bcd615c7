"""FSTANet (derived): its documented parameter count, the residual around the attention and the
reference frame."""
import torch

from deblurlayers.models import (FSTANet)
from helpers import count_parameters
from model_cases import (clip, small)


def test_fstanet_parameter_count_follows_its_documented_architecture():
    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + c_out

    def dense_block(c, growth=32, layers=4):
        return sum(conv(c + i * growth, growth, 3) for i in range(layers)) + conv(c + layers * growth, c, 1)

    def fsta(c, m=8, n=4):
        return conv(c, m, 1) + (c * n * 3 + n) + conv(c, m * n, 3)

    widths = (32, 64, 128)
    encoder = sum(conv(c_in, c, 3) + dense_block(c) for c_in, c in zip((3, 32, 64), widths))
    decoder = dense_block(128) + sum(conv(c, c // 2, 3) + dense_block(c // 2) for c in (128, 64)) + conv(32, 3, 3)
    expected = encoder + sum(fsta(c) for c in widths) + decoder
    assert count_parameters(FSTANet()) == expected == 1_204_935  # the figure in docs/models/fstanet.md


def test_fstanet_residual_and_reference():
    model = small("fstanet").eval()
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
    x = clip("fstanet", batch=1)
    torch.testing.assert_close(model(x), x[:, 2])
    torch.testing.assert_close(model(x, reference=0), x[:, 0])


