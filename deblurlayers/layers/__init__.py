"""nn.Modules built on deblurlayers.ops (one file per layer family)."""
from .blocks import LayerNorm2d
from .cwgdn import CWGDN, ChannelDynamicKernels

__all__ = ["CWGDN", "ChannelDynamicKernels", "LayerNorm2d"]
