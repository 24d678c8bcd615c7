"""Multi-scale deformable attention (Deformable-DETR's ``ms_deform_attn``).

``out[n, q, m*D + d] = sum_{l, p} A[n, q, m, l, p] * bilinear(value_l[n, :, :, m, d], x, y)`` with
``x = loc_x * W_l - 0.5``, ``y = loc_y * H_l - 0.5`` (normalised locations: ``(0, 0)`` is the
top-left corner of the map, ``(1, 1)`` the bottom-right one) and zero padding. STDANet uses it with
one level per frame.
"""
from __future__ import annotations

import itertools
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange

from .. import flops as _flops
from .._native.registry import define
from ..utils import check_floating, check_same_device, check_shape
from ._backend import float32_under_autocast, use_native

__all__ = ["ms_deform_attn", "ms_deform_attn_reference", "level_start_index"]

SpatialShapes = Union[torch.Tensor, Sequence[Tuple[int, int]]]


@float32_under_autocast
def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: Optional[torch.Tensor],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Attend to ``P`` bilinearly sampled points per head in each of ``L`` feature maps.

    The signature and semantics are Deformable-DETR's ``MSDeformAttnFunction`` (without
    ``im2col_step``: any batch size works), so code written for that op can switch to this one.

    Args:
        value: ``(N, S, M, D)``: ``M`` heads of ``D`` channels at ``S = sum_l H_l * W_l`` positions;
            level ``l`` occupies rows ``[level_start_index[l], + H_l * W_l)``, row-major.
        spatial_shapes: ``(L, 2)`` int64 tensor of ``(H_l, W_l)`` on ``value``'s device, or a
            sequence of ``L`` ``(H, W)`` int pairs (then ``level_start_index`` may be ``None``; this
            form needs no device-to-host read and is what layers use under ``torch.compile``).
        level_start_index: ``(L,)`` int64, the exclusive prefix sum of ``H_l * W_l``, or ``None``.
        sampling_locations: ``(N, Lq, M, L, P, 2)`` normalised ``(x, y)``; values outside
            ``[0, 1]`` are allowed (taps outside a map read 0).
        attention_weights: ``(N, Lq, M, L, P)``, normally a softmax over ``L * P`` per head.

    Returns:
        ``(N, Lq, M * D)``, channel ``m * D + d``.

    Example:
        >>> value = torch.randn(1, 4 * 4, 2, 8)                     # one 4x4 level, 2 heads
        >>> loc = torch.full((1, 3, 2, 1, 1, 2), 0.375)              # the centre of pixel (1, 1)
        >>> out = ms_deform_attn(value, [(4, 4)], None, loc, torch.ones(1, 3, 2, 1, 1))
        >>> torch.allclose(out[0, 0], value[0, 5].flatten())
        True
    """
    shapes, starts, levels = _check(value, spatial_shapes, level_start_index, sampling_locations,
                                    attention_weights)
    if use_native("ms_deform_attn", value):
        return torch.ops.deblurlayers.ms_deform_attn(value, shapes, starts, sampling_locations, attention_weights)
    return _reference(value, levels, sampling_locations, attention_weights)


@float32_under_autocast
def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: Optional[torch.Tensor],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """PyTorch formulation of :func:`ms_deform_attn`: one ``grid_sample`` per level, reduced at once.

    ``grid_sample(align_corners=False)`` maps grid value ``2 * loc - 1`` to pixel ``loc * W - 0.5``,
    Deformable-DETR's convention. Computed in at least fp32.
    """
    _, _, levels = _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return _reference(value, levels, sampling_locations, attention_weights)


def level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """``(L,)`` exclusive prefix sum of ``H_l * W_l`` for ``(L, 2)`` ``spatial_shapes``."""
    sizes = spatial_shapes.prod(1)
    return torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))


def _reference(value, levels: Optional[List[Tuple[int, int]]], sampling_locations, attention_weights):
    if levels is None:
        raise RuntimeError(
            "ms_deform_attn: the PyTorch reference needs the level sizes on the host; under "
            "torch.compile pass spatial_shapes as a sequence of (H, W) ints instead of a tensor")
    n, _, m, d = value.shape
    lq = sampling_locations.shape[1]
    compute = torch.promote_types(value.dtype, torch.float32)
    if n * m * d * lq * len(levels) == 0:  # nothing to sample (einops cannot split empty axes)
        return (value.sum() * 0 + sampling_locations.sum() * 0 + attention_weights.sum() * 0).expand(n, lq, m * d)
    values = value.to(compute).split([h * w for h, w in levels], dim=1)
    grids = 2 * sampling_locations.to(compute) - 1
    weights = attention_weights.to(compute)
    out = None
    for l, (h, w) in enumerate(levels):
        v = rearrange(values[l], "n (h w) m d -> (n m) d h w", h=h, w=w)
        grid = rearrange(grids[:, :, :, l], "n q m p xy -> (n m) q p xy")
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        weight = rearrange(weights[:, :, :, l], "n q m p -> (n m) q p 1")
        level_out = torch.matmul(rearrange(sampled, "nm d q p -> nm q d p"), weight)
        out = level_out if out is None else out + level_out
    return rearrange(out, "(n m) q d 1 -> n q (m d)", n=n).to(value.dtype)


def _check(value, spatial_shapes, level_start_index_, sampling_locations, attention_weights):
    """Validate the arguments; return the shapes and start tensors and, when known, the host sizes."""
    dims = check_shape(value, "N S M D", name="value")
    check_floating(value, name="value")
    ldims = check_shape(sampling_locations, "N Lq M L P 2", name="sampling_locations",
                        sizes={"N": dims["N"], "M": dims["M"]})
    check_shape(attention_weights, "N Lq M L P", name="attention_weights", sizes=ldims)
    for name, t in (("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        check_same_device(t, value, name=name, ref_name="value")
        if t.dtype != value.dtype:
            raise TypeError(f"{name}: expected dtype {value.dtype} (that of value), got {t.dtype}")
    num_levels, positions = ldims["L"], dims["S"]

    if isinstance(spatial_shapes, torch.Tensor):
        check_shape(spatial_shapes, "L 2", name="spatial_shapes", sizes={"L": num_levels})
        if level_start_index_ is None:
            level_start_index_ = level_start_index(spatial_shapes)
        check_shape(level_start_index_, "L", name="level_start_index", sizes={"L": num_levels})
        for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index_)):
            if t.dtype != torch.int64:
                raise TypeError(f"{name}: expected dtype torch.int64, got {t.dtype}")
            check_same_device(t, value, name=name, ref_name="value")
        if torch.compiler.is_compiling():
            return spatial_shapes, level_start_index_, None  # values unknown at trace time
        # Eager: validate the values (one tiny device-to-host copy on a GPU, as Deformable-DETR's
        # own module does) so that bad sizes fail here and not as out-of-bounds reads in a kernel.
        levels = [tuple(hw) for hw in spatial_shapes.tolist()]
        _check_levels(levels, positions, num_levels)
        starts = level_start_index_.tolist()
        expected = list(itertools.accumulate([h * w for h, w in levels][:-1], initial=0))
        if starts != expected:
            raise ValueError(f"level_start_index: expected the exclusive prefix sum of H*W, {expected}, got {starts}")
        return spatial_shapes, level_start_index_, levels

    levels = [tuple(hw) for hw in spatial_shapes]
    _check_levels(levels, positions, num_levels)
    if level_start_index_ is not None:
        raise ValueError("level_start_index: expected None when spatial_shapes is a sequence of (H, W) "
                         "(it is computed from them)")
    shapes = torch.tensor(levels, dtype=torch.int64, device=value.device).view(num_levels, 2)
    return shapes, level_start_index(shapes), levels


def _check_levels(levels, positions: int, num_levels: int) -> None:
    if len(levels) != num_levels or not all(
            len(hw) == 2 and all(isinstance(v, int) and v >= 1 for v in hw) for hw in levels):
        raise ValueError(f"spatial_shapes: expected {num_levels} (H, W) pairs of positive ints "
                         f"(L = sampling_locations.shape[3]), got {levels}")
    total = sum(h * w for h, w in levels)
    if total != positions:
        raise ValueError(f"spatial_shapes: the levels {levels} hold sum(H*W) = {total} positions, "
                         f"but value has S = {positions} (value.shape[1])")


# ---------------------------------------------------------------------------
# Dispatcher registrations (applied once the native library is loaded)
# ---------------------------------------------------------------------------

def _fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    n, lq = sampling_locations.shape[:2]
    return value.new_empty((n, lq, value.shape[2] * value.shape[3]))


def _backward_fake(grad_out, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    return (torch.empty_like(value, memory_format=torch.contiguous_format),
            torch.empty_like(sampling_locations, memory_format=torch.contiguous_format),
            torch.empty_like(attention_weights, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_out):
    value, shapes, starts, locations, weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = torch.ops.deblurlayers.ms_deform_attn_backward(
        grad_out.contiguous(), value, shapes, starts, locations, weights)
    return grad_value, None, None, grad_locations, grad_weights


# Multi-scale deformable attention (Deformable-DETR's op, same signature):
#   out[n, q, m*D + d] = sum_{l, p} A[n,q,m,l,p] *
#       bilinear(value_l[n, :, :, m, d], loc_x * W_l - 0.5, loc_y * H_l - 0.5)
# value: (N, S, M, D) with level l at rows [level_start_index[l], +H_l*W_l); spatial_shapes: (L, 2)
# int64 (H_l, W_l); sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y); attention_weights:
# (N, Lq, M, L, P); zero padding. Returns (N, Lq, M*D).
define("ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
       "Tensor sampling_locations, Tensor attention_weights) -> Tensor",
       fake=_fake, flops=_flops.ms_deform_attn_flops, backward=_backward, setup_context=_setup_context,
       autocast=True)
define("ms_deform_attn_backward(Tensor grad_out, Tensor value, Tensor spatial_shapes, "
       "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights)"
       " -> (Tensor grad_value, Tensor grad_sampling_locations, Tensor grad_attention_weights)",
       fake=_backward_fake, flops=_flops.ms_deform_attn_backward_flops)
