"""deblurlayers: video-deblurring layers with native C++/CUDA kernels.

Importing never compiles anything: the native op library is built on the
first call of an op that can use it (see ``native_status``).
"""
from . import flops, layers, ops
from .info import native_status
from .layers import CWGDN, BlurAwareSparseAttention, BlurMap, FactorizedSTAttention, DTFF, STDA, DeformableAttention, MultiToMultiAttention, MultiToSingleAttention, WaveletFP
from .version import __version__

__all__ = ["__version__", "native_status", "ops", "flops", "layers", "CWGDN", "DTFF", "WaveletFP", "DeformableAttention", "STDA",
           "MultiToMultiAttention", "MultiToSingleAttention", "BlurMap", "BlurAwareSparseAttention",
           "FactorizedSTAttention"]
