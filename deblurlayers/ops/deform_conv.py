"""Modulated deformable convolution (DCNv2), a drop-in for ``torchvision.ops.deform_conv2d``.

``out[n, o] = bias[o] + sum_{c, k} weight[o, c, k] · mask[n, g(c)·K + k] ·
bilinear(input[n, c], y, x)`` at ``y = ho·sh − ph + ky·dh + dy``, ``x = wo·sw − pw + kx·dw + dx``,
with ``(dy, dx) = offset[n, 2·(g(c)·K + k) + (0, 1)]`` (torchvision's and ERDN's/BSSTNet's layout:
``(dy, dx)`` per offset group per tap, taps row-major), zero padding outside the image, ``c``
running over the weight group of ``o``, and ``g(c) = c // (Cin / offset_groups)``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange

from .. import flops as _flops
from .._native.registry import define
from ..utils import IntPair, check_floating, check_same_device, check_shape, conv_output_size, to_pair
from ._backend import float32_under_autocast, keeps_memory_format, use_native

__all__ = ["deform_conv2d", "deform_conv2d_reference"]


@keeps_memory_format
@float32_under_autocast
def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                  dilation: IntPair = 1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deformable convolution v2 (v1 without ``mask``), torchvision's signature and layouts.

    The weight groups are ``Cin // weight.shape[1]``, the offset groups
    ``offset.shape[1] // (2·KH·KW)``, as in torchvision.

    Args:
        input: ``(N, Cin, H, W)``.
        offset: ``(N, 2·OG·KH·KW, Ho, Wo)`` in pixels, ``(dy, dx)`` per offset group per tap.
        weight: ``(Cout, Cin / groups, KH, KW)``.
        bias: ``(Cout,)`` or ``None``.
        stride, padding, dilation: ints or ``(h, w)`` pairs, as ``conv2d``.
        mask: ``(N, OG·KH·KW, Ho, Wo)`` modulation (DCNv2), or ``None`` for ones (DCNv1).

    Returns:
        ``(N, Cout, Ho, Wo)`` with ``Ho = (H + 2·ph − dh·(KH − 1) − 1) // sh + 1`` (likewise Wo).

    Example:
        >>> x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3)
        >>> out = deform_conv2d(x, torch.zeros(1, 18, 8, 8), w, padding=1)
        >>> torch.allclose(out, F.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    args = _check(input, offset, weight, bias, stride, padding, dilation, mask)
    if use_native("deform_conv2d", input):
        if mask is None:  # the op's "no modulation": an empty mask, never a full-size one of ones
            mask = input.new_empty(0)
        if bias is None:
            bias = input.new_zeros(weight.shape[0])
        return torch.ops.deblurlayers.deform_conv2d(input, offset, mask, weight, bias, *args)
    return _reference(input, offset, mask, weight, bias, *args)


@keeps_memory_format
@float32_under_autocast
def deform_conv2d_reference(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                            bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                            dilation: IntPair = 1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`deform_conv2d` in plain PyTorch: every tap sampled with ``grid_sample``, one GEMM."""
    args = _check(input, offset, weight, bias, stride, padding, dilation, mask)
    return _reference(input, offset, mask, weight, bias, *args)


def _reference(input, offset, mask, weight, bias, stride, padding, dilation, groups, offset_groups):
    n, cin, h, w = input.shape
    kh, kw = weight.shape[2:]
    ho, wo = offset.shape[2:]
    if n == 0:  # einops cannot infer a grouped axis of size 0
        return input.new_zeros(0, weight.shape[0], ho, wo)
    # Sampling positions (y, x) of every (offset group, tap, output pixel), in pixels.
    oy = torch.arange(ho, device=input.device, dtype=input.dtype) * stride[0] - padding[0]
    ox = torch.arange(wo, device=input.device, dtype=input.dtype) * stride[1] - padding[1]
    ky = torch.arange(kh, device=input.device, dtype=input.dtype) * dilation[0]
    kx = torch.arange(kw, device=input.device, dtype=input.dtype) * dilation[1]
    base_y = (ky[:, None, None, None] + oy[None, None, :, None]).expand(kh, kw, ho, wo)
    base_x = (kx[None, :, None, None] + ox[None, None, None, :]).expand(kh, kw, ho, wo)
    delta = rearrange(offset, "n (g k two) ho wo -> n g k ho wo two", g=offset_groups, two=2)
    y = base_y.reshape(1, 1, kh * kw, ho, wo) + delta[..., 0]
    x = base_x.reshape(1, 1, kh * kw, ho, wo) + delta[..., 1]
    # grid_sample with align_corners=False puts pixel j at (2j + 1) / W - 1.
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    grid = rearrange(grid, "n g k ho wo two -> (n g) (k ho) wo two")
    planes = rearrange(input, "n (g c) h w -> (n g) c h w", g=offset_groups)
    sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = rearrange(sampled, "(n g) c (k ho) wo -> n g c k ho wo", n=n, k=kh * kw)
    if mask is not None:
        sampled = sampled * rearrange(mask, "n (g k) ho wo -> n g 1 k ho wo", g=offset_groups)
    columns = rearrange(sampled, "n og c k ho wo -> n (og c) k (ho wo)")
    columns = rearrange(columns, "n (wg c) k p -> n wg (c k) p", wg=groups)
    kernels = rearrange(weight, "(wg o) c kh kw -> wg o (c kh kw)", wg=groups)
    out = torch.einsum("gok,ngkp->ngop", kernels, columns)
    out = rearrange(out, "n g o (ho wo) -> n (g o) ho wo", ho=ho)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _check(input, offset, weight, bias, stride, padding, dilation, mask):
    dims = check_shape(input, "N Cin H W", name="input")
    check_floating(input, name="input")
    wdims = check_shape(weight, "Cout Cin_g KH KW", name="weight")
    stride, padding, dilation = (to_pair(v, name) for v, name in ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"stride, dilation: expected >= 1, padding >= 0; got stride={stride}, "
                         f"padding={padding}, dilation={dilation}")
    cin, cin_g, cout = dims["Cin"], wdims["Cin_g"], wdims["Cout"]
    if cin_g == 0 or cin % cin_g or cout % (cin // cin_g):
        raise ValueError(f"weight: expected shape (Cout, Cin/groups, KH, KW) with groups dividing Cin={cin} "
                         f"and Cout, got shape {tuple(weight.shape)}")
    groups = cin // cin_g
    taps = wdims["KH"] * wdims["KW"]
    ho, wo = conv_output_size((dims["H"], dims["W"]), (wdims["KH"], wdims["KW"]), stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise ValueError(f"input: the {wdims['KH']}x{wdims['KW']} kernel (padding {padding}, dilation "
                         f"{dilation}) does not fit a {dims['H']}x{dims['W']} input")
    odims = check_shape(offset, "N C Ho Wo", name="offset", sizes={"N": dims["N"], "Ho": ho, "Wo": wo})
    if odims["C"] == 0 or odims["C"] % (2 * taps) or cin % (odims["C"] // (2 * taps)):
        raise ValueError(f"offset: expected shape (N={dims['N']}, 2*offset_groups*{taps}, Ho={ho}, Wo={wo}) "
                         f"with offset_groups dividing Cin={cin}, got shape {tuple(offset.shape)}")
    offset_groups = odims["C"] // (2 * taps)
    if mask is not None:
        check_shape(mask, "N C Ho Wo", name="mask",
                    sizes={"N": dims["N"], "C": offset_groups * taps, "Ho": ho, "Wo": wo})
    if bias is not None:
        check_shape(bias, "Cout", name="bias", sizes={"Cout": cout})
    for name, t in (("offset", offset), ("weight", weight), ("mask", mask), ("bias", bias)):
        if t is not None:
            check_same_device(t, input, name=name, ref_name="input")
            if t.dtype != input.dtype:
                raise TypeError(f"{name}: expected dtype {input.dtype} (that of input), got {t.dtype}")
    return list(stride), list(padding), list(dilation), groups, offset_groups


# -- native op registrations ---------------------------------------------------------------------
def _fake(input, offset, mask, weight, bias, stride, padding, dilation, groups, offset_groups):
    return input.new_empty((input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]))


def _backward_fake(grad_out, input, offset, mask, weight, stride, padding, dilation, groups, offset_groups):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format)
                 for t in (input, offset, mask, weight)) + (weight.new_empty(weight.shape[0]),)


def _setup_context(ctx, inputs, output):
    input, offset, mask, weight, _, stride, padding, dilation, groups, offset_groups = inputs
    ctx.save_for_backward(input, offset, mask, weight)
    ctx.conv_args = (stride, padding, dilation, groups, offset_groups)


def _backward(ctx, grad_out):
    input, offset, mask, weight = ctx.saved_tensors
    grads = torch.ops.deblurlayers.deform_conv2d_backward(grad_out.contiguous(), input, offset, mask, weight,
                                                          *ctx.conv_args)
    return (*grads, None, None, None, None, None)


# Modulated deformable convolution (DCNv2), torchvision's layout:
#   out[n, o, ho, wo] = bias[o] + sum_{c in group(o), k} weight[o, c, k] * mask[n, g(c)*K + k, ho, wo]
#       * bilinear(input[n, c], ho*sh - ph + ky*dh + dy, wo*sw - pw + kx*dw + dx)
# (dy, dx) = offset[n, 2*(g(c)*K + k) + {0, 1}, ho, wo], g(c) = c / (Cin/offset_groups), taps
# k = ky*KW + kx row-major, zero padding. input (N, Cin, H, W); weight (Cout, Cin/groups, KH, KW);
# mask (N, offset_groups*K, Ho, Wo), or an empty 1-d tensor for no modulation (DCNv1; its gradient
# is then empty too); bias (Cout).
define("deform_conv2d(Tensor input, Tensor offset, Tensor mask, Tensor weight, Tensor bias, "
       "int[2] stride, int[2] padding, int[2] dilation, int groups, int offset_groups) -> Tensor",
       fake=_fake, flops=_flops.deform_conv2d_flops, backward=_backward, setup_context=_setup_context,
       autocast=True)
define("deform_conv2d_backward(Tensor grad_out, Tensor input, Tensor offset, Tensor mask, "
       "Tensor weight, int[2] stride, int[2] padding, int[2] dilation, int groups, int offset_groups)"
       " -> (Tensor grad_input, Tensor grad_offset, Tensor grad_mask, Tensor grad_weight, Tensor grad_bias)",
       fake=_backward_fake, flops=_flops.deform_conv2d_backward_flops)
