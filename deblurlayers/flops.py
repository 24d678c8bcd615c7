"""FLOP counting for deblurlayers ops, layers and models.

Convention: one multiply-add (MAC) is 2 FLOPs, and only MAC-shaped work is
counted -- matmuls, convolutions and attention (PyTorch's own
``FlopCounterMode`` table), our native ops (formulas below, registered with
``register_flop_formula`` when deblurlayers is imported) and ``grid_sample``
(``EXTRA_ATEN_FORMULAS``; PyTorch counts it as 0), and the CPU flash-attention
kernel that ``scaled_dot_product_attention`` runs on real CPU tensors (also
missing from PyTorch's table). Elementwise ops, softmax
and normalisation are not counted, as in the papers' thop/ptflops figures.

Per-op conventions:

- Haar DWT/IDWT: the equivalent fixed 2x2 stride-2 depthwise convolution,
  4 MACs per full-resolution element (each of the 4 outputs of a 2x2 block
  sums 4 inputs). The backward of each is the other transform: same count.
- Bilinear sampling: 4 MACs per sampled value and channel; its backward
  4 MACs for the input gradient and 8 for the grid (x and y) gradient.
- Pixel dynamic filter: k*k MACs per output element (the filtering; the
  on-the-fly upsampling of a low-resolution kernel map is not counted, as
  ``F.interpolate`` is not in the reference); backward twice that (input and
  kernel gradients).
- Multi-scale deformable attention: per sampled point and channel, 4 MACs
  for the bilinear tap sum and 1 for the attention weighting (5); backward 14:
  4 for the value gradient, 8 for the location gradient (as bilinear
  sampling), 1 for the weight gradient and 1 for scaling the incoming
  gradient by the weight. The reference (grid_sample + matmul) counts the same.
- Deformable convolution (DCNv2): the GEMM plus bilinear sampling, 4 MACs
  per (pixel, tap, input channel); the mask product is elementwise. Backward:
  two GEMMs plus 12 per sample (bilinear sampling's backward). The reference
  (grid_sample + GEMM) counts the same; what the native backward recomputes
  instead of storing is not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict

import torch
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .utils.meta import tensors_on_meta, to_meta

__all__ = ["count_flops", "FlopCount", "EXTRA_ATEN_FORMULAS"]

aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


# ---------------------------------------------------------------------------
# Formulas for our native ops: shapes in, FLOPs out (FlopCounterMode's API).
# ---------------------------------------------------------------------------

def haar_dwt2d_flops(x_shape, scale=None, *args, out_shape=None, **kwargs) -> int:
    return 2 * 4 * _numel(x_shape)


def haar_idwt2d_flops(ll_shape, highs_shape=None, scale=None, *args, out_shape=None, **kwargs) -> int:
    return 2 * 4 * 4 * _numel(ll_shape)


def pixel_dynamic_filter_flops(x_shape, kernels_shape=None, kernel_size=3, *args, out_shape=None, **kwargs) -> int:
    return 2 * kernel_size * kernel_size * _numel(x_shape)


def pixel_dynamic_filter_backward_flops(grad_out_shape, x_shape=None, kernels_shape=None, kernel_size=3, *args,
                                        out_shape=None, **kwargs) -> int:
    return 2 * 2 * kernel_size * kernel_size * _numel(x_shape)


def _attention_samples(value_shape, weights_shape) -> int:
    """Sampled (point, channel) pairs: N * Lq * M * L * P * D."""
    return _numel(weights_shape) * int(value_shape[3])


def ms_deform_attn_flops(value_shape, spatial_shapes_shape=None, level_start_index_shape=None,
                         sampling_locations_shape=None, attention_weights_shape=None, *args, out_shape=None,
                         **kwargs) -> int:
    return 2 * 5 * _attention_samples(value_shape, attention_weights_shape)


def ms_deform_attn_backward_flops(grad_out_shape, value_shape=None, spatial_shapes_shape=None,
                                  level_start_index_shape=None, sampling_locations_shape=None,
                                  attention_weights_shape=None, *args, out_shape=None, **kwargs) -> int:
    return 2 * 14 * _attention_samples(value_shape, attention_weights_shape)


def _deform_conv_sizes(input_shape, weight_shape, offset_shape):
    n, cin = input_shape[:2]
    cout, cin_g, kh, kw = weight_shape
    positions = n * int(offset_shape[2]) * int(offset_shape[3])
    gemm = positions * cout * cin_g * kh * kw
    samples = positions * cin * kh * kw  # (pixel, input channel, tap) triples
    return gemm, samples


def deform_conv2d_flops(input_shape, offset_shape=None, mask_shape=None, weight_shape=None, bias_shape=None,
                        *args, out_shape=None, **kwargs) -> int:
    """GEMM plus 4 MACs per sample (the bilinear taps; the mask product is elementwise)."""
    gemm, samples = _deform_conv_sizes(input_shape, weight_shape, offset_shape)
    return 2 * (gemm + 4 * samples)


def deform_conv2d_backward_flops(grad_out_shape, input_shape=None, offset_shape=None, mask_shape=None,
                                 weight_shape=None, *args, out_shape=None, **kwargs) -> int:
    """Two GEMMs (weight and column gradients) plus 12 MACs per sample: 4 for the input gradient and
    8 for the sampling position's (x and y) -- bilinear sampling's backward, as grid_sample's. Work
    the kernel does beyond the algorithm (recomputing the columns instead of storing them) is not
    counted, so native and reference count the same."""
    gemm, samples = _deform_conv_sizes(input_shape, weight_shape, offset_shape)
    return 2 * (2 * gemm + 12 * samples)


# ---------------------------------------------------------------------------
# aten ops that PyTorch's default table counts as 0.
# ---------------------------------------------------------------------------

_MACS_PER_SAMPLE = {0: 4, 1: 0, 2: 16}  # grid_sampler interpolation mode: bilinear, nearest, bicubic


def grid_sampler_2d_flops(input_shape, grid_shape, interpolation_mode, *args, out_shape=None, **kwargs) -> int:
    n, c = input_shape[:2]
    h_out, w_out = grid_shape[1:3]
    return 2 * _MACS_PER_SAMPLE[int(interpolation_mode)] * n * c * h_out * w_out


def grid_sampler_2d_backward_flops(grad_output_shape, input_shape, grid_shape, interpolation_mode,
                                   padding_mode, align_corners, output_mask, *args, out_shape=None,
                                   **kwargs) -> int:
    samples = _numel(grad_output_shape)  # N * C * H_out * W_out
    macs = _MACS_PER_SAMPLE[int(interpolation_mode)]
    input_grad = macs * samples if output_mask[0] else 0
    grid_grad = 2 * macs * samples if output_mask[1] else 0
    return 2 * (input_grad + grid_grad)


# PyTorch's table has the CUDA attention kernels but not the CPU flash kernel that
# scaled_dot_product_attention dispatches to on real CPU tensors (on the meta device it
# decomposes into counted matmuls instead): without these, CPU and meta counts disagree.
def cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def cpu_flash_attention_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args,
                                       out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


EXTRA_ATEN_FORMULAS: Dict[Any, Callable] = {
    aten.grid_sampler_2d: grid_sampler_2d_flops,
    aten.grid_sampler_2d_backward: grid_sampler_2d_backward_flops,
    aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention_flops,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_flash_attention_backward_flops,
}


# ---------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------

@dataclass
class FlopCount:
    """Result of :func:`count_flops`. ``flops == 2 * macs`` by convention."""

    flops: int
    by_op: Dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return self.flops // 2

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def __str__(self) -> str:
        return f"{self.gmacs:.3f} GMACs ({self.gflops:.3f} GFLOPs, 1 MAC = 2 FLOPs)"


def count_flops(module_or_fn: Callable, *inputs: Any, backward: bool = False, **kwargs: Any) -> FlopCount:
    """Count the FLOPs of ``module_or_fn(*inputs, **kwargs)`` on the meta device.

    Nothing is computed or allocated: parameters, buffers and tensor inputs
    are replaced by meta tensors of the same shape and dtype, so video-sized
    inputs cost nothing. The module's own tensors are swapped back afterwards
    (so do not call it concurrently with another use of the same module).

    Args:
        module_or_fn: an ``nn.Module`` or a function of tensors.
        *inputs, **kwargs: its arguments (tensors of any device).
        backward: also count the backward of ``sum(outputs)``.

    Returns:
        :class:`FlopCount` (see the module docstring for the convention).

    Example:
        >>> from deblurlayers.ops import haar_dwt2d
        >>> count_flops(haar_dwt2d, torch.zeros(1, 64, 360, 640)).macs
        58982400
    """
    meta_inputs, meta_kwargs = tree_map(to_meta, (inputs, kwargs))
    if isinstance(module_or_fn, torch.nn.Module):
        def call():
            with tensors_on_meta(module_or_fn):
                return module_or_fn(*meta_inputs, **meta_kwargs)
    else:
        def call():
            return module_or_fn(*meta_inputs, **meta_kwargs)

    with FlopCounterMode(display=False, custom_mapping=EXTRA_ATEN_FORMULAS) as counter:
        outputs = call()
        if backward:
            leaves = [t for t in torch.utils._pytree.tree_leaves(outputs)
                      if isinstance(t, torch.Tensor) and t.requires_grad]
            if not leaves:
                raise ValueError("backward=True: no output requires grad (give an input requires_grad=True)")
            sum(t.sum() for t in leaves).backward()
    # A module without any counted op (e.g. only elementwise work) has no "Global" entry.
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(int(counter.get_total_flops()), by_op)


