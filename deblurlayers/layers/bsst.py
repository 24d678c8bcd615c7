"""Blur-aware spatio-temporal sparse transformer (BSSTNet, Zhang et al., CVPR 2024, §3.3).

Tokens are channels-last, ``(B, T, h, w, C)``, as the linear layers of a transformer want them;
``SoftSplit`` turns a clip ``(B, T, C, H, W)`` into tokens and ``SoftComp`` back.

The official code (``sparse_transformer.py``) is followed for the data flow and parameter names,
with these differences (see ``docs/layers/bsst.md``):

- the temporal selection is a choice: ``selection="blur"`` (the layers' default) is the *intended*
  one in every layer; ``"official"`` (BSSTNet's default, what the released weights were trained
  under) reproduces the released code, which zeroes an alias of the window blur levels in place, so
  that layers 2-4 select frames by sort tie order, not by blur (``select_frames_official``);
- any batch size, token grid (padded to the window grid) and T; ``Kq``, ``Kkv`` are arguments;
- key/value tokens outside the image enter the sparse attention's softmax as zero vectors, as in the
  official code (the released weights were trained so); ``outside_tokens="masked"`` leaves them out;
- static shapes (``sort``/``gather``, no ``nonzero``), so no host sync and ``torch.compile`` works;
- attention through ``scaled_dot_product_attention``: the attention matrix is never materialised.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..utils import IntPair, check_input, check_shape, conv_output_size, empty_batch, to_pair

__all__ = [
    "SoftSplit", "SoftComp", "FusionFeedForward", "SparseWindowAttention", "BlurAwareSparseAttention",
    "BlurAwareSparseTransformer", "FrameSelection", "window_blur_levels", "select_frames", "select_frames_official",
]

WINDOW_POOLS = ("avg", "max")
OUTSIDE_TOKENS = ("zeros", "masked")
# Per layer: the intended selection, the released code's first layer, its later layers.
SELECTIONS = ("blur", "official", "official_aliased")


def _grid_size(size: Tuple[int, int], kernel: Tuple[int, int], stride: Tuple[int, int],
               padding: Tuple[int, int]) -> Tuple[int, int]:
    return conv_output_size(size, kernel, stride, padding)


def _init_normal(module: nn.Module, std: float) -> None:
    # The official blocks re-initialise every Conv/Linear this way (BSST passes gain 0.01).
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------
# Soft split / soft composition
# --------------------------------------------------------------------------------------------------
class _Tokenizer(nn.Module):
    """Geometry shared by SoftSplit, SoftComp and FusionFeedForward: overlapping k×k patches."""

    def __init__(self, kernel_size: IntPair, stride: IntPair, padding: IntPair) -> None:
        super().__init__()
        self.kernel_size = to_pair(kernel_size, "kernel_size", minimum=1)
        self.stride = to_pair(stride, "stride", minimum=1)
        self.padding = to_pair(padding, "padding", minimum=0)

    def token_grid(self, size: Sequence[int]) -> Tuple[int, int]:
        """Token grid ``(h, w)`` of a feature map of spatial ``size`` ``(H, W)``."""
        return _grid_size(tuple(size), self.kernel_size, self.stride, self.padding)

    def _check_fold_size(self, size, tokens: Tuple[int, int], name: str) -> Tuple[int, int]:
        size = tuple(int(s) for s in size)
        if len(size) != 2 or self.token_grid(size) != tuple(tokens):
            raise ValueError(f"{name}: expected a feature size (H, W) whose token grid is {tuple(tokens)} "
                             f"(kernel {self.kernel_size}, stride {self.stride}, padding {self.padding}), "
                             f"got {size}")
        return size

    def _fold_args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)


class SoftSplit(_Tokenizer):
    """Overlapping patches of a clip, embedded as tokens (official ``SoftSplit``).

    ``unfold`` (k, s, p) gives one ``C·k·k`` vector per patch (channel slowest), then
    ``embedding`` (Linear ``C·k·k -> dim``). BSSTNet: C = 192, k = 5, s = 2, p = 2, dim = 512,
    so a 64×64 feature map gives a 32×32 token grid.

    Shape:
        - x: ``(B, T, C, H, W)``
        - Output: ``(B, T, h, w, dim)`` with ``h = (H + 2p - k) // s + 1`` (likewise w)
    """

    def __init__(self, channels: int = 192, dim: int = 512, kernel_size: IntPair = 5, stride: IntPair = 2,
                 padding: IntPair = 2, init_std: float = 0.01) -> None:
        super().__init__(kernel_size, stride, padding)
        self.channels, self.dim = channels, dim
        self.embedding = nn.Linear(channels * self.kernel_size[0] * self.kernel_size[1], dim)
        _init_normal(self, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = check_shape(x, "B T C H W", name="x", sizes={"C": self.channels})
        h, w = self.token_grid((dims["H"], dims["W"]))
        if h < 1 or w < 1:
            raise ValueError(f"x: frames of {dims['H']}x{dims['W']} are smaller than one patch "
                             f"{self.kernel_size} with padding {self.padding}")
        patches = F.unfold(x.flatten(0, 1), **self._fold_args())
        tokens = self.embedding(patches.transpose(1, 2))
        return rearrange(tokens, "(b t) (h w) c -> b t h w c", b=dims["B"], h=h)

    def token_blur(self, blur: torch.Tensor) -> torch.Tensor:
        """Blur level of each token: the patch average of a ``(B, T, 1, H, W)`` map.

        Zero padding counts in the average (``count_include_pad=True``), as in the official code, so
        border tokens look sharper than their pixels. Returns ``(B, T, 1, h, w)``.
        """
        dims = check_shape(blur, "B T 1 H W", name="blur")
        pooled = F.avg_pool2d(blur.flatten(0, 1), self.kernel_size, self.stride, self.padding,
                              count_include_pad=True)
        return pooled.unflatten(0, (dims["B"], dims["T"]))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dim={self.dim}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}, padding={self.padding}"


class SoftComp(_Tokenizer):
    """Tokens back to a clip (official ``SoftComp``).

    ``embedding`` (Linear ``dim -> C·k·k``), ``fold`` to ``(H, W)`` as a plain sum of the
    overlapping patches (no overlap normalisation, as the official code), then ``bias_conv``
    (Conv 3×3 C -> C), whose output replaces the folded map.

    Shape:
        - tokens: ``(B, T, h, w, dim)``; ``output_size``: ``(H, W)`` with token grid ``(h, w)``
        - Output: ``(B, T, C, H, W)``
    """

    def __init__(self, channels: int = 192, dim: int = 512, kernel_size: IntPair = 5, stride: IntPair = 2,
                 padding: IntPair = 2, init_std: float = 0.01) -> None:
        super().__init__(kernel_size, stride, padding)
        self.channels, self.dim = channels, dim
        self.embedding = nn.Linear(dim, channels * self.kernel_size[0] * self.kernel_size[1])
        self.bias_conv = nn.Conv2d(channels, channels, 3, padding=1)
        _init_normal(self, init_std)

    def forward(self, tokens: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
        dims = check_shape(tokens, "B T h w C", name="tokens", sizes={"C": self.dim})
        size = self._check_fold_size(output_size, (dims["h"], dims["w"]), "output_size")
        patches = rearrange(self.embedding(tokens), "b t h w c -> (b t) c (h w)")
        folded = F.fold(patches, size, **self._fold_args())
        return self.bias_conv(folded).unflatten(0, (dims["B"], dims["T"]))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dim={self.dim}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}, padding={self.padding}"


class FusionFeedForward(_Tokenizer):
    """Feed-forward that mixes overlapping tokens (official ``FusionFeedForward``, from FuseFormer).

    ``fc1`` (Linear ``dim -> hidden``); each token's hidden vector is read as a ``hidden/(k·k)``
    channel × k×k patch, folded to the feature size with the overlaps averaged, unfolded back to
    tokens, then ``fc2`` (GELU, Linear ``hidden -> dim``).

    Shape:
        - x: ``(B, T, h, w, dim)``; ``fold_size``: ``(H, W)`` with token grid ``(h, w)``
        - Output: ``(B, T, h, w, dim)``
    """

    def __init__(self, dim: int = 512, hidden_dim: int = 1000, kernel_size: IntPair = 5, stride: IntPair = 2,
                 padding: IntPair = 2) -> None:
        super().__init__(kernel_size, stride, padding)
        area = self.kernel_size[0] * self.kernel_size[1]
        if hidden_dim % area:
            raise ValueError(f"hidden_dim: expected a multiple of the patch area {area}, got {hidden_dim}")
        self.dim, self.hidden_dim = dim, hidden_dim
        self.fc1 = nn.Sequential(nn.Linear(dim, hidden_dim))
        self.fc2 = nn.Sequential(nn.GELU(), nn.Linear(hidden_dim, dim))

    def forward(self, x: torch.Tensor, fold_size: Sequence[int]) -> torch.Tensor:
        dims = check_shape(x, "B T h w C", name="x", sizes={"C": self.dim})
        size = self._check_fold_size(fold_size, (dims["h"], dims["w"]), "fold_size")
        hidden = rearrange(self.fc1(x), "b t h w c -> (b t) c (h w)")
        folded = F.fold(hidden, size, **self._fold_args())
        overlaps = F.fold(torch.ones_like(hidden[:1, : self.kernel_size[0] * self.kernel_size[1]]), size,
                          **self._fold_args())
        mixed = F.unfold(folded / overlaps, **self._fold_args())
        mixed = rearrange(mixed, "(b t) c (h w) -> b t h w c", b=dims["B"], h=dims["h"])
        return self.fc2(mixed)


# --------------------------------------------------------------------------------------------------
# Blur-aware selection
# --------------------------------------------------------------------------------------------------
class FrameSelection(NamedTuple):
    """Which windows and frames a BSST layer attends sparsely.

    Attributes:
        active: ``(B, N)`` bool, windows blurry in some candidate frame (``None``: all windows).
        query_frames: ``(B, N, Kq)`` the blurriest candidate frames of each window, ascending.
        kv_frames: ``(B, N, Kkv)`` the sharpest candidate frames of each window, ascending.

    ``N = nh·nw`` windows in row-major order. ``query_frames``/``kv_frames`` are ``None`` when the
    layer has no candidate frame (T = 1 with odd parity).
    """

    active: Optional[torch.Tensor]
    query_frames: Optional[torch.Tensor]
    kv_frames: Optional[torch.Tensor]


def window_blur_levels(blur: torch.Tensor, window_size: IntPair, mode: str = "avg") -> torch.Tensor:
    """Blur level U of every window: the mean (official) or max (paper) of its tokens' blur.

    The token grid is padded to whole windows; padding never counts.

    Shape:
        - blur: ``(B, T, 1, h, w)`` token blur levels (``SoftSplit.token_blur``)
        - Output: ``(B, T, nh, nw)`` with ``nh = ceil(h / window_h)`` (likewise nw)
    """
    check_shape(blur, "B T 1 h w", name="blur")
    if mode not in WINDOW_POOLS:
        raise ValueError(f"mode: expected one of {WINDOW_POOLS}, got {mode!r}")
    wh, ww = to_pair(window_size, "window_size", minimum=1)
    h, w = blur.shape[-2:]
    pad = (0, -w % ww, 0, -h % wh)
    frames = blur.flatten(0, 1)
    if mode == "max":
        levels = F.max_pool2d(F.pad(frames, pad, value=-math.inf), (wh, ww))
    else:
        total = F.avg_pool2d(F.pad(frames, pad), (wh, ww), divisor_override=1)
        count = F.avg_pool2d(F.pad(torch.ones_like(frames[:1]), pad), (wh, ww), divisor_override=1)
        levels = total / count
    return levels.squeeze(1).unflatten(0, blur.shape[:2])


def select_frames(window_blur: torch.Tensor, *, parity: Optional[int], theta: Optional[float],
                  num_query_frames: Optional[int] = None, num_kv_frames: Optional[int] = None) -> FrameSelection:
    """The intended BSST selection (paper §3.3, spec: BSSTNet §3.2).

    Candidates are the frames ``t ≡ parity (mod 2)`` (all frames for ``parity=None``). A window is
    active if its level exceeds ``theta`` (strictly) in some candidate frame (``theta=None``: every
    window). Per window, the ``Kq`` candidates with the largest U are the query frames and the ``Kkv``
    with the smallest U the key/value frames; ties go to the earlier frame (stable sort).
    ``Kq``/``Kkv`` default to ``max(1, T // 4)`` (the official code) and are capped at the
    number of candidates.

    Shape:
        - window_blur: ``(B, T, nh, nw)`` (``window_blur_levels``)
    """
    frames, levels = _levels_per_window(window_blur, parity)
    candidates = torch.arange(0 if parity is None else parity, frames, 1 if parity is None else 2,
                              device=window_blur.device)
    count = candidates.numel()
    levels = levels[..., candidates]
    active = None if theta is None else (levels > theta).any(-1)
    if count == 0:
        return FrameSelection(torch.zeros_like(active) if active is not None else None, None, None)
    kq = _frame_count(num_query_frames, frames, count, "num_query_frames")
    kkv = _frame_count(num_kv_frames, frames, count, "num_kv_frames")
    blurriest = torch.sort(levels, dim=-1, descending=True, stable=True).indices[..., :kq]
    sharpest = torch.sort(levels, dim=-1, stable=True).indices[..., :kkv]
    return FrameSelection(active, candidates[blurriest].sort(-1).values, candidates[sharpest].sort(-1).values)


def select_frames_official(window_blur: torch.Tensor, *, parity: Optional[int], theta: Optional[float],
                           num_query_frames: Optional[int] = None, num_kv_frames: Optional[int] = None,
                           aliased: bool = False) -> FrameSelection:
    """The selection of the released code (``BSST.forward``), which the released weights learned.

    Active windows as in :func:`select_frames` (the official code computes them before the bug
    below). The frames, though, are ranked among *all* ``T`` frames: queries by the scores
    ``U·[t ≡ parity]``, keys/values by ``(1 − U)·[t ≡ parity]``, each by a stable descending sort,
    so ties go to the lowest frame index (what the official code gives on the CPU). A layer whose
    candidates hold fewer blurry frames than ``Kq`` thus takes frames of the other parity too.

    In the official code the query scores are an alias of the window blur levels and the first
    layer zeroes the other parity's frames in place, which zeroes the levels themselves: every
    later layer (``aliased=True``) ranks with ``U = 0``. Its queries are frames ``0 … Kq−1`` of every
    active window (both parities) and its keys/values the first ``Kkv`` frames of its parity.

    Shape:
        - window_blur: ``(B, T, nh, nw)`` (``window_blur_levels``)
    """
    frames, levels = _levels_per_window(window_blur, parity)
    t = torch.arange(frames, device=window_blur.device)
    candidate = torch.ones_like(t, dtype=torch.bool) if parity is None else t % 2 == parity
    active = None if theta is None else ((levels > theta) & candidate).any(-1)
    if parity is not None and frames <= parity:  # no candidate frame (T = 1, odd layer)
        return FrameSelection(torch.zeros_like(active) if active is not None else None, None, None)
    kq = _frame_count(num_query_frames, frames, frames, "num_query_frames")
    kkv = _frame_count(num_kv_frames, frames, frames, "num_kv_frames")
    scored = torch.zeros_like(levels) if aliased else levels
    mask = candidate.to(levels.dtype)
    queries = torch.sort(scored * mask, dim=-1, descending=True, stable=True).indices[..., :kq]
    kv = torch.sort((1 - scored) * mask, dim=-1, descending=True, stable=True).indices[..., :kkv]
    return FrameSelection(active, queries.sort(-1).values, kv.sort(-1).values)


def _levels_per_window(window_blur: torch.Tensor, parity: Optional[int]) -> Tuple[int, torch.Tensor]:
    """T and the levels as ``(B, nh·nw, T)``, after the checks both selections share."""
    frames = check_shape(window_blur, "B T nh nw", name="window_blur")["T"]
    if parity not in (None, 0, 1):
        raise ValueError(f"parity: expected 0, 1 or None, got {parity!r}")
    return frames, rearrange(window_blur, "b t nh nw -> b (nh nw) t")


def _frame_count(requested: Optional[int], frames: int, candidates: int, name: str) -> int:
    if requested is None:
        return min(max(1, frames // 4), candidates)
    if not 1 <= requested <= candidates:
        raise ValueError(f"{name}: expected 1 <= {name} <= {candidates} (the candidate frames of "
                         f"T={frames}), got {requested}")
    return requested


# --------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------
class SparseWindowAttention(nn.Module):
    """Window attention with blur-aware sparse spatio-temporal key/value sets (official names).

    Per (window, query frame) of an *active* window: the window's tokens of the ``Kq`` query frames
    attend jointly to, in each of the ``Kkv`` key/value frames, the ``(wh+2eh)×(ww+2ew)`` region
    centred on the window (own window + neighbours) and the frame's pooled tokens
    (``pool_layer``, depthwise conv ``pool_size``/``pool_size``, then ``key``/``value``).
    Every other (window, frame) pair: the remaining frames of the window in ascending order, in
    consecutive groups of ``group_frames``, attend within their group to the window's own tokens.

    ``outside_tokens``: the enlarged regions of the border windows reach outside the image. With
    ``"zeros"`` (default, official) those positions are zero key and value vectors that take part
    in the softmax (logit 0, value 0); with ``"masked"`` they are left out of it. Positions the
    token grid is padded with (to whole windows; the official code has none) count as outside.

    Shape:
        - x: ``(B, T, h, w, dim)`` (normalised tokens); ``selection``: ``FrameSelection``
        - Output: ``(B, T, h, w, dim)``
    """

    def __init__(self, dim: int = 512, num_heads: int = 4, window_size: IntPair = 8, pool_size: IntPair = 4,
                 expand_size: Optional[IntPair] = None, outside_tokens: str = "zeros") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim: expected a multiple of num_heads={num_heads}, got {dim}")
        if outside_tokens not in OUTSIDE_TOKENS:
            raise ValueError(f"outside_tokens: expected one of {OUTSIDE_TOKENS}, got {outside_tokens!r}")
        self.outside_tokens = outside_tokens
        self.dim, self.num_heads = dim, num_heads
        self.window_size = to_pair(window_size, "window_size", minimum=1)
        self.pool_size = to_pair(pool_size, "pool_size", minimum=1)
        self.expand_size = (tuple((s + 1) // 2 for s in self.window_size) if expand_size is None
                            else tuple(to_pair(expand_size, "expand_size", minimum=1)))
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.pool_layer = nn.Conv2d(dim, dim, self.pool_size, stride=self.pool_size, groups=dim)

    def forward(self, x: torch.Tensor, selection: FrameSelection, group_frames: Optional[int] = None) -> torch.Tensor:
        dims = check_shape(x, "B T h w C", name="x", sizes={"C": self.dim})
        b, t, h, w = dims["B"], dims["T"], dims["h"], dims["w"]
        (wh, ww), (nh, nw) = self.window_size, self.grid(h, w)
        group = max(1, t // 4) if group_frames is None else group_frames
        pad = (0, 0, 0, nw * ww - w, 0, nh * wh - h)
        # projected, then padded: positions outside the image are zero vectors, not the biases
        q, k, v = (F.pad(projection(x), pad) for projection in (self.query, self.key, self.value))
        x = F.pad(x, pad)
        windows = "b t (nh wh) (nw ww) c -> b (nh nw) t (wh ww) c"
        q_win, k_win, v_win = (rearrange(a, windows, wh=wh, ww=ww) for a in (q, k, v))

        if selection.query_frames is None:
            sparse, kq = None, 0
        else:
            sparse = self._sparse_attention(x, q_win, k, v, selection, (h, w))
            kq = sparse.shape[2]
        # Frames that get the sparse attention (query frames of active windows) go last; the
        # remaining frames, ascending, are grouped for the standard attention.
        is_query = torch.zeros(b, nh * nw, t, dtype=torch.bool, device=x.device)
        if sparse is not None:
            is_query.scatter_(2, selection.query_frames, True)
            if selection.active is not None:
                is_query &= selection.active[..., None]
        order = torch.sort(torch.arange(t, device=x.device) + t * is_query.long(), dim=-1, stable=True).indices
        remaining = torch.full((b, nh * nw), t, device=x.device) - kq * (
            1 if selection.active is None else selection.active.long())
        possible = {t} if sparse is None else {t - kq} if selection.active is None else {t, t - kq}

        if max(possible) == 0:
            out = sparse
        else:
            grouped = self._grouped_attention(q_win, k_win, v_win, order, remaining, possible, group, (h, w))
            if sparse is None:
                permuted = grouped[:, :, :t]
            else:
                chosen = grouped[:, :, t - kq: t]
                chosen = sparse if selection.active is None else torch.where(
                    selection.active[:, :, None, None, None], sparse, chosen)
                permuted = torch.cat((grouped[:, :, : t - kq], chosen), dim=2)
            inverse = torch.argsort(order, dim=-1)
            out = permuted.gather(2, inverse[..., None, None].expand_as(permuted))
        out = rearrange(out, "b (nh nw) t (wh ww) c -> b t (nh wh) (nw ww) c", nh=nh, wh=wh)
        return self.proj(out[:, :, :h, :w])

    def grid(self, h: int, w: int) -> Tuple[int, int]:
        """Window grid ``(nh, nw)`` of an ``h×w`` token grid."""
        return -(-h // self.window_size[0]), -(-w // self.window_size[1])

    # -- the two attention paths ------------------------------------------------------------------
    def _sparse_attention(self, x, q_win, k, v, selection: FrameSelection, size) -> torch.Tensor:
        """Query frames × (regions + pooled tokens of the key/value frames), every window."""
        b, n = q_win.shape[:2]
        (wh, ww), (eh, ew) = self.window_size, self.expand_size
        nh, nw = self.grid(*size)
        queries = _take_frames(q_win, selection.query_frames)
        kv_frames = selection.kv_frames
        region_keys = self._regions(k, kv_frames, nh, nw)
        region_values = self._regions(v, kv_frames, nh, nw)
        pooled = self.pool_layer(rearrange(x, "b t h w c -> (b t) c h w"))
        pooled = rearrange(pooled, "(b t) c ph pw -> b t (ph pw) c", b=b)
        pooled_keys = _take_frames(self.key(pooled)[:, None].expand(-1, n, -1, -1, -1), kv_frames)
        pooled_values = _take_frames(self.value(pooled)[:, None].expand(-1, n, -1, -1, -1), kv_frames)
        keys = torch.cat((region_keys, pooled_keys), dim=3)
        values = torch.cat((region_values, pooled_values), dim=3)

        attn_mask = None
        padded_grid = size[0] % wh or size[1] % ww
        if self.outside_tokens == "masked" or padded_grid:
            region_valid = self._region_valid(*size, (eh, ew), x.device)
            if self.outside_tokens == "zeros":
                region_valid = torch.ones_like(region_valid)
            # pooled cells wholly in the grid padding exist only here: always left out
            valid = torch.cat((region_valid, self._pooled_valid(*size, x.shape[2:4], x.device).expand(n, -1)), dim=1)
            mask = valid[None, :, None].expand(b, -1, kv_frames.shape[-1], -1)
            attn_mask = rearrange(mask, "b n f l -> (b n) 1 1 (f l)")
        heads = "b n f p (m d) -> (b n) m (f p) d"
        out = F.scaled_dot_product_attention(
            *(rearrange(a, heads, m=self.num_heads) for a in (queries, keys, values)), attn_mask=attn_mask)
        return rearrange(out, "(b n) m (f p) d -> b n f p (m d)", b=b, p=wh * ww)

    def _grouped_attention(self, q_win, k_win, v_win, order, remaining, possible, group, size) -> torch.Tensor:
        """Own-window attention within consecutive groups of ``group`` frames taken in ``order``.

        Window ``n`` of sample ``b`` uses its first ``remaining[b, n]`` ordered frames; the other
        slots (query frames, or padding up to whole groups) are computed and discarded.
        """
        b, n, t = q_win.shape[:3]
        slots = -(-max(possible) // group) * group
        index = order[..., :slots] if slots <= t else F.pad(order, (0, slots - t))
        gathered = [_take_frames(a, index) for a in (q_win, k_win, v_win)]
        own_valid = self._region_valid(*size, (0, 0), q_win.device)
        mask = None
        padded_grid = size[0] % self.window_size[0] or size[1] % self.window_size[1]
        if any(r % group for r in possible) or padded_grid:
            slot_ok = torch.arange(slots, device=order.device) < remaining[..., None]
            slot_ok = rearrange(slot_ok, "b n (g f) -> b n g f", f=group)
            # A group of discarded slots only: let it attend to anything rather than to nothing (NaN).
            slot_ok = slot_ok | ~slot_ok.any(-1, keepdim=True)
            key_ok = slot_ok[..., None] & own_valid[None, :, None, None]
            mask = rearrange(key_ok, "b n g f p -> (b n g) 1 1 (f p)")
        heads = "b n (g f) p (m d) -> (b n g) m (f p) d"
        out = F.scaled_dot_product_attention(
            *(rearrange(a, heads, f=group, m=self.num_heads) for a in gathered), attn_mask=mask)
        return rearrange(out, "(b n g) m (f p) d -> b n (g f) p (m d)", b=b, n=n, p=q_win.shape[3])

    # -- geometry ---------------------------------------------------------------------------------
    def _regions(self, a: torch.Tensor, frames: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
        """``(B, N, F, R, C)``: the enlarged region of every window in the given frames."""
        (wh, ww), (eh, ew) = self.window_size, self.expand_size
        padded = F.pad(a, (0, 0, ew, ew, eh, eh))
        # Views: (B, T, nh, nw, C, wh+2eh, ww+2ew); only the selected frames are copied below.
        regions = padded.unfold(2, wh + 2 * eh, wh).unfold(3, ww + 2 * ew, ww)
        window = torch.arange(nh * nw, device=a.device)
        batch = torch.arange(a.shape[0], device=a.device)
        picked = regions[batch[:, None, None], frames, (window // nw)[None, :, None], (window % nw)[None, :, None]]
        return rearrange(picked, "b n f c rh rw -> b n f (rh rw) c")

    def _region_valid(self, h: int, w: int, expand: Tuple[int, int], device) -> torch.Tensor:
        """``(N, R)`` bool: which tokens of each window's (enlarged) region lie in the image."""
        (wh, ww), (nh, nw) = self.window_size, self.grid(h, w)
        rows = torch.arange(nh, device=device)[:, None] * wh + torch.arange(-expand[0], wh + expand[0], device=device)
        cols = torch.arange(nw, device=device)[:, None] * ww + torch.arange(-expand[1], ww + expand[1], device=device)
        row_ok, col_ok = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
        valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]
        return rearrange(valid, "nh nw rh rw -> (nh nw) (rh rw)")

    def _pooled_valid(self, h: int, w: int, padded: Sequence[int], device) -> torch.Tensor:
        """``(1, P)`` bool: pooled tokens whose cell holds at least one image token."""
        (ph, pw) = self.pool_size
        rows = torch.arange(padded[0] // ph, device=device) * ph < h
        cols = torch.arange(padded[1] // pw, device=device) * pw < w
        return (rows[:, None] & cols[None, :]).reshape(1, -1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, " \
               f"expand_size={self.expand_size}, pool_size={self.pool_size}, outside_tokens={self.outside_tokens!r}"


def _take_frames(a: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """``a[b, n, frames[b, n, i]]`` for ``a`` of shape ``(B, N, T, ...)``."""
    index = frames.reshape(frames.shape + (1,) * (a.dim() - 3)).expand(*frames.shape, *a.shape[3:])
    return a.gather(2, index)


# --------------------------------------------------------------------------------------------------
# Layer and stack
# --------------------------------------------------------------------------------------------------
class BlurAwareSparseAttention(nn.Module):
    """One BSST layer: blur-aware sparse window attention and a fusion feed-forward, pre-norm.

    ``Z = Z + proj(SparseWindowAttention(LN1(Z)))``, then ``Z = Z + FFN(LN2(Z))``. The blur map
    steers which tokens attend to which (``select_frames``): windows whose level U exceeds
    ``theta`` in some frame of this layer's ``parity`` are active; their ``Kq`` blurriest frames
    query the enlarged regions and pooled tokens of their ``Kkv`` sharpest frames. Everything else
    gets standard spatio-temporal window attention in groups of ``group_frames`` frames.

    Every frame of every window selected (``parity=None, theta=None, num_query_frames=T,
    num_kv_frames=T``) is dense spatio-temporal window attention with enlarged windows.

    Args:
        dim: token channels (512). num_heads: 4. window_size: 8 tokens. pool_size: 4.
        expand_size: region enlargement per side (default ``(window + 1) // 2``, official).
        hidden_dim: FFN width (1000). fold_kernel, fold_stride, fold_padding: the soft split
            geometry the FFN folds with (5, 2, 2).
        theta: window blur threshold (0.3; ``None``: every window active).
        parity: candidate frames ``t ≡ parity (mod 2)`` (official: layer index mod 2; ``None``: all).
        num_query_frames, num_kv_frames: Kq, Kkv (default ``max(1, T // 4)``, official).
        group_frames: frames per group of the standard attention (default ``max(1, T // 4)``).
        window_pool: ``"avg"`` (official) or ``"max"`` (paper) window blur level.
        outside_tokens: ``"zeros"`` (official) or ``"masked"``: how the sparse attention treats the
            region positions outside the image (see :class:`SparseWindowAttention`).
        selection: ``"blur"`` (default: the paper's blur-aware selection, :func:`select_frames`),
            ``"official"`` (the released code's first layer) or ``"official_aliased"`` (its later
            layers, blind to blur): :func:`select_frames_official`.

    Shape:
        - tokens: ``(B, T, h, w, dim)``
        - blur: ``(B, T, 1, h, w)`` token blur levels in [0, 1] (``SoftSplit.token_blur``)
        - fold_size: ``(H, W)`` of the feature map the tokens came from (default ``(2h, 2w)``)
        - Output: ``(B, T, h, w, dim)``

    Example:
        >>> layer = BlurAwareSparseAttention(dim=64, num_heads=2)
        >>> layer(torch.randn(1, 8, 16, 16, 64), torch.rand(1, 8, 1, 16, 16)).shape
        torch.Size([1, 8, 16, 16, 64])
    """

    def __init__(self, dim: int = 512, num_heads: int = 4, window_size: IntPair = 8, pool_size: IntPair = 4,
                 expand_size: Optional[IntPair] = None, hidden_dim: int = 1000, fold_kernel: IntPair = 5,
                 fold_stride: IntPair = 2, fold_padding: IntPair = 2, theta: Optional[float] = 0.3,
                 parity: Optional[int] = 0, num_query_frames: Optional[int] = None,
                 num_kv_frames: Optional[int] = None, group_frames: Optional[int] = None,
                 window_pool: str = "avg", init_std: float = 0.01, outside_tokens: str = "zeros",
                 selection: str = "blur") -> None:
        super().__init__()
        if selection not in SELECTIONS:
            raise ValueError(f"selection: expected one of {SELECTIONS}, got {selection!r}")
        if parity not in (None, 0, 1):
            raise ValueError(f"parity: expected 0, 1 or None, got {parity!r}")
        if window_pool not in WINDOW_POOLS:
            raise ValueError(f"window_pool: expected one of {WINDOW_POOLS}, got {window_pool!r}")
        for name, value in (("num_query_frames", num_query_frames), ("num_kv_frames", num_kv_frames),
                            ("group_frames", group_frames)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected a positive int or None, got {value!r}")
        self.theta, self.parity, self.window_pool, self.selection = theta, parity, window_pool, selection
        self.num_query_frames, self.num_kv_frames, self.group_frames = num_query_frames, num_kv_frames, group_frames
        self.attention = SparseWindowAttention(dim, num_heads, window_size, pool_size, expand_size, outside_tokens)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FusionFeedForward(dim, hidden_dim, fold_kernel, fold_stride, fold_padding)
        _init_normal(self, init_std)

    def select(self, blur: torch.Tensor) -> FrameSelection:
        """The windows and frames this layer attends sparsely for token blur ``(B, T, 1, h, w)``."""
        levels = window_blur_levels(blur, self.attention.window_size, self.window_pool)
        counts = dict(num_query_frames=self.num_query_frames, num_kv_frames=self.num_kv_frames)
        if self.selection == "blur":
            return select_frames(levels, parity=self.parity, theta=self.theta, **counts)
        return select_frames_official(levels, parity=self.parity, theta=self.theta,
                                      aliased=self.selection == "official_aliased", **counts)

    def forward(self, tokens: torch.Tensor, blur: torch.Tensor,
                fold_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        dims = check_input(tokens, "B T h w C", name="tokens", like=self, sizes={"C": self.attention.dim},
                           minimum={"T": 1, "h": 1, "w": 1})
        check_shape(blur, "B T 1 h w", name="blur", sizes=dims)
        if dims["B"] == 0:
            return empty_batch(self, tokens, blur, fold_size)
        if fold_size is None:
            fold_size = (2 * dims["h"], 2 * dims["w"])
        selection = self.select(blur.to(tokens.dtype))
        x = tokens + self.attention(self.norm1(tokens), selection, self.group_frames)
        return x + self.mlp(self.norm2(x), fold_size)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, parity={self.parity}, num_query_frames={self.num_query_frames}, " \
               f"num_kv_frames={self.num_kv_frames}, group_frames={self.group_frames}, " \
               f"window_pool={self.window_pool!r}, selection={self.selection!r}"


class BlurAwareSparseTransformer(nn.Module):
    """``depth`` BSST layers whose candidate-frame parity alternates (official
    ``TemporalSparseTransformerBlock``; parameter names ``transformer.{i}.*``).

    ``selection="blur"`` (default) gives every layer the paper's blur-aware selection;
    ``"official"`` reproduces the released code: its first layer ranks frames by blur, every later
    one is blind to it (``"official_aliased"``, see :func:`select_frames_official`).

    Shape: as ``BlurAwareSparseAttention``.
    """

    def __init__(self, dim: int = 512, depth: int = 4, selection: str = "blur", **layer_kwargs) -> None:
        super().__init__()
        if "parity" in layer_kwargs:
            raise TypeError("parity: set per layer by the stack (layer index mod 2)")
        if selection not in ("blur", "official"):
            raise ValueError(f"selection: expected 'blur' or 'official', got {selection!r}")
        self.selection = selection
        per_layer = ["blur"] * depth if selection == "blur" else ["official"] + ["official_aliased"] * (depth - 1)
        self.transformer = nn.ModuleList(BlurAwareSparseAttention(dim, parity=i % 2, selection=per_layer[i],
                                                                  **layer_kwargs)
                                         for i in range(depth))

    def forward(self, tokens: torch.Tensor, blur: torch.Tensor,
                fold_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        for layer in self.transformer:
            tokens = layer(tokens, blur, fold_size)
        return tokens
