"""Gradient map and gradient-guided SFT branch (ERDN, Jiang et al., ECCV 2022, §3.3, eqs. 6-7).

ERDN predicts the gradient map of the sharp frame with a small encoder-decoder that reads the
restoration branch's encoder features at three scales, and modulates those features with
spatial feature transforms (``feat·α + β``) computed from its own decoder features.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..utils import cat_channels, check_floating, check_input, check_shape, empty_batch
from .blocks import ResBlock

__all__ = ["GradientMap", "SFTGradientBranch", "sft"]

PADDINGS = ("zeros", "replicate")


class GradientMap(nn.Module):
    """Per-channel gradient magnitude ``G(I) = sqrt(gx² + gy² + eps)`` (ERDN eq. 6).

    ``gx(y, x) = I(y, x+1) - I(y, x-1)`` and ``gy(y, x) = I(y+1, x) - I(y-1, x)`` (central
    differences without the 1/2), one depthwise convolution for all channels. ``padding="zeros"``
    (default) is the official code: border pixels see a zero outside the image, so an image's
    border has a large gradient; ``"replicate"`` does not.

    The kernels are the non-trainable buffers ``weight_h`` / ``weight_v`` ``(1, 1, 3, 3)``, the
    official names, so ERDN's ``get_grad.*`` entries load.

    Args:
        eps: added under the square root (official 1e-6), which keeps the gradient finite at 0.
        padding: ``"zeros"`` or ``"replicate"``.

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, C, H, W)``

    Example:
        >>> img = torch.zeros(1, 1, 3, 3); img[0, 0, 1, 2] = 1.0
        >>> GradientMap()(img)[0, 0, 1, 1].item()   # gx = 1, gy = 0
        1.0000004768371582
    """

    def __init__(self, eps: float = 1e-6, padding: str = "zeros") -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding: expected one of {PADDINGS}, got {padding!r}")
        if eps < 0:
            raise ValueError(f"eps: expected >= 0, got {eps}")
        self.eps, self.padding = eps, padding
        self.register_buffer("weight_h", torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
                             .view(1, 1, 3, 3))
        self.register_buffer("weight_v", torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
                             .view(1, 1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = check_shape(x, "B C H W", name="x")
        check_floating(x, name="x")
        c = dims["C"]
        kernels = torch.cat((self.weight_h, self.weight_v)).to(x.dtype).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
        padded = F.pad(x, (1, 1, 1, 1), mode="constant" if self.padding == "zeros" else "replicate")
        grads = rearrange(F.conv2d(padded, kernels, groups=c), "b (c two) h w -> two b c h w", two=2)
        return torch.sqrt(grads[0] ** 2 + grads[1] ** 2 + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, padding={self.padding!r}"


def sft(feat: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Spatial feature transform as ERDN applies it: ``feat·α + β`` (no ``+1`` on α, no sigmoid).

    Shapes: all three ``(B, C, H, W)``; no broadcasting, so that a mismatched scale is an error.
    """
    dims = check_shape(feat, "B C H W", name="feat")
    check_shape(alpha, "B C H W", name="alpha", sizes=dims)
    check_shape(beta, "B C H W", name="beta", sizes=dims)
    return feat * alpha + beta


def _res_blocks(channels: int, count: int) -> List[nn.Module]:
    return [ResBlock(channels, negative_slope=0.0) for _ in range(count)]


def _conv_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


def _up_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True))


def _condition(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 3, padding=1))


class SFTGradientBranch(nn.Module):
    """ERDN's gradient branch (official ``RECONS_GRAD``): gradient map prediction and SFT parameters.

    With ``F = n_feat`` (32), restoration features ``s0 (F, H)``, ``e1 (2F, H/2)``, ``e2 (4F, H/4)``
    (its ``inBlock`` / ``encoder_first`` / ``encoder_second`` outputs) and ReLU activations:

    - ``in_layer``: conv3×3(in -> F), ReLU, ``in_res`` ResBlocks; ``inBlock``: cat with ``s0``,
      ``n_res`` ResBlocks(2F), conv(2F -> F) -> ``g0``;
    - ``down_first``: stride-2 conv(F -> 2F), ReLU; cat with ``e1``; ``encoder_first``: ResBlocks(4F),
      conv(4F -> 2F) -> ``g1``; ``down_second`` / ``encoder_second`` likewise -> ``g2 (4F, H/4)``;
    - ``decoder_second``: ResBlocks(4F) -> ``d2``; ``decoder_second_up``: ConvT(4F -> 2F), ReLU;
      ``decoder_first``: ResBlocks(2F) on ``up + g1`` -> ``d1``; ``decoder_first_up``: ConvT(2F -> F);
      ``outBlock``: ResBlocks(F) on ``up + g0`` -> ``d0``;
    - per scale ``j``: ``α_j = condition_scale.j(d_j)``, ``β_j = condition_shift.j(d_j)``
      (conv3×3, ReLU, conv3×3), and the gradient map ``recons_output(d0)`` (conv3×3(F -> out)).

    The restoration branch then uses ``sft(s0, α0, β0)``, ``sft(e1, α1, β1)``, ``sft(e2, α2, β2)``
    in place of its encoder features. Parameter names are the official ones; with the defaults the
    module has 5,296,099 parameters.

    Args:
        in_channels: channels of the input gradient map (3: RGB).
        out_channels: channels of the predicted gradient map (3).
        n_feat: F.
        n_res: ResBlocks per stage (official 2).
        in_res: ResBlocks in ``in_layer`` (official 4).

    Shape:
        - grad: ``(B, in_channels, H, W)``, H and W multiples of 4 (two stride-2 stages; ERDN
          models need multiples of 8 for their alignment pyramid)
        - feats: ``[s0 (B, F, H, W), e1 (B, 2F, H/2, W/2), e2 (B, 4F, H/4, W/4)]``
        - Output: ``(alphas, betas, grad_map)``: ``alphas[j]``, ``betas[j]`` shaped like ``feats[j]``,
          ``grad_map (B, out_channels, H, W)``

    Example:
        >>> branch = SFTGradientBranch(n_feat=4)
        >>> feats = [torch.randn(1, 4 << j, 16 >> j, 16 >> j) for j in range(3)]
        >>> alphas, betas, grad = branch(torch.rand(1, 3, 16, 16), feats)
        >>> [a.shape[1] for a in alphas], grad.shape
        ([4, 8, 16], torch.Size([1, 3, 16, 16]))
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, n_feat: int = 32, n_res: int = 2,
                 in_res: int = 4) -> None:
        super().__init__()
        f = n_feat
        self.in_channels, self.n_feat = in_channels, n_feat
        self.in_layer = nn.Sequential(*_conv_relu(in_channels, f), *_res_blocks(f, in_res))
        self.inBlock = nn.Sequential(*_res_blocks(2 * f, n_res), nn.Conv2d(2 * f, f, 3, padding=1))
        self.down_first = _conv_relu(f, 2 * f, stride=2)
        self.encoder_first = nn.Sequential(*_res_blocks(4 * f, n_res), nn.Conv2d(4 * f, 2 * f, 3, padding=1))
        self.down_second = _conv_relu(2 * f, 4 * f, stride=2)
        self.encoder_second = nn.Sequential(*_res_blocks(8 * f, n_res), nn.Conv2d(8 * f, 4 * f, 3, padding=1))
        self.decoder_second = nn.Sequential(*_res_blocks(4 * f, n_res))
        self.decoder_second_up = _up_relu(4 * f, 2 * f)
        self.decoder_first = nn.Sequential(*_res_blocks(2 * f, n_res))
        self.decoder_first_up = _up_relu(2 * f, f)
        self.outBlock = nn.Sequential(*_res_blocks(f, n_res))
        self.recons_output = nn.Conv2d(f, out_channels, 3, padding=1)
        self.condition_scale = nn.ModuleList(_condition(f << j) for j in range(3))
        self.condition_shift = nn.ModuleList(_condition(f << j) for j in range(3))

    def forward(self, grad: torch.Tensor, feats: Sequence[torch.Tensor]
                ) -> Tuple[List[torch.Tensor], List[torch.Tensor], torch.Tensor]:
        s0, e1, e2 = self._check_inputs(grad, feats)
        if grad.shape[0] == 0:
            return empty_batch(self, grad, feats)
        g0 = self.inBlock(cat_channels((self.in_layer(grad), s0), dim=1))
        g1 = self.encoder_first(cat_channels((self.down_first(g0), e1), dim=1))
        g2 = self.encoder_second(cat_channels((self.down_second(g1), e2), dim=1))
        d2 = self.decoder_second(g2)
        d1 = self.decoder_first(self.decoder_second_up(d2) + g1)
        d0 = self.outBlock(self.decoder_first_up(d1) + g0)
        decoded = (d0, d1, d2)
        alphas = [scale(d) for scale, d in zip(self.condition_scale, decoded)]
        betas = [shift(d) for shift, d in zip(self.condition_shift, decoded)]
        return alphas, betas, self.recons_output(d0)

    def _check_inputs(self, grad: torch.Tensor, feats: Sequence[torch.Tensor]):
        dims = check_input(grad, "B C H W", name="grad", like=self, sizes={"C": self.in_channels},
                           minimum={"H": 4, "W": 4})
        h, w = dims["H"], dims["W"]
        if h % 4 or w % 4:
            raise ValueError(f"grad: expected H and W divisible by 4 (two stride-2 stages), got {h}x{w} "
                             "(pad the frames first)")
        if not isinstance(feats, (list, tuple)) or len(feats) != 3:
            raise ValueError(f"feats: expected 3 feature maps [s0, e1, e2], got "
                             f"{len(feats) if isinstance(feats, (list, tuple)) else type(feats).__name__}")
        for j, t in enumerate(feats):
            check_shape(t, "B C H W", name=f"feats[{j}]",
                        sizes={"B": dims["B"], "C": self.n_feat << j, "H": h >> j, "W": w >> j})
        return feats
