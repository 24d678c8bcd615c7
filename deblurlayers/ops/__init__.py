"""Functional ops: input checks, backend choice, native kernel or PyTorch reference.

Every op with a native kernel has a ``*_reference`` twin with the same
signature and result, the oracle in tests and the fallback without a compiler.
"""
from ..utils.env import use_backend
from .deform_conv import deform_conv2d, deform_conv2d_reference
from .deform_attn import level_start_index, ms_deform_attn, ms_deform_attn_reference
from .dynamic_filter import channel_dynamic_filter, pixel_dynamic_filter, pixel_dynamic_filter_reference
from .flow_warp import all_pairs_flows, compose_flows, flow_warp, masked_flow_warp
from .haar import haar_dwt2d, haar_dwt2d_reference, haar_idwt2d, haar_idwt2d_reference

__all__ = [
    "use_backend",
    "channel_dynamic_filter",
    "flow_warp",
    "masked_flow_warp",
    "compose_flows",
    "all_pairs_flows",
    "deform_conv2d",
    "deform_conv2d_reference",
    "level_start_index",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "pixel_dynamic_filter",
    "pixel_dynamic_filter_reference",
    "haar_dwt2d",
    "haar_idwt2d",
    "haar_dwt2d_reference",
    "haar_idwt2d_reference",
]
