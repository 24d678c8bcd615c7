"""Backward warping by an optical flow: the one warp every layer uses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils import check_floating, check_same_device, check_shape
from ._backend import keeps_memory_format

__all__ = ["flow_warp", "masked_flow_warp", "compose_flows", "all_pairs_flows"]

_PADDING_MODES = ("zeros", "border", "reflection")
_MODES = ("bilinear", "nearest")


@keeps_memory_format
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


def masked_flow_warp(x: torch.Tensor, flow: torch.Tensor, threshold: float = 0.999) -> torch.Tensor:
    """Border-padded :func:`flow_warp`, zeroed where the sample leaves the map (STDAN's ``warp_m``).

    The mask is 1 where warping a map of ones with zero padding gives at least ``threshold``, i.e.
    where the bilinear footprint lies (almost) entirely inside; it carries no gradient.

    Args:
        x: ``(B, C, H, W)``.
        flow: ``(B, 2, H, W)`` in pixels.
        threshold: coverage below which a sample counts as outside.

    Returns:
        ``(B, C, H, W)``.
    """
    warped = flow_warp(x, flow, padding_mode="border")
    with torch.no_grad():
        coverage = flow_warp(torch.ones_like(x[:, :1]), flow, padding_mode="zeros")
    return warped * (coverage >= threshold).to(warped.dtype)


def compose_flows(flow_ab: torch.Tensor, flow_bc: torch.Tensor, masked: bool = True) -> torch.Tensor:
    """``O[a->c] = O[a->b] + warp(O[b->c], O[a->b])``: chain two backward flows.

    A pixel ``p`` of frame a is at ``p + O[a->b](p)`` in frame b, whose flow to c is read there.
    ``masked=True`` uses :func:`masked_flow_warp` (STDAN: no displacement is added where frame b's
    flow is read off the map), ``False`` the border-padded warp.

    Args:
        flow_ab: ``(B, 2, H, W)`` on frame a's grid.
        flow_bc: ``(B, 2, H, W)`` on frame b's grid.

    Returns:
        ``(B, 2, H, W)`` on frame a's grid.
    """
    warp = masked_flow_warp if masked else (lambda x, f: flow_warp(x, f, padding_mode="border"))
    return flow_ab + warp(flow_bc, flow_ab)


def all_pairs_flows(flows_to_next: torch.Tensor, flows_to_prev: torch.Tensor, masked: bool = True) -> torch.Tensor:
    """Flows between every pair of frames of a clip, chained from the adjacent ones.

    ``out[:, t, l] = O[t->l]`` (zero for ``l == t``). Non-adjacent flows are composed outward from
    frame t with :func:`compose_flows`: ``O[t->l] = compose(O[t->l-1], O[l-1->l])`` for ``l > t``,
    and symmetrically for ``l < t``; for three frames this is STDAN's base-offset table.

    Args:
        flows_to_next: ``(B, T-1, 2, H, W)``, ``[:, t] = O[t->t+1]`` (conventions §2).
        flows_to_prev: ``(B, T-1, 2, H, W)``, ``[:, t] = O[t+1->t]``.
        masked: see :func:`compose_flows`.

    Returns:
        ``(B, T, T, 2, H, W)``.
    """
    dims = check_shape(flows_to_next, "B Tm1 2 H W", name="flows_to_next")
    check_shape(flows_to_prev, "B Tm1 2 H W", name="flows_to_prev", sizes=dims)
    frames = dims["Tm1"] + 1
    zero = flows_to_next.new_zeros(dims["B"], 2, dims["H"], dims["W"])
    rows = []
    for t in range(frames):
        row = [zero] * frames
        for l in range(t + 1, frames):  # forward in time, outward from t
            step = flows_to_next[:, l - 1]
            row[l] = step if l == t + 1 else compose_flows(row[l - 1], step, masked)
        for l in range(t - 1, -1, -1):  # backward in time
            step = flows_to_prev[:, l]
            row[l] = step if l == t - 1 else compose_flows(row[l + 1], step, masked)
        rows.append(torch.stack(row, dim=1))
    return torch.stack(rows, dim=1)
