"""Backward warping by an optical flow: the one warp every layer uses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils import check_floating, check_same_device, check_shape

__all__ = ["flow_warp"]

_PADDING_MODES = ("zeros", "border", "reflection")
_MODES = ("bilinear", "nearest")


def flow_warp(
    x: torch.Tensor,
    flow: torch.Tensor,
    padding_mode: str = "zeros",
    align_corners: bool = True,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Sample ``x`` at ``p + flow(p)`` for every pixel ``p`` (backward warping).

    With ``flow = O[a->b]`` living on frame a's grid and ``x`` = frame b, the
    result reconstructs frame a (conventions §2). Flow channel 0 is the
    horizontal (x) displacement and channel 1 the vertical (y), in pixels.

    This is ``torch.nn.functional.grid_sample`` with the grid normalised as the
    official codes do (BasicSR ``flow_warp``). For a same-size warp the pixel
    position sampled is ``p + flow(p)`` for either ``align_corners``; the flag
    only changes which positions ``"reflection"`` padding reflects about
    (results may differ from BasicSR's in the last bit of fp32 rounding).
    Sampling coordinates are computed in fp32 even for fp16/bf16 ``x`` (fp16
    coordinates are off by up to 0.3 px at 1280 wide).

    Args:
        x: ``(B, C, H, W)`` the frame (or features) to sample.
        flow: ``(B, 2, H, W)`` displacement in pixels, on the output grid.
        padding_mode: ``"zeros"`` (default), ``"border"`` or ``"reflection"``.
        align_corners: grid normalisation, ``True`` as BasicSR/STDAN/BSSTNet.
        mode: ``"bilinear"`` (default) or ``"nearest"``.

    Returns:
        ``(B, C, H, W)``, dtype of ``x``.

    Example:
        >>> x = torch.arange(16.).view(1, 1, 4, 4)
        >>> flow = torch.zeros(1, 2, 4, 4); flow[:, 0] = 1.0   # look one pixel right
        >>> flow_warp(x, flow)[0, 0, 0]
        tensor([1., 2., 3., 0.])
    """
    dims = check_shape(x, "B C H W", name="x")
    check_shape(flow, "B 2 H W", name="flow", sizes={k: dims[k] for k in "BHW"})
    check_floating(x, name="x")
    check_floating(flow, name="flow")
    check_same_device(flow, x, name="flow", ref_name="x")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode: expected one of {_PADDING_MODES}, got {padding_mode!r}")
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")

    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    # Both normalisations address the same pixel p + flow(p) here; only
    # reflection padding depends on the flag. align_corners=True cannot address
    # anything but pixel 0 along an axis of size 1, so use False otherwise.
    align_corners = align_corners and padding_mode == "reflection"
    grid = _sampling_grid(flow.to(compute_dtype), align_corners)
    out = F.grid_sample(x.to(compute_dtype), grid, mode=mode, padding_mode=padding_mode,
                        align_corners=align_corners)
    return out.to(x.dtype)


def _sampling_grid(flow: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """``(B, H, W, 2)`` grid_sample coordinates of ``p + flow(p)``."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    px = xs + flow[:, 0]
    py = ys + flow[:, 1]
    if align_corners:
        gx = px * (2.0 / max(w - 1, 1)) - 1.0
        gy = py * (2.0 / max(h - 1, 1)) - 1.0
    else:
        gx = (2.0 * px + 1.0) / w - 1.0
        gy = (2.0 * py + 1.0) / h - 1.0
    return torch.stack((gx, gy), dim=-1)
