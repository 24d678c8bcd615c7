"""Small configurations of the mission layers and inputs of any (B, T, H, W), shared by the layer
standard tests (tests/test_layers_standard.py) and the fresh-process FLOP test."""
import torch

import deblurlayers as d


def _rand(*shape):
    return torch.rand(*shape)


def _sft_inputs(b, t, h, w):
    return _rand(b, 3, h, w), [_rand(b, 8 << j, h >> j, w >> j) for j in range(3)]


# name -> (build, inputs(b, t, h, w), main argument name, frames: None for any T, the fixed T,
#          or 0 for a layer without a time axis)
LAYERS = {
    "DeformableAttention": (lambda: d.DeformableAttention(16, 2, 3, 2),
                            lambda b, t, h, w: (_rand(b, 3, 16, h, w), _rand(b, 3, 16, h, w)),
                            "value", 3),
    "STDA": (lambda: d.STDA(16, 2, 2),
             lambda b, t, h, w: (_rand(b, 3, 16, h, w), _rand(b, 2, 2, h, w), _rand(b, 2, 2, h, w)),
             "x", 3),
    "BlurMap": (lambda: d.BlurMap(),
                lambda b, t, h, w: (4 * _rand(b, t - 1, 2, h, w), 4 * _rand(b, t - 1, 2, h, w)),
                "flows_to_next", None),
    "BlurAwareSparseAttention": (lambda: d.BlurAwareSparseAttention(32, 2, window_size=4, pool_size=2, hidden_dim=50),
                                 lambda b, t, h, w: (_rand(b, t, h, w, 32), _rand(b, t, 1, h, w)),
                                 "tokens", None),
    "FactorizedSTAttention": (lambda: d.FactorizedSTAttention(16),
                              lambda b, t, h, w: (_rand(b, t, 16, h, w),), "x", None),
    "CWGDN": (lambda: d.CWGDN(16), lambda b, t, h, w: (_rand(b, t, 16, h, w),), "x", None),
    "DTFF": (lambda: d.DTFF(16, 1), lambda b, t, h, w: (_rand(b, 16, h, w), _rand(b, 16, h, w)),
             "x", 0),
    "WaveletFP": (lambda: d.WaveletFP(16, num_blocks=1, num_cwgdn=1),
                  lambda b, t, h, w: (_rand(b, t, 16, h, w),), "x", None),
    "DilatedPyramidBlock": (lambda: d.DilatedPyramidBlock(16, 2), lambda b, t, h, w: (_rand(b, 32, h, w),),
                            "x", 0),
    "SFTGradientBranch": (lambda: d.SFTGradientBranch(n_feat=8), _sft_inputs, "grad", 0),
    "ModulatedDeformConv2d": (lambda: d.ModulatedDeformConv2d(16, 16, deformable_groups=2),
                              lambda b, t, h, w: (_rand(b, 16, h, w), _rand(b, 16, h, w)), "x", 0),
    # BSSTNet's borrowed blocks (a zero-initialised gate or output conv: see perturb_zero_init)
    "CAB": (lambda: d.CAB(16), lambda b, t, h, w: (_rand(b, 16, h, w),), "x", 0),
    "GatedCAB": (lambda: d.GatedCAB(16, 5, extra_channels=8), lambda b, t, h, w: (_rand(b, 24, h, w),), "x", 0),
    "ShiftBlock": (lambda: d.ShiftBlock(16), lambda b, t, h, w: (_rand(b, t, 16, h, w),), "x", None),
    "SwinReconstruction": (lambda: d.SwinReconstruction(12, 12, groups=3, num_heads=2, window_size=(2, 4, 4)),
                           lambda b, t, h, w: (_rand(b, t, 12, h, w),), "x", None),
    "FlowRefiner": (lambda: d.FlowRefiner(16, 4), lambda b, t, h, w: (_rand(b, t, 1, h, w), 2 * _rand(b, t, 2, h, w)),
                    "flows", None),
}


def make(name, b=1, t=3, h=8, w=8, seed=0):
    torch.manual_seed(seed)
    build, inputs, *_ = LAYERS[name]
    return build(), inputs(b, t, h, w)
