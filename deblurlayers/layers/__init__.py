"""nn.Modules built on deblurlayers.ops (one file per layer family)."""
from .blur_map import BlurMap
from .bsst import (BlurAwareSparseAttention, BlurAwareSparseTransformer, FusionFeedForward, SoftComp, SoftSplit,
                   SparseWindowAttention)
from .factorized_attention import FactorizedSTAttention
from .blocks import LayerNorm2d, ResBlock
from .deformable_attention import DeformableAttention
from .stda import STDA, MultiToMultiAttention, MultiToSingleAttention
from .cwgdn import CWGDN, ChannelDynamicKernels
from .dtff import DTFF, PixelDynamicKernels
from .wavelet_fp import WaveletFP
from .deform_conv import BlurAwareAlignment, ModulatedDeformConv2d
from .pyramid_align import DilatedPyramidBlock, PyramidDeformableAlign
from .gradient_branch import GradientMap, SFTGradientBranch, sft
from .cab import CAB, ChannelAttention, GatedCAB
from .swin3d import SwinGroup3d, SwinLayer3d, SwinReconstruction, WindowAttention3d
from .shift import ShiftBlock
from .flow_refiner import FlowRefiner

__all__ = ["BlurMap", "BlurAwareSparseAttention", "BlurAwareSparseTransformer", "SoftSplit", "SoftComp",
           "FusionFeedForward", "SparseWindowAttention", "FactorizedSTAttention", "DeformableAttention", "STDA", "MultiToMultiAttention", "MultiToSingleAttention", "CWGDN", "ChannelDynamicKernels", "DTFF", "PixelDynamicKernels", "WaveletFP", "LayerNorm2d", "ResBlock",
           "ModulatedDeformConv2d", "BlurAwareAlignment", "DilatedPyramidBlock", "PyramidDeformableAlign", "GradientMap",
           "SFTGradientBranch", "sft", "ChannelAttention", "CAB", "GatedCAB", "WindowAttention3d", "SwinLayer3d",
           "SwinGroup3d", "SwinReconstruction", "ShiftBlock", "FlowRefiner"]
