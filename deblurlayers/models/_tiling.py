"""Tiled inference: a clip model run on overlapping spatial tiles and temporal chunks.

Video restoration models are trained on small crops (256² for most of the papers here) and often
evaluated the same way: BSSTNet's test pipeline restores 256² tiles with 64 px of overlap, in
48-frame clips with 4 frames of overlap. This runs any model of ``deblurlayers.models`` (or any
module with the same call) that way, so frames larger than memory allows can be restored.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..utils import check_input
from ..utils.meta import tensors_on_meta, to_meta

__all__ = ["tiled_inference"]

BLENDS = ("crop", "average")


def check_tiling(tile: int, overlap: int, frames_per_clip: Optional[int], frame_overlap: int, blend: str) -> None:
    """The checks of :func:`tiled_inference`'s arguments, for callers that do work before tiling
    (``BSSTNet.restore`` estimates the whole clip's flows first) and must fail before it."""
    _check_span("tile", tile, "overlap", overlap)
    if blend not in BLENDS:
        raise ValueError(f"blend: expected one of {BLENDS}, got {blend!r}")
    if frames_per_clip is not None:
        _check_span("frames_per_clip", frames_per_clip, "frame_overlap", frame_overlap)


def tiled_inference(model: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, tile: int = 256,
                    overlap: int = 64, frames_per_clip: Optional[int] = None, frame_overlap: int = 4,
                    blend: str = "crop", side_inputs: Optional[Mapping[str, Tuple[torch.Tensor, int]]] = None
                    ) -> torch.Tensor:
    """``model(frames)`` computed on overlapping ``tile × tile`` crops (and, for clip-to-clip models,
    overlapping chunks of ``frames_per_clip`` frames), assembled into the full result.

    Tiles start every ``tile - overlap`` pixels; the last one is aligned with the frame's edge.
    A frame no larger than ``tile`` is one tile. Likewise for chunks of frames along T.

    - ``blend="crop"`` (default): every output pixel (and frame) comes from the one tile (chunk)
      in which it lies farthest from a seam. The seams run through the middle of the overlaps, so
      each tile keeps at least ``overlap // 2`` pixels of context on every side it shares with
      another. A model whose output at a pixel depends only on inputs within ``overlap // 2``
      pixels (and ``frame_overlap // 2`` frames) then gives exactly its untiled result.
    - ``blend="average"``: overlapping tiles (chunks) are averaged with equal weights.

    A tile (chunk) that covers the whole frame (clip) is the untiled call itself. Models with
    global operations (channel attention, pooled attention tokens, padding to a multiple) see
    only their tile, so their tiled output differs from the untiled one; the overlap limits
    the seams. Call it under ``torch.inference_mode()`` for inference.

    Args:
        model: maps ``(B, T, C, H, W)`` to ``(B, T, C', H, W)`` (clip to clip) or ``(B, C', H, W)``
            (clip to one frame).
        frames: ``(B, T, C, H, W)``.
        tile: tile height and width in pixels.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < tile``.
        frames_per_clip: chunk length for clip-to-clip models (``None``: the whole clip at once).
        frame_overlap: frames shared by neighbouring chunks, ``0 <= frame_overlap < frames_per_clip``.
        blend: ``"crop"`` or ``"average"``.
        side_inputs: ``{name: (tensor, scale)}``: tensors on a grid ``scale`` times coarser than the
            frames, ``(B, T', C', H/scale, W/scale)`` with ``T' = T`` (one per frame) or ``T - 1``
            (one per pair of consecutive frames, e.g. flows), cropped with every tile and chunk and
            passed as ``model(tile, name=crop)``. Tile boundaries must then fall on the coarse grid
            (``H``, ``W``, ``tile`` and ``overlap`` multiples of ``scale`` suffice). BSSTNet's
            :meth:`~deblurlayers.models.BSSTNet.restore` passes the flows of the whole frame this way,
            as the official test pipeline crops them.

    Returns:
        The model's output for the whole clip, on the device and in the dtype of the tiles' outputs.

    Example:
        >>> from deblurlayers.models import DSTNet
        >>> model = DSTNet(num_feat=8, num_blocks=1, num_cwgdn=1).eval()
        >>> with torch.inference_mode():
        ...     out = tiled_inference(model, torch.rand(1, 6, 3, 80, 96), tile=48, overlap=16, frames_per_clip=4,
        ...                           frame_overlap=2)
        >>> out.shape
        torch.Size([1, 6, 3, 80, 96])
    """
    dims = check_input(frames, "B T C H W", name="frames", minimum={"T": 1, "H": 1, "W": 1})
    check_tiling(tile, overlap, frames_per_clip, frame_overlap, blend)
    t, h, w = dims["T"], dims["H"], dims["W"]
    rows, cols = _spans(h, tile, overlap), _spans(w, tile, overlap)
    chunks = _spans(t, frames_per_clip, frame_overlap) if frames_per_clip is not None else [(0, t, 0, t)]
    side = _check_side_inputs(side_inputs or {}, dims, rows, cols)
    if len(chunks) > 1:  # a clip-to-frame model cannot be chunked: find out before the first real tile
        _probe_output_kind(model, frames, side, chunks, rows[0], cols[0])

    out = weight = None
    clip_output = None
    for t0, t1, keep_t0, keep_t1 in chunks:
        for y0, y1, keep_y0, keep_y1 in rows:
            for x0, x1, keep_x0, keep_x1 in cols:
                extra = {name: a[:, t0:t1 - (t - a.shape[1]), :, y0 // k:y1 // k, x0 // k:x1 // k]
                         for name, (a, k) in side.items()}
                result = model(frames[:, t0:t1, :, y0:y1, x0:x1], **extra)
                if out is None:
                    clip_output = _output_kind(result, frames[:, t0:t1, :, y0:y1, x0:x1], chunks)
                    lead = (dims["B"], t) if clip_output else (dims["B"],)
                    out = result.new_zeros(*lead, result.shape[-3], h, w)
                    weight = result.new_zeros(*((1, t) if clip_output else (1,)), 1, h, w) if blend == "average" else None
                if blend == "crop":
                    part = result[..., keep_y0 - y0:keep_y1 - y0, keep_x0 - x0:keep_x1 - x0]
                    if clip_output:
                        out[:, keep_t0:keep_t1, :, keep_y0:keep_y1, keep_x0:keep_x1] = part[:, keep_t0 - t0:keep_t1 - t0]
                    else:
                        out[..., keep_y0:keep_y1, keep_x0:keep_x1] = part
                else:
                    if clip_output:
                        out[:, t0:t1, :, y0:y1, x0:x1] += result
                        weight[:, t0:t1, :, y0:y1, x0:x1] += 1
                    else:
                        out[..., y0:y1, x0:x1] += result
                        weight[..., y0:y1, x0:x1] += 1
    return out if blend == "crop" else out / weight


def _check_side_inputs(side_inputs, dims, rows, cols) -> Dict[str, Tuple[torch.Tensor, int]]:
    checked = {}
    for name, value in side_inputs.items():
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.Tensor)
                and isinstance(value[1], int) and value[1] >= 1):
            raise TypeError(f"side_inputs[{name!r}]: expected a (tensor, scale) pair with an int scale >= 1, "
                            f"got {value!r}")
        tensor, scale = value
        b, t, _, h, w = tensor.shape if tensor.dim() == 5 else (None,) * 5
        if (b, h, w) != (dims["B"], dims["H"] // scale, dims["W"] // scale) or t not in (dims["T"], dims["T"] - 1) \
                or dims["H"] % scale or dims["W"] % scale:
            raise ValueError(f"side_inputs[{name!r}]: expected shape (B={dims['B']}, T={dims['T']} or "
                             f"{dims['T'] - 1}, C, H={dims['H']}/{scale}, W={dims['W']}/{scale}) for frames of "
                             f"{dims['H']}x{dims['W']}, got {tuple(tensor.shape)}")
        edges = [v for span in rows + cols for v in span[:2]]
        if any(v % scale for v in edges):
            raise ValueError(f"side_inputs[{name!r}]: tile edges {sorted(set(edges))} must be multiples of "
                             f"scale={scale}; choose tile and overlap as multiples of {scale}")
        checked[name] = (tensor, scale)
    return checked


def _check_span(name: str, size: int, overlap_name: str, overlap: int) -> None:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {size!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < size:
        raise ValueError(f"{overlap_name}: expected an int in [0, {name}={size}), got {overlap!r}")


def _spans(size: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """``(start, end, keep_start, keep_end)`` of every tile along one axis: the tiles cover
    ``[0, size)``, and the kept parts split it at the middle of each overlap."""
    if size <= tile:
        return [(0, size, 0, size)]
    starts = list(range(0, size - tile, tile - overlap)) + [size - tile]
    seams = [(starts[i + 1] + starts[i] + tile) // 2 for i in range(len(starts) - 1)]
    bounds = [0] + seams + [size]
    return [(s, s + tile, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def _probe_output_kind(model, frames, side, chunks, row, col) -> None:
    """Run the first tile on the meta device (no arithmetic) so that :func:`_output_kind` refuses
    a clip-to-frame model before any real work. A model that cannot run on meta (a plain function
    that reads values, say) is left to the check after its first real tile."""
    if not isinstance(model, nn.Module):
        return
    t0, t1 = chunks[0][:2]
    (y0, y1), (x0, x1) = row[:2], col[:2]
    t = frames.shape[1]
    tile = to_meta(frames[:, t0:t1, :, y0:y1, x0:x1])
    extra = {name: to_meta(a[:, t0:t1 - (t - a.shape[1]), :, y0 // k:y1 // k, x0 // k:x1 // k])
             for name, (a, k) in side.items()}
    try:
        with tensors_on_meta(model), torch.no_grad():
            result = model(tile, **extra)
    except (RuntimeError, NotImplementedError, TypeError):
        return
    if isinstance(result, torch.Tensor):
        _output_kind(result, tile, chunks)


def _output_kind(result: torch.Tensor, tile_frames: torch.Tensor, chunks) -> bool:
    """True for a clip-to-clip model, False for clip-to-frame; raises for anything else."""
    b, t, _, h, w = tile_frames.shape
    if result.dim() == 5 and result.shape[:2] == (b, t) and result.shape[-2:] == (h, w):
        return True
    if result.dim() == 4 and result.shape[0] == b and result.shape[-2:] == (h, w):
        if len(chunks) > 1:
            raise ValueError("frames_per_clip: only for models that return every frame (B, T, C, H, W); "
                             f"this model returns one frame {tuple(result.shape)}")
        return False
    raise ValueError(f"model: expected an output (B, T, C, H, W) or (B, C, H, W) with the tile's B={b}, T={t}, "
                     f"H={h}, W={w}, got shape {tuple(result.shape)}")
