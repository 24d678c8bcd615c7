"""deblurlayers: video-deblurring layers with native C++/CUDA kernels.

Importing never compiles anything: the native op library is built on the
first call of an op that can use it (see ``native_status``).
"""
from . import flops, layers, models, ops
from .info import native_status
from .layers import (CWGDN, DTFF, STDA, BlurAwareAlignment, BlurAwareSparseAttention, BlurAwareSparseTransformer,
                     BlurMap, DeformableAttention, DilatedPyramidBlock, FactorizedSTAttention, GradientMap,
                     ModulatedDeformConv2d, MultiToMultiAttention, MultiToSingleAttention, PyramidDeformableAlign,
                     SFTGradientBranch, SoftComp, SoftSplit, WaveletFP, sft)
from .version import __version__

__all__ = ["__version__", "native_status", "ops", "flops", "layers", "models", "CWGDN", "DTFF", "WaveletFP", "DeformableAttention", "STDA",
           "MultiToMultiAttention", "MultiToSingleAttention", "BlurMap", "BlurAwareSparseAttention",
           "BlurAwareAlignment", "FactorizedSTAttention", "ModulatedDeformConv2d", "DilatedPyramidBlock", "PyramidDeformableAlign",
           "GradientMap", "SFTGradientBranch", "SoftSplit", "SoftComp", "BlurAwareSparseTransformer", "sft"]
