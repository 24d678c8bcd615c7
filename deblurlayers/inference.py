"""The inference fast path: channels-last weights, frozen parameters, optional inductor freezing.

On a CPU, oneDNN's convolutions are 1.2-2x faster on channels-last (NHWC) tensors than on NCHW
(``benchmarks/RESULTS.md``), and the models are mostly convolutions. A convolution whose weight is
channels-last writes a channels-last output, and every elementwise op, concatenation and native op
of the library (:func:`deblurlayers.ops._backend.keeps_memory_format`) keeps the layout it is
given, so storing the weights channels-last is enough to run the whole network in that layout:
the input frames need no conversion and no layer flips back and forth.

The numbers do not change beyond fp32 summation order (about 1e-6 relative): channels-last only
changes the order in which oneDNN accumulates.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["optimize_for_inference", "to_channels_last"]


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store every 4-D parameter and buffer of ``module`` channels-last, in place; returns it.

    Unlike ``module.to(memory_format=torch.channels_last)``, modules holding 5-D weights
    (``Conv3d``) or other ranks are fine: only the 4-D tensors (``Conv2d`` weights) change.
    Parameters stay the same ``nn.Parameter`` objects (an optimizer built before keeps working).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected an nn.Module, got {type(module).__name__}")
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return module


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True, compile: bool = False) -> nn.Module:
    """Prepare ``model`` for fast inference; call it under ``torch.inference_mode()``.

    - ``eval()`` and ``requires_grad_(False)`` (in place);
    - ``channels_last``: :func:`to_channels_last` (in place), the whole network then runs
      channels-last on the CPU;
    - ``compile``: returns ``torch.compile(model, options={"freezing": True})``: inductor folds the
      frozen weights as constants (constant folding, oneDNN weight prepacking, convolution +
      activation fusion). It costs a compilation per input shape (a minute or more on 2 cores) and
      gained 1.0-1.1x on the models measured (``benchmarks/RESULTS.md``): worth it for a long video
      of one size, not for a single clip.

    The output equals the eager model's to about 1e-6 relative in fp32 (summation order only).
    Outputs of a channels-last model may be non-contiguous views; ``.contiguous()`` them if a
    consumer needs NCHW memory.

    Returns:
        ``model`` itself, or its compiled wrapper when ``compile=True``.

    Example:
        >>> from deblurlayers.models import get_model
        >>> model = optimize_for_inference(get_model("dstnet", num_feat=16, num_blocks=1, num_cwgdn=1))
        >>> with torch.inference_mode():
        ...     model(torch.rand(1, 3, 3, 32, 32)).shape
        torch.Size([1, 3, 3, 32, 32])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    model.eval().requires_grad_(False)
    if channels_last:
        to_channels_last(model)
    if compile:
        return torch.compile(model, options={"freezing": True})
    return model
