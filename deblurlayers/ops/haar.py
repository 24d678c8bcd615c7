"""One level of the 2-D Haar wavelet transform (DSTNet's WaveletFP).

For each 2x2 block ``(a b / c d)`` of every channel::

    LL = s (a + b + c + d)     W-difference = s (a - b + c - d)
    H-difference = s (a + b - c - d)     diagonal = s (a - b - c + d)

``norm="avg"`` (DSTNet's convention, ``HaarDownsampling``): s = 1/4 forward and
no rescaling in the inverse, so LL is the block average. ``norm="ortho"``:
s = 1/2 both ways (orthonormal). Either way ``haar_idwt2d(*haar_dwt2d(x)) == x``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from .. import flops as _flops
from .._native.registry import define
from ..utils import check_floating, check_same_device, check_shape, memory_format_of
from ._backend import float32_under_autocast, keeps_memory_format, use_native

__all__ = ["haar_dwt2d", "haar_idwt2d", "haar_dwt2d_reference", "haar_idwt2d_reference"]

# norm -> (forward scale, inverse scale); their product times 4 is 1.
_SCALES = {"avg": (0.25, 1.0), "ortho": (0.5, 0.5)}


@keeps_memory_format
@float32_under_autocast
def haar_dwt2d(x: torch.Tensor, norm: str = "avg") -> Tuple[torch.Tensor, torch.Tensor]:
    """Haar DWT of every channel.

    Args:
        x: ``(B, C, H, W)`` floating-point, H and W even.
        norm: ``"avg"`` (DSTNet: /4 forward, no rescale inverse) or ``"ortho"`` (/2 both ways).

    Returns:
        ``(ll, highs)``: ``ll`` ``(B, C, H/2, W/2)``; ``highs`` ``(B, 3C, H/2, W/2)``,
        band-major ``[W-difference | H-difference | diagonal]``, C channels each.

    Example:
        >>> x = torch.randn(2, 3, 8, 8)
        >>> ll, highs = haar_dwt2d(x)
        >>> ll.shape, highs.shape
        (torch.Size([2, 3, 4, 4]), torch.Size([2, 9, 4, 4]))
        >>> torch.allclose(haar_idwt2d(ll, highs), x, atol=1e-6)
        True
    """
    forward_scale, _ = _check_dwt(x, norm)
    if use_native("haar_dwt2d", x):
        ll, highs = torch.ops.deblurlayers.haar_dwt2d(x, forward_scale)
        return ll, highs
    return haar_dwt2d_reference(x, norm)


@keeps_memory_format
@float32_under_autocast
def haar_idwt2d(ll: torch.Tensor, highs: torch.Tensor, norm: str = "avg") -> torch.Tensor:
    """Inverse of :func:`haar_dwt2d` for the same ``norm``.

    Args:
        ll: ``(B, C, h, w)``.
        highs: ``(B, 3C, h, w)``, band-major ``[W-difference | H-difference | diagonal]``.
        norm: ``"avg"`` or ``"ortho"``, as given to :func:`haar_dwt2d`.

    Returns:
        ``(B, C, 2h, 2w)``.
    """
    _, inverse_scale = _check_idwt(ll, highs, norm)
    if use_native("haar_idwt2d", ll):
        return torch.ops.deblurlayers.haar_idwt2d(ll, highs, inverse_scale)
    return haar_idwt2d_reference(ll, highs, norm)


# ---------------------------------------------------------------------------
# PyTorch reference: the oracle in tests and the fallback without a compiler.
# It is DSTNet's own formulation (a fixed 2x2 stride-2 depthwise convolution),
# so FlopCounterMode counts it exactly as the native op's formula does.
# ---------------------------------------------------------------------------

def _haar_filters(channels: int, scale: float, like: torch.Tensor) -> torch.Tensor:
    """``(4C, 1, 2, 2)`` filters ``[LL, W-diff, H-diff, diag]`` for each channel."""
    signs = torch.tensor([[[1, 1], [1, 1]], [[1, -1], [1, -1]], [[1, 1], [-1, -1]], [[1, -1], [-1, 1]]],
                         dtype=like.dtype, device=like.device)
    return repeat(signs * scale, "k p q -> (c k) 1 p q", c=channels)


@keeps_memory_format
@float32_under_autocast
def haar_dwt2d_reference(x: torch.Tensor, norm: str = "avg") -> Tuple[torch.Tensor, torch.Tensor]:
    """Grouped-convolution formulation of :func:`haar_dwt2d` (same arguments and result)."""
    forward_scale, _ = _check_dwt(x, norm)
    channels = x.shape[1]
    bands = F.conv2d(x, _haar_filters(channels, forward_scale, x), stride=2, groups=channels)
    bands = rearrange(bands, "b (c k) h w -> b k c h w", k=4)
    return bands[:, 0], rearrange(bands[:, 1:], "b k c h w -> b (k c) h w")


@keeps_memory_format
@float32_under_autocast
def haar_idwt2d_reference(ll: torch.Tensor, highs: torch.Tensor, norm: str = "avg") -> torch.Tensor:
    """Transposed-convolution formulation of :func:`haar_idwt2d` (same arguments and result)."""
    _, inverse_scale = _check_idwt(ll, highs, norm)
    channels = ll.shape[1]
    bands = torch.cat([ll.unsqueeze(1), rearrange(highs, "b (k c) h w -> b k c h w", k=3)], dim=1)
    bands = rearrange(bands, "b k c h w -> b (c k) h w")
    return F.conv_transpose2d(bands, _haar_filters(channels, inverse_scale, ll), stride=2, groups=channels)


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def _check_norm(norm: str) -> Tuple[float, float]:
    if norm not in _SCALES:
        raise ValueError(f"norm: expected one of {tuple(_SCALES)}, got {norm!r}")
    return _SCALES[norm]


def _check_dwt(x: torch.Tensor, norm: str) -> Tuple[float, float]:
    scales = _check_norm(norm)
    check_shape(x, "B C H W", name="x")
    check_floating(x, name="x")
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"x: expected shape (B, C, H, W) with even H and W, got shape {tuple(x.shape)}")
    return scales


def _check_idwt(ll: torch.Tensor, highs: torch.Tensor, norm: str) -> Tuple[float, float]:
    scales = _check_norm(norm)
    dims = check_shape(ll, "B C h w", name="ll")
    check_floating(ll, name="ll")
    check_shape(highs, "B C3 h w", name="highs", sizes={**dims, "C3": 3 * dims["C"]})
    check_same_device(highs, ll, name="highs", ref_name="ll")
    if highs.dtype != ll.dtype:
        raise TypeError(f"highs: expected dtype {ll.dtype} (that of ll), got {highs.dtype}")
    return scales


# ---------------------------------------------------------------------------
# Dispatcher registrations (applied once the native library is loaded)
# ---------------------------------------------------------------------------

# The kernels return their outputs in the layout of x (ll): channels-last or NCHW (haar.h's output_layout).
def _dwt_fake(x, scale):
    torch._check(x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0, lambda: "haar_dwt2d: x: expected even H and W")
    b, c, h, w = x.shape
    layout = memory_format_of(x)
    return (x.new_empty(b, c, h // 2, w // 2).contiguous(memory_format=layout),
            x.new_empty(b, 3 * c, h // 2, w // 2).contiguous(memory_format=layout))


def _idwt_fake(ll, highs, scale):
    b, c, h, w = ll.shape
    return ll.new_empty(b, c, 2 * h, 2 * w).contiguous(memory_format=memory_format_of(ll))


def _save_scale(ctx, inputs, output):
    ctx.scale = inputs[-1]


def _dwt_backward(ctx, grad_ll, grad_highs):
    # The Haar butterfly is symmetric, so the adjoint of the scaled forward is
    # the inverse op with the forward's scale.
    if grad_ll is None and grad_highs is None:
        return None, None
    if grad_ll is None:
        grad_ll = grad_highs.new_zeros(grad_highs.shape[0], grad_highs.shape[1] // 3, *grad_highs.shape[2:])
    if grad_highs is None:
        grad_highs = grad_ll.new_zeros(grad_ll.shape[0], 3 * grad_ll.shape[1], *grad_ll.shape[2:])
    return torch.ops.deblurlayers.haar_idwt2d(grad_ll, grad_highs, ctx.scale), None


def _idwt_backward(ctx, grad_x):
    grad_ll, grad_highs = torch.ops.deblurlayers.haar_dwt2d(grad_x, ctx.scale)
    return grad_ll, grad_highs, None


# One level of the 2-D Haar transform. `scale` multiplies the +-1 butterfly: 0.25 for DSTNet's
# averaging convention, 0.5 for the orthonormal one. ll: (B, C, H/2, W/2); highs: (B, 3C, H/2, W/2),
# band-major [W-difference | H-difference | diagonal].
define("haar_dwt2d(Tensor x, float scale) -> (Tensor ll, Tensor highs)", fake=_dwt_fake,
       flops=_flops.haar_dwt2d_flops, backward=_dwt_backward, setup_context=_save_scale, autocast=True)
# Inverse of haar_dwt2d for the matching scale (0.25 * 4 = 1 for "avg", 0.5 for "ortho"). The Haar
# butterfly matrix is symmetric, so each op is the other's backward: no separate *_backward op.
define("haar_idwt2d(Tensor ll, Tensor highs, float scale) -> Tensor", fake=_idwt_fake,
       flops=_flops.haar_idwt2d_flops, backward=_idwt_backward, setup_context=_save_scale, autocast=True)
