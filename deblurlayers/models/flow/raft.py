"""RAFT (Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow", ECCV 2020), the
large configuration: the flow estimator BSSTNet runs (its ``basicsr/archs/RAFT/raft.py``).

Pure PyTorch. Parameter names are the official ones, so ``raft-things.pth`` loads through
:func:`~deblurlayers.models.load_official` (which strips its ``module.`` prefix).
"""
from __future__ import annotations

from typing import List, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .._checkpoint import StateDict, register_converter
from ...utils import cat_channels, check_input, check_shape, empty_batch, in_layout_of

__all__ = ["RAFT", "CorrelationPyramid", "convex_upsample"]

STRIDE = 8  # features, correlation and the recurrence live at 1/8 resolution


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a normalisation and ReLU after each; a strided 1x1 projection of the
    input (with its own normalisation) when the block downsamples; ReLU after the sum.

    As in the official code, ``norm3`` and ``downsample.1`` are the same module, so the state
    dict lists its tensors under both names (``parameters()`` counts them once)."""

    def __init__(self, in_channels: int, channels: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1, self.norm2 = _norm(norm, channels), _norm(norm, channels)
        self.downsample = None
        if stride != 1:
            self.norm3 = _norm(norm, channels)
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        return self.relu((x if self.downsample is None else self.downsample(x)) + y)


def _norm(kind: str, channels: int) -> nn.Module:
    # the feature encoder normalises each image on its own; the context encoder uses batch norm
    return _InstanceNorm2d(channels) if kind == "instance" else nn.BatchNorm2d(channels)


class _InstanceNorm2d(nn.InstanceNorm2d):
    """``InstanceNorm2d`` that returns its input's memory layout (PyTorch's returns NCHW)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_layout_of(super().forward(x), x)


class Encoder(nn.Module):
    """RAFT's ``BasicEncoder``: 7x7 stride-2 conv, three stages of two residual blocks (64, 96, 128
    channels; the last two stride 2), 1x1 conv to ``out_channels``: ``(N, 3, H, W) -> (N, out, H/8, W/8)``."""

    def __init__(self, out_channels: int = 256, norm: str = "instance") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.norm1 = _norm(norm, 64)
        self.relu1 = nn.ReLU(inplace=True)
        widths, strides, previous = (64, 96, 128), (1, 2, 2), 64
        for index, (width, stride) in enumerate(zip(widths, strides), start=1):
            setattr(self, f"layer{index}", nn.Sequential(ResidualBlock(previous, width, norm, stride),
                                                         ResidualBlock(width, width, norm)))
            previous = width
        self.conv2 = nn.Conv2d(previous, out_channels, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class CorrelationPyramid:
    """RAFT's all-pairs correlation volume and its lookup.

    ``C[p, q] = <f1(p), f2(q)> / sqrt(D)`` for every pixel pair of the two ``(N, D, h, w)``
    feature maps, average-pooled over ``q`` into ``levels`` levels. :meth:`lookup` samples, at
    every level ``l``, a ``(2r+1)²`` window around ``coords / 2^l`` bilinearly (zero outside):
    channel ``(l, a, b)`` reads ``q = coords / 2^l + (d_a, d_b)`` with ``d = -r..r`` along x for
    ``a`` and along y for ``b`` (the official channel order, which the update block's weights
    expect). The volume is built in fp32 (in fp64 for fp64 features), whatever autocast computes
    the features in.
    """

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int = 4, radius: int = 4) -> None:
        n, d, h, w = fmap1.shape
        self.levels, self.radius = levels, radius
        dtype = torch.promote_types(fmap1.dtype, torch.float32)
        corr = torch.einsum("ndp,ndq->npq", fmap1.flatten(2).to(dtype), fmap2.flatten(2).to(dtype)) / d ** 0.5
        volume = corr.reshape(n * h * w, 1, h, w)
        self.pyramid = [volume]
        for _ in range(levels - 1):
            volume = F.avg_pool2d(volume, 2, stride=2)
            self.pyramid.append(volume)

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """``(N, levels·(2r+1)², h, w)`` features at ``coords`` ``(N, 2, h, w)`` (x, y in pixels of level 0)."""
        n, _, h, w = coords.shape
        r = self.radius
        dtype = self.pyramid[0].dtype
        d = torch.arange(-r, r + 1, device=coords.device, dtype=dtype)
        # (a, b) -> (x offset d_a, y offset d_b)
        window = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        centres = rearrange(coords.to(dtype), "n two h w -> (n h w) 1 1 two")
        out = []
        for level, volume in enumerate(self.pyramid):
            points = centres / 2 ** level + window
            out.append(_sample_pixels(volume, points).view(n, h, w, -1))
        return rearrange(torch.cat(out, dim=-1), "n h w c -> n c h w")  # a channels-last view


def _sample_pixels(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``(M, 1, H, W)`` at pixel positions ``(M, a, b, 2)`` (x, y), zero outside."""
    h, w = volume.shape[-2:]
    scale = points.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    return F.grid_sample(volume, points * scale - 1, mode="bilinear", padding_mode="zeros", align_corners=True)


class MotionEncoder(nn.Module):
    """Correlation features and the current flow -> 128 motion features (126 learned + the flow)."""

    def __init__(self, corr_channels: int) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(192 + 64, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        c = F.relu(self.convc2(F.relu(self.convc1(corr), inplace=True)), inplace=True)
        f = F.relu(self.convf2(F.relu(self.convf1(flow), inplace=True)), inplace=True)
        return cat_channels((F.relu(self.conv(cat_channels((c, f), dim=1)), inplace=True), flow), dim=1)


class SeparableConvGRU(nn.Module):
    """A ConvGRU applied twice: with 1x5 kernels (``*1``), then with 5x1 kernels (``*2``)."""

    def __init__(self, hidden: int = 128, inputs: int = 256) -> None:
        super().__init__()
        for suffix, kernel, padding in (("1", (1, 5), (0, 2)), ("2", (5, 1), (2, 0))):
            for gate in "zrq":
                setattr(self, f"conv{gate}{suffix}", nn.Conv2d(hidden + inputs, hidden, kernel, padding=padding))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for suffix in "12":
            hx = cat_channels((h, x), dim=1)
            z = torch.sigmoid(getattr(self, f"convz{suffix}")(hx))
            r = torch.sigmoid(getattr(self, f"convr{suffix}")(hx))
            q = torch.tanh(getattr(self, f"convq{suffix}")(cat_channels((r * h, x), dim=1)))
            h = (1 - z) * h + z * q
        return h


class FlowHead(nn.Module):
    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, 256, 3, padding=1)
        self.conv2 = nn.Conv2d(256, 2, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(h), inplace=True))


class UpdateBlock(nn.Module):
    """RAFT's ``BasicUpdateBlock``: motion encoder, separable ConvGRU, flow head and the convex
    upsampling weights (scaled by 0.25, as the official code, to balance their gradients)."""

    def __init__(self, corr_channels: int, hidden: int = 128, context: int = 128) -> None:
        super().__init__()
        self.encoder = MotionEncoder(corr_channels)
        self.gru = SeparableConvGRU(hidden, context + 128)
        self.flow_head = FlowHead(hidden)
        self.mask = nn.Sequential(nn.Conv2d(hidden, 256, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(256, 9 * STRIDE ** 2, 1))

    def forward(self, h: torch.Tensor, context: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.gru(h, cat_channels((context, self.encoder(flow, corr)), dim=1))
        return h, 0.25 * self.mask(h), self.flow_head(h)


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor, factor: int = STRIDE) -> torch.Tensor:
    """RAFT's convex upsampling: each of the ``factor²`` sub-pixels of a coarse pixel is a convex
    combination (softmax of ``mask`` over 9 taps) of ``factor × flow`` in the 3x3 neighbourhood
    (zero padded).

    Shape: flow ``(N, 2, h, w)``, mask ``(N, 9·factor², h, w)`` -> ``(N, 2, factor·h, factor·w)``.
    """
    n, _, h, w = flow.shape
    weights = rearrange(mask, "n (k fy fx) h w -> n 1 k fy fx h w", k=9, fy=factor).softmax(dim=2)
    taps = rearrange(F.unfold(factor * flow, 3, padding=1), "n (two k) (h w) -> n two k 1 1 h w", two=2, h=h)
    up = (weights * taps).sum(dim=2)
    return rearrange(up, "n two fy fx h w -> n two (h fy) (w fx)")


class RAFT(nn.Module):
    """RAFT-large: the optical flow from ``image1`` to ``image2`` (where each pixel of image 1 moved).

    Both images go through the feature encoder ``fnet`` (instance norm); ``image1`` through the
    context encoder ``cnet`` (batch norm), split into the GRU's initial state (tanh) and its context
    (ReLU). From zero flow, ``iters`` updates look up the 4-level all-pairs correlation
    (:class:`CorrelationPyramid`, radius 4) at the current estimate and refine it at 1/8
    resolution; each estimate is upsampled by :func:`convex_upsample`. As in the official code,
    the estimate is detached between iterations.

    Images are in [0, 1] and mapped to [-1, 1] (BSSTNet's copy of RAFT takes [-1, 1]; the original
    takes [0, 255]). Any ``H x W``: the images are padded by replication, symmetrically, to
    multiples of 8 (as RAFT's ``InputPadder``) and to at least 64 pixels (the coarsest correlation
    level needs one pixel; the official code fails below that), and the flow is cropped back. Call ``.eval()`` for
    inference: the context encoder's batch norm uses its running statistics then. The correlation
    is computed in fp32; under ``torch.autocast`` the convolutions run in low precision.

    5,257,536 parameters with the official names (``raft-things.pth`` loads strictly).

    Shape:
        - image1, image2: ``(N, 3, H, W)``
        - Output: the flow ``(N, 2, H, W)`` in pixels, ``(dx, dy)``; with ``return_all=True`` the
          list of all ``iters`` upsampled estimates (the last one is the output)

    Example:
        >>> raft = RAFT().eval()
        >>> raft(torch.rand(1, 3, 36, 52), torch.rand(1, 3, 36, 52), iters=2).shape
        torch.Size([1, 2, 36, 52])
    """

    def __init__(self, levels: int = 4, radius: int = 4) -> None:
        super().__init__()
        self.levels, self.radius = levels, radius
        self.hidden = self.context = 128
        self.fnet = Encoder(256, norm="instance")
        self.cnet = Encoder(self.hidden + self.context, norm="batch")
        self.update_block = UpdateBlock(levels * (2 * radius + 1) ** 2, self.hidden, self.context)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 20,
                return_all: bool = False) -> Union[torch.Tensor, List[torch.Tensor]]:
        dims = check_input(image1, "N C H W", name="image1", like=self, sizes={"C": 3}, minimum={"H": 1, "W": 1})
        check_shape(image2, "N C H W", name="image2", sizes=dims)
        if not isinstance(iters, int) or iters < 1:
            raise ValueError(f"iters: expected an int >= 1, got {iters!r}")
        if dims["N"] == 0:
            return empty_batch(self, image1, image2, iters, return_all)
        # every correlation level needs at least one pixel: 1/8 resolution >= 2^(levels-1)
        (image1, image2), crop = _pad_to_stride(image1, image2, min_size=STRIDE << (self.levels - 1))
        fmap1, fmap2 = self.fnet(torch.cat((2 * image1 - 1, 2 * image2 - 1), dim=0)).chunk(2, dim=0)
        corr = CorrelationPyramid(fmap1, fmap2, self.levels, self.radius)
        state, context = self.cnet(2 * image1 - 1).split((self.hidden, self.context), dim=1)
        # channel slices of a channels-last map are not dense: the activations would come out NCHW
        state, context = in_layout_of(torch.tanh(state), fmap1), in_layout_of(torch.relu(context), fmap1)
        n, _, h, w = fmap1.shape
        # Flow and coordinates in fp32 under autocast (fp64 for an fp64 model), as the official code.
        precise = torch.promote_types(image1.dtype, torch.float32)
        coords0 = _pixel_grid(n, h, w, fmap1.device, precise)
        coords1 = coords0
        estimates = []
        for i in range(iters):
            coords1 = coords1.detach()
            flow = coords1 - coords0
            state, mask, delta = self.update_block(state, context, in_layout_of(corr.lookup(coords1), state),
                                                   in_layout_of(flow.to(state.dtype), state))
            coords1 = coords1 + delta.to(precise)
            if return_all or i == iters - 1:
                estimates.append(crop(convex_upsample(coords1 - coords0, mask.to(precise))))
        return estimates if return_all else estimates[-1]


def _pixel_grid(n: int, h: int, w: int, device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack((xs, ys)).expand(n, 2, h, w)


def _pad_to_stride(*images: torch.Tensor, min_size: int = STRIDE):
    h, w = images[0].shape[-2:]
    pad_h, pad_w = max((-h) % STRIDE, min_size - h), max((-w) % STRIDE, min_size - w)
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if not any(pads):
        return images, lambda flow: flow
    padded = tuple(F.pad(x, pads, mode="replicate") for x in images)
    return padded, lambda flow: flow[..., pads[2]:pads[2] + h, pads[0]:pads[0] + w]


@register_converter(RAFT)
def convert_raft(model: nn.Module, state: StateDict) -> Tuple[StateDict, dict]:
    """``raft-things.pth`` (after ``load_official`` strips ``module.``) has the model's names."""
    return dict(state), {}
