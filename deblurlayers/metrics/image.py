"""PSNR and SSIM on batched images ``(..., C, H, W)``, with the options the papers' code uses.

Everything is computed in float64 on the images' device. Values are on the scale of
``data_range`` (255 for 8-bit images, 1 for frames in [0, 1]); :func:`quantize` turns network
output in [0, 1] into the 8-bit values the papers' code writes to PNG.

Three SSIMs are in use in video deblurring (``../docs/usage.md`` compares them on one pair):

- ``"2d"``: the Gaussian-window SSIM of Wang et al. as BasicSR, OpenCV-based code and
  scikit-image (``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``) compute it:
  11×11 window, per channel, only the valid part of the map, mean over channels.
- ``"bsst"``: BSSTNet's: one σ = 1.5 Gaussian (13 taps) along C, H and W together, the borders
  mirrored (scipy's ``reflect``), the whole ``C×H×W`` map averaged. Mixing the channels makes it
  read higher than ``"2d"``.
- ``"3d"``: DSTNet's (from NAFNet): an 11×11×11 Gaussian over H, W and C, edges replicated,
  output the size of the input, the whole map averaged.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch


__all__ = ["psnr", "ssim", "quantize", "rgb_to_y", "gaussian_taps", "SSIM_KINDS"]

SSIM_KINDS = ("2d", "bsst", "3d")
_K1, _K2 = 0.01, 0.03


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Network output in [0, 1] as the 8-bit values the papers' code scores: clamped, ×255 in
    float32 and rounded half to even, as BasicSR's ``tensor2img`` does in numpy; returned as
    float64 in [0, 255]."""
    return (x.float().clamp(0, 1) * 255).round().double()


def rgb_to_y(x: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """ITU-R BT.601 luma of RGB images ``(..., 3, H, W)`` -> ``(..., 1, H, W)``, as BasicSR's
    ``to_y_channel`` (16 + (65.481 R + 128.553 G + 24.966 B) / 255 on the 8-bit scale),
    returned on the scale of ``data_range``."""
    _check_images(x, "x")
    if x.shape[-3] != 3:
        raise ValueError(f"x: expected RGB images (..., 3, H, W), got shape {tuple(x.shape)}")
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64, device=x.device)
    scaled = x.double() * (255.0 / data_range)
    y = 16.0 + torch.einsum("...chw,c->...hw", scaled, weights) / 255.0
    return (y * (data_range / 255.0)).unsqueeze(-3)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: Union[float, torch.Tensor] = 1.0, crop: int = 0,
         channel: str = "rgb") -> torch.Tensor:
    """Peak signal-to-noise ratio of each image, ``10 log10(data_range² / mse)`` in dB.

    Args:
        x, y: images ``(..., C, H, W)`` of the same shape, on the scale of ``data_range``.
        data_range: the peak value (1 for [0, 1], 255 for 8-bit values); a tensor broadcasts
            against the leading dimensions (one peak per image).
        crop: pixels removed from every side before the mean (the "shave" or "crop border").
        channel: ``"rgb"`` (every channel) or ``"y"`` (BT.601 luma of RGB images).

    Returns:
        ``(...)`` float64; ``inf`` where the images are identical.

    Example:
        >>> a = torch.zeros(1, 3, 8, 8); psnr(a, a + 0.1).item()  # doctest: +ELLIPSIS
        20.0...
    """
    x, y = _prepare_pair(x, y, crop, channel, data_range)
    mse = (x - y).square().mean(dim=(-3, -2, -1))
    peak = torch.as_tensor(data_range, dtype=torch.float64, device=x.device)
    return 10.0 * torch.log10(peak.square() / mse)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: Union[float, torch.Tensor] = 1.0, crop: int = 0,
         channel: str = "rgb", kind: str = "2d") -> torch.Tensor:
    """Structural similarity of each image (mean of the SSIM map), with a Gaussian window.

    Args:
        x, y: images ``(..., C, H, W)`` of the same shape, on the scale of ``data_range``.
        data_range: the peak value; sets the constants ``C1 = (0.01 L)²`` and ``C2 = (0.03 L)²``.
            A tensor broadcasts against the leading dimensions.
        crop: pixels removed from every side first.
        channel: ``"rgb"`` or ``"y"``.
        kind: ``"2d"``, ``"bsst"`` or ``"3d"`` (see the module's docstring).

    Returns:
        ``(...)`` float64.

    Raises:
        ValueError: ``kind="2d"`` on images smaller than the 11×11 window.
    """
    if kind not in SSIM_KINDS:
        raise ValueError(f"kind: expected one of {SSIM_KINDS}, got {kind!r}")
    x, y = _prepare_pair(x, y, crop, channel, data_range)
    if kind == "2d" and min(x.shape[-2:]) < 11:
        raise ValueError(f"x: SSIM 2d needs images of at least 11x11 after crop={crop}, got {tuple(x.shape[-2:])}")
    lead = x.shape[:-3]
    x, y = x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-3:])
    peak = torch.as_tensor(data_range, dtype=torch.float64, device=x.device)
    peak = peak.expand(lead).reshape(-1, 1, 1, 1) if peak.dim() else peak
    axes, taps, mode = _WINDOWS[kind]
    window = gaussian_taps(*taps)
    smooth = lambda v: _separable(v, window, axes, mode)  # noqa: E731
    mu_x, mu_y = smooth(x), smooth(y)
    var_x = smooth(x * x) - mu_x.square()
    var_y = smooth(y * y) - mu_y.square()
    cov = smooth(x * y) - mu_x * mu_y
    c1, c2 = (_K1 * peak).square(), (_K2 * peak).square()
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-3, -2, -1)).reshape(lead)


def gaussian_taps(size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalised 1-D Gaussian ``exp(-d² / 2σ²)``, ``d = -(size // 2) .. size // 2``, computed
    in float64 and then rounded to ``dtype`` (DSTNet stores its window in float32)."""
    d = torch.arange(size, dtype=torch.float64) - size // 2
    taps = torch.exp(-d.square() / (2 * sigma * sigma))
    return (taps / taps.sum()).to(dtype).double()


# kind -> (axes filtered, (taps, sigma[, dtype]), border mode); axes of (N, C, H, W)
_WINDOWS = {
    "2d": ((2, 3), (11, 1.5), "valid"),
    "bsst": ((1, 2, 3), (13, 1.5), "reflect"),
    "3d": ((1, 2, 3), (11, 1.5, torch.float32), "replicate"),
}


def _separable(v: torch.Tensor, taps: torch.Tensor, axes: Sequence[int], mode: str) -> torch.Tensor:
    """``v`` correlated with ``taps`` along each of ``axes`` (one 1-D pass per axis)."""
    for axis in axes:
        v = _filter_axis(v, taps, axis, mode)
    return v


def _filter_axis(v: torch.Tensor, taps: torch.Tensor, axis: int, mode: str) -> torch.Tensor:
    radius = taps.numel() // 2
    size = v.shape[axis]
    if mode != "valid":
        # index padding, not F.pad: scipy's reflect repeats the mirror when the radius exceeds the
        # axis (6 taps either side of 3 channels), which F.pad's modes refuse
        index = torch.arange(-radius, size + radius, device=v.device)
        if mode == "reflect":
            index = index % (2 * size)
            index = torch.where(index >= size, 2 * size - 1 - index, index)
        else:
            index = index.clamp(0, size - 1)
        v = v.index_select(axis, index)
    out_size = v.shape[axis] - 2 * radius
    # a sum of shifted slices: no layout change, and fast on the CPU in float64
    weights = taps.tolist()  # Python floats: no device sync per tap when v is on a GPU
    out = v.narrow(axis, 0, out_size) * weights[0]
    for k, weight in enumerate(weights[1:], start=1):
        out.add_(v.narrow(axis, k, out_size), alpha=weight)
    return out


def _prepare_pair(x, y, crop, channel, data_range):
    _check_images(x, "x")
    _check_images(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"y: expected the shape of x {tuple(x.shape)}, got {tuple(y.shape)}")
    if not isinstance(crop, int) or crop < 0 or 2 * crop >= min(x.shape[-2:]):
        raise ValueError(f"crop: expected an int in [0, {(min(x.shape[-2:]) - 1) // 2}] for images of "
                         f"{tuple(x.shape[-2:])}, got {crop!r}")
    if channel not in ("rgb", "y"):
        raise ValueError(f"channel: expected 'rgb' or 'y', got {channel!r}")
    if isinstance(data_range, (int, float)) and not (data_range > 0 and math.isfinite(data_range)):
        raise ValueError(f"data_range: expected a positive number, got {data_range!r}")
    x, y = x.double(), y.double()
    if channel == "y":
        x, y = rgb_to_y(x, data_range), rgb_to_y(y, data_range)
    if crop:
        x, y = x[..., crop:-crop, crop:-crop], y[..., crop:-crop, crop:-crop]
    return x, y


def _check_images(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (..., C, H, W), got {type(x).__name__}")
    if x.dim() < 3:
        raise ValueError(f"{name}: expected images of shape (..., C, H, W), got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        raise TypeError(f"{name}: expected a floating-point or uint8 tensor, got {x.dtype}")
