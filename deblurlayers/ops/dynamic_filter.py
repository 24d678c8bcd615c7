"""Per-pixel dynamic filtering (DSTNet's D_p in DTFF).

``out[b, c, y, x] = sum_{ky, kx} K[b, g(c), ky, kx](y, x) * x[b, c, y + ky - r, x + kx - r]``
with zero padding, ``r = k // 2`` and ``g(c) = c // (C / G)``: every pixel of every
channel (or group of ``C / G`` consecutive channels) has its own ``k x k`` kernel.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange

from .. import flops as _flops
from .._native.registry import define
from ..utils import check_floating, check_same_device, check_shape
from ._backend import float32_under_autocast, keeps_memory_format, use_native

__all__ = ["pixel_dynamic_filter", "pixel_dynamic_filter_reference", "channel_dynamic_filter"]


@keeps_memory_format
@float32_under_autocast
def pixel_dynamic_filter(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Filter every pixel of every channel with its own ``k x k`` kernel.

    Args:
        x: ``(B, C, H, W)``.
        kernels: ``(B, G*k*k, Hk, Wk)``, channel ``g*k*k + ky*k + kx`` (DSTNet's layout). ``G = C``
            gives per-channel kernels; a divisor ``G`` of ``C`` shares each kernel between ``C/G``
            consecutive channels. ``(Hk, Wk) = (H, W)`` gives one kernel per pixel; a smaller map
            is upsampled bilinearly to ``(H, W)`` (``align_corners=False``, as
            ``F.interpolate(kernels, size=(H, W), mode="bilinear")``) inside the op, so the
            ``G*k*k*H*W`` full-resolution map is never stored (DSTNet predicts it at 1/8).
        kernel_size: odd ``k``.

    Returns:
        ``(B, C, H, W)``.

    Example:
        >>> x = torch.randn(1, 4, 16, 16)
        >>> delta = torch.zeros(1, 4 * 9, 2, 2); delta[:, 4::9] = 1   # centre tap of every channel
        >>> torch.allclose(pixel_dynamic_filter(x, delta), x)
        True
    """
    _check(x, kernels, kernel_size)
    if use_native("pixel_dynamic_filter", x):
        return torch.ops.deblurlayers.pixel_dynamic_filter(x, kernels, kernel_size)
    return pixel_dynamic_filter_reference(x, kernels, kernel_size)


@keeps_memory_format
@float32_under_autocast
def pixel_dynamic_filter_reference(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Upsample-then-unfold formulation of :func:`pixel_dynamic_filter` (DSTNet's own)."""
    _check(x, kernels, kernel_size)
    b, c, h, w = x.shape
    taps = kernel_size * kernel_size
    if kernels.shape[-2:] != (h, w):
        kernels = F.interpolate(kernels, size=(h, w), mode="bilinear", align_corners=False)
    patches = F.unfold(x, kernel_size, padding=kernel_size // 2)
    patches = rearrange(patches, "b (g c t) (h w) -> b g c t h w", g=kernels.shape[1] // taps, t=taps, h=h)
    weights = rearrange(kernels, "b (g t) h w -> b g t h w", t=taps)
    return rearrange(torch.einsum("bgcthw,bgthw->bgchw", patches, weights), "b g c h w -> b (g c) h w")


@keeps_memory_format
def channel_dynamic_filter(x: torch.Tensor, kernels: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Filter each channel of each sample with its own ``k x k`` kernel (DSTNet's D_c).

    ``out[b, c] = conv2d(x[b, c], kernels[b, c], padding=k // 2) + bias[c]`` (cross-correlation,
    zero padding). This is the grouped-convolution formulation (``B*C`` groups): it beat the
    native pixel filter fed a 1x1 kernel map (the same arithmetic) by 1.1-1.9x forward and
    4.6-5.3x backward (``benchmarks/channel_filter_speed.py``, ``benchmarks/RESULTS.md``), so there
    is no separate native kernel.

    Args:
        x: ``(B, C, H, W)``.
        kernels: ``(B, C, k, k)``, k odd.
        bias: optional ``(C,)``, shared by every sample.

    Returns:
        ``(B, C, H, W)``.
    """
    dims = check_shape(x, "B C H W", name="x")
    check_floating(x, name="x")
    kdims = check_shape(kernels, "B C k k", name="kernels", sizes={"B": dims["B"], "C": dims["C"]})
    if kdims["k"] % 2 == 0:
        raise ValueError(f"kernels: expected shape (B, C, k, k) with odd k, got shape {tuple(kernels.shape)}")
    check_same_device(kernels, x, name="kernels", ref_name="x")
    if bias is not None:
        check_shape(bias, "C", name="bias", sizes={"C": dims["C"]})
    b, c, h, w = x.shape
    k = kdims["k"]
    out = F.conv2d(x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, k, k), padding=k // 2, groups=b * c)
    out = out.view(b, c, h, w)
    return out if bias is None else out + bias.view(1, c, 1, 1)


def _check(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: expected a positive odd int, got {kernel_size!r}")
    dims = check_shape(x, "B C H W", name="x")
    check_floating(x, name="x")
    taps = kernel_size * kernel_size
    kdims = check_shape(kernels, "B GKK Hk Wk", name="kernels", sizes={"B": dims["B"]})
    groups = kdims["GKK"] // taps
    if kdims["GKK"] % taps or groups == 0 or dims["C"] % groups:
        raise ValueError(f"kernels: expected shape (B, G*{taps}, Hk, Wk) with G dividing C={dims['C']} "
                         f"(kernel_size={kernel_size}), got shape {tuple(kernels.shape)}")
    if not (1 <= kdims["Hk"] <= dims["H"] and 1 <= kdims["Wk"] <= dims["W"]):
        raise ValueError(f"kernels: expected shape (B, G*{taps}, Hk, Wk) with 1 <= Hk <= H={dims['H']} and "
                         f"1 <= Wk <= W={dims['W']}, got shape {tuple(kernels.shape)}")
    check_same_device(kernels, x, name="kernels", ref_name="x")
    if kernels.dtype != x.dtype:
        raise TypeError(f"kernels: expected dtype {x.dtype} (that of x), got {kernels.dtype}")


# ---------------------------------------------------------------------------
# Dispatcher registrations (applied once the native library is loaded)
# ---------------------------------------------------------------------------

def _fake(x, kernels, kernel_size):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _backward_fake(grad_out, x, kernels, kernel_size):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(kernels, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    x, kernels, kernel_size = inputs
    ctx.save_for_backward(x, kernels)
    ctx.kernel_size = kernel_size


def _backward(ctx, grad_out):
    x, kernels = ctx.saved_tensors
    grad_x, grad_kernels = torch.ops.deblurlayers.pixel_dynamic_filter_backward(
        grad_out.contiguous(), x, kernels, ctx.kernel_size)
    return grad_x, grad_kernels, None


# Per-pixel, per-channel k x k filtering with zero padding:
#   out[b,c,y,x] = sum_{ky,kx} K[b, g(c)*k*k + ky*k + kx](y, x) * x[b,c,y+ky-k/2,x+kx-k/2]
# kernels: (B, G*k*k, Hk, Wk), g(c) = c / (C/G). A kernel map smaller than x is bilinearly
# upsampled to (H, W) on the fly (align_corners=False).
define("pixel_dynamic_filter(Tensor x, Tensor kernels, int kernel_size) -> Tensor", fake=_fake,
       flops=_flops.pixel_dynamic_filter_flops, backward=_backward, setup_context=_setup_context, autocast=True)
define("pixel_dynamic_filter_backward(Tensor grad_out, Tensor x, Tensor kernels, int kernel_size)"
       " -> (Tensor grad_x, Tensor grad_kernels)",
       fake=_backward_fake, flops=_flops.pixel_dynamic_filter_backward_flops)
