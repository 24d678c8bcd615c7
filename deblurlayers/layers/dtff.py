"""DTFF: discriminative temporal feature fusion (DSTNet, Pan et al., CVPR 2023, §3.2)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..ops import pixel_dynamic_filter
from ..utils import cat_channels, check_input, check_shape, empty_batch, pad_to_multiple
from .blocks import ResBlock

__all__ = ["PixelDynamicKernels", "DTFF"]


class PixelDynamicKernels(nn.Module):
    """D_p: a ``k x k`` kernel per pixel and channel, predicted from the map it filters.

    AvgPool 4 -> 3 ResBlocks -> MaxPool 2 -> 3 ResBlocks -> 1x1 conv ``C -> k*k*C`` gives the
    kernel map at 1/8 resolution; :func:`deblurlayers.ops.pixel_dynamic_filter` upsamples it
    bilinearly on the fly (as the official ``F.interpolate(scale_factor=8)``) and filters the input
    (zero padding, no normalisation, no bias). Official name ``IDynamicDWConv`` (``kpn_pixel.py``);
    parameter names match it.

    H and W that are not multiples of 8 are padded (reflect, bottom/right) and the result cropped
    back; the official code requires multiples of 8.

    Args:
        channels: C.
        kernel_size: k (3 in DSTNet).

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)``
    """

    def __init__(self, channels: int = 64, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        self.Block1 = nn.Sequential(*[ResBlock(channels) for _ in range(3)])
        self.Block2 = nn.Sequential(*[ResBlock(channels) for _ in range(3)])
        self.tokernel = nn.Conv2d(channels, kernel_size * kernel_size * channels, 1)
        self.avg_pool = nn.AvgPool2d(4, 4)
        self.max_pool = nn.MaxPool2d(2, 2)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(N, k*k*C, H/8, W/8)`` kernel map of ``x`` (H, W multiples of 8)."""
        return self.tokernel(self.Block2(self.max_pool(self.Block1(self.avg_pool(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "N C H W", name="x", sizes={"C": self.channels})
        padded, (h, w) = pad_to_multiple(x, 8)
        out = pixel_dynamic_filter(padded, self.kernels(padded), self.kernel_size)
        return out[..., :h, :w]


class _ResidualStack(nn.Module):
    """``main.0.{i}``: the official container path of the refinement ResBlocks."""

    def __init__(self, channels: int, num_blocks: int) -> None:
        super().__init__()
        blocks = nn.Sequential(*[ResBlock(channels, init_scale=0.1) for _ in range(num_blocks)])
        self.main = nn.Sequential(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class DTFF(nn.Module):
    """Discriminative temporal feature fusion: one step ``h' = F(x, h)`` (DSTNet eqs. 3-4).

    1. ``[a | b] = LeakyReLU(conv1([x, h]))`` (3x3, 2P -> 2P; current features first);
    2. ``v = a * sigmoid(conv2(a)) + b * sigmoid(conv3(b))`` (eq. 3);
    3. ``v~ = D_p(v)``: per-pixel, per-channel 3x3 filters predicted from v (eq. 4,
       :class:`PixelDynamicKernels`);
    4. ``h' = ResBlocks(v~)`` (``num_blocks`` residual blocks, 15 in DSTNet, 30 in DSTNet-L).

    ``h'`` is both the new propagation state and this frame's output. :meth:`propagate` runs the
    step over a clip from a zero state, as WaveletFP does in each direction.

    Paper vs official code (the default follows the code): the paper leaves out that D_p's
    filters are per channel, predicted at 1/8 resolution and upsampled bilinearly, unnormalised;
    the code's parameter names are kept (``conv1``-``conv3``, ``kernel_conv_pixel``,
    ``resblock_bcakward2d.main.0.{i}``, sic), 171·P² + 25·P + nb·(18·P² + 2·P) parameters
    (1,809,856 at P = 64, nb = 15).

    Args:
        channels: P, the propagation width (64 in DSTNet, 96 in DSTNet-L).
        num_blocks: refinement ResBlocks (15).
        kernel_size: D_p's kernel size (3).

    Shape:
        - x, h: ``(B, P, H, W)`` (any H, W; D_p pads to multiples of 8 internally).
        - Output: ``(B, P, H, W)``.

    Example:
        >>> step = DTFF(channels=16, num_blocks=2)
        >>> x, h = torch.randn(2, 16, 24, 24), torch.zeros(2, 16, 24, 24)
        >>> step(x, h).shape
        torch.Size([2, 16, 24, 24])
    """

    def __init__(self, channels: int = 64, num_blocks: int = 15, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.kernel_conv_pixel = PixelDynamicKernels(channels, kernel_size)
        self.resblock_bcakward2d = _ResidualStack(channels, num_blocks)  # sic: the official name

    def forward(self, x: torch.Tensor, h: Optional[torch.Tensor] = None) -> torch.Tensor:
        dims = check_input(x, "B P H W", name="x", like=self, sizes={"P": self.channels}, minimum={"H": 1, "W": 1})
        if h is None:
            h = torch.zeros_like(x)
        else:
            check_input(h, "B P H W", name="h", like=self, sizes=dims)
        if dims["B"] == 0:
            return empty_batch(self, x, h)
        a, b = self.act(self.conv1(cat_channels([x, h], dim=1))).chunk(2, dim=1)
        v = a * torch.sigmoid(self.conv2(a)) + b * torch.sigmoid(self.conv3(b))
        return self.resblock_bcakward2d(self.kernel_conv_pixel(v))

    def propagate(self, features: torch.Tensor, reverse: bool = False, start: str = "zeros") -> torch.Tensor:
        """Run the step over a clip: ``h_t = F(x_t, h_{t-1})`` (``h_{t+1}`` if ``reverse``).

        Args:
            features: ``(B, T, P, H, W)``.
            reverse: propagate from the last frame to the first.
            start: ``"zeros"``: the first frame is fused with a zero state (DSTNet's code);
                ``"input"``: the first state is the first frame's features themselves, with no
                fusion (DSTNet's eqs. 7-8).

        Returns:
            ``(B, T, P, H, W)``: the state after each frame.
        """
        check_input(features, "B T P H W", name="features", like=self, sizes={"P": self.channels},
                    minimum={"T": 1, "H": 1, "W": 1})
        if start not in ("zeros", "input"):
            raise ValueError(f"start: expected 'zeros' or 'input', got {start!r}")
        order = list(range(features.shape[1]))
        if reverse:
            order.reverse()
        outputs = [None] * features.shape[1]
        first = order[0]
        h = outputs[first] = features[:, first] if start == "input" else self(features[:, first])
        for t in order[1:]:
            h = outputs[t] = self(features[:, t], h)
        return torch.stack(outputs, dim=1)
