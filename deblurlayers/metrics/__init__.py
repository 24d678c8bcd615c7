"""Image quality metrics as the papers compute them: :func:`psnr`, :func:`ssim` (three
Gaussian-window variants) and one :class:`Protocol` per paper (``PROTOCOLS``)."""
from .image import SSIM_KINDS, gaussian_taps, psnr, quantize, rgb_to_y, ssim
from .protocols import PROTOCOLS, FrameScores, Protocol, clip_starts, first_interior_clip, get_protocol

__all__ = ["psnr", "ssim", "quantize", "rgb_to_y", "gaussian_taps", "SSIM_KINDS", "Protocol", "PROTOCOLS",
           "get_protocol", "FrameScores", "clip_starts", "first_interior_clip"]
