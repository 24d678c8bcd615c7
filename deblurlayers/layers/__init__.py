"""nn.Modules built on deblurlayers.ops (one file per layer family)."""
from .blocks import LayerNorm2d, ResBlock
from .cwgdn import CWGDN, ChannelDynamicKernels
from .dtff import DTFF, PixelDynamicKernels
from .wavelet_fp import WaveletFP

__all__ = ["CWGDN", "ChannelDynamicKernels", "DTFF", "PixelDynamicKernels", "WaveletFP", "LayerNorm2d", "ResBlock"]
