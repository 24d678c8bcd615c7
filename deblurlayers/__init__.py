"""deblurlayers: video-deblurring layers with native C++/CUDA kernels.

Importing never compiles anything: the native op library is built on the
first call of an op that can use it (see ``native_status``).
"""
from . import flops, layers, models, ops
from .inference import optimize_for_inference, to_channels_last
from .info import native_status
from .layers import (CAB, CWGDN, DTFF, STDA, BlurAwareAlignment, BlurAwareSparseAttention, BlurAwareSparseTransformer,
                     BlurMap, ChannelAttention, DeformableAttention, DilatedPyramidBlock, FactorizedSTAttention,
                     FlowRefiner, GatedCAB, GradientMap, ModulatedDeformConv2d, MultiToMultiAttention,
                     MultiToSingleAttention, PyramidDeformableAlign, SFTGradientBranch, ShiftBlock, SoftComp, SoftSplit,
                     SwinGroup3d, SwinLayer3d, SwinReconstruction, WaveletFP, WindowAttention3d, sft)
from .version import __version__

__all__ = ["__version__", "native_status", "optimize_for_inference", "to_channels_last",
           "ops", "flops", "layers", "models", "CWGDN", "DTFF", "WaveletFP", "DeformableAttention", "STDA",
           "MultiToMultiAttention", "MultiToSingleAttention", "BlurMap", "BlurAwareSparseAttention",
           "BlurAwareAlignment", "FactorizedSTAttention", "ModulatedDeformConv2d", "DilatedPyramidBlock", "PyramidDeformableAlign",
           "GradientMap", "SFTGradientBranch", "SoftSplit", "SoftComp", "BlurAwareSparseTransformer", "sft",
           "ChannelAttention", "CAB", "GatedCAB", "ShiftBlock", "WindowAttention3d", "SwinLayer3d", "SwinGroup3d",
           "SwinReconstruction", "FlowRefiner"]
