"""Every model's bad inputs, one table per model (as the layers' in ``layer_cases.py``), run by
``test_models.py::test_bad_input``: forward arguments, losses, whole-clip methods, constructors.

A case is ``(id, call, exception, message pattern)``; ``call`` gets the model in its small test
configuration (eval mode). The pattern must name the argument, the expectation and what was given.
"""
import torch

from deblurlayers.layers import BlurAwareAlignment, ShiftBlock
from deblurlayers.models import (BSSTNet, ERDN, bsstnet_loss, dstnet_loss, erdn_loss, stdanet_loss,
                                 stdanet_stack_loss)
from model_cases import BSSTNET_SMALL, CASES, MIN_FRAMES, clip


def _x(name, t=None, height=16, width=16):
    return clip(name, batch=1, frames=t, height=height, width=width)


def _frame_contract(name):
    """The clip checks every model shares (``check_clip``)."""
    t = CASES[name][1]
    cases = [
        ("4-d frames", lambda m: m(torch.rand(1, 3, 16, 16)), ValueError, r"frames: expected a 5-d tensor"),
        ("4 channels", lambda m: m(torch.rand(1, t, 4, 16, 16)), ValueError, r"frames: expected shape .*C=3"),
        ("zero height", lambda m: m(torch.rand(1, t, 3, 0, 16)), ValueError,
         r"frames: expected H >= 1 in \(B, T, C, H, W\)"),
        ("integer frames", lambda m: m(torch.ones(1, t, 3, 16, 16, dtype=torch.int64)), TypeError,
         r"frames: expected a floating-point tensor"),
        ("float64 frames, float32 model", lambda m: m(torch.rand(1, t, 3, 16, 16, dtype=torch.float64)), TypeError,
         r"frames: expected dtype torch.float32"),
        # a clip on the meta device used to come back as a meta tensor from some models
        ("meta frames, CPU model", lambda m: m(torch.rand(1, t, 3, 16, 16, device="meta")), ValueError,
         r"frames: expected a tensor on cpu \(the device of the parameters\), got meta"),
    ]
    if name.startswith(("stdanet", "erdn")):
        cases.append(("one frame too many", lambda m: m(torch.rand(1, t + 1, 3, 16, 16)), ValueError,
                      rf"frames: expected shape \(B, T={t}"))
    else:
        fewest = MIN_FRAMES.get(name, 1)
        cases.append(("too few frames", lambda m: m(torch.rand(1, fewest - 1, 3, 16, 16)), ValueError,
                      rf"frames: expected T >= {fewest} in \(B, T, C, H, W\)"))
    return cases


def _details(m, name, t=None):
    return m(_x(name, t, 8, 8), return_details=True)


_STDANET = [
    ("loss: the centre frame as target", lambda m: stdanet_loss(_details(m, "stdanet"), torch.rand(1, 3, 8, 8)),
     ValueError, r"sharp: expected .*T=3"),
    ("loss: a tensor instead of the details", lambda m: stdanet_loss(m(_x("stdanet", 3, 8, 8)),
                                                                     torch.rand(1, 3, 3, 8, 8)),
     TypeError, r"output: expected the STDANetOutput of STDANet\("),
]
_STDANET_STACK = [
    ("stack loss: a 3-frame target", lambda m: stdanet_stack_loss(_details(m, "stdanet_stack"),
                                                                   torch.rand(1, 3, 3, 8, 8)),
     ValueError, r"sharp: expected .*T=5"),
    ("stack loss: a one-stage output", lambda m: stdanet_stack_loss(m(_x("stdanet_stack", 5, 8, 8)),
                                                                    torch.rand(1, 5, 3, 8, 8)),
     TypeError, r"STDANetStack\(frames, return_details=True\)"),
]
_DSTNET = [
    ("loss: one target frame for two", lambda m: dstnet_loss(torch.rand(1, 2, 3, 8, 8), torch.rand(1, 1, 3, 8, 8)),
     ValueError, r"sharp: expected the shape"),
]
_FSTANET = [
    ("reference out of range", lambda m: m(_x("fstanet", 5), reference=5), ValueError,
     r"reference: expected a frame index in \[0, T=5\)"),
]


def _erdn_x(t):
    return clip(batch=1, frames=t, height=16, width=24, seed=1)


_ERDN = [
    ("4 frames", lambda m: m(_erdn_x(4)), ValueError, r"frames: expected shape \(B, T=5, C=3, H, W\).*\(1, 4, 3, 16, 24\)"),
    ("stages=3", lambda m: ERDN(stages=3), ValueError, r"stages: expected 1 \(3 frames\) or 2"),
    ("stage: H not a multiple of 8", lambda m: m.stages[0](torch.rand(1, 3, 3, 12, 16), torch.rand(1, 3, 12, 16)),
     ValueError, r"frames: expected H and W divisible by 8"),
    ("stage: grad of one channel", lambda m: m.stages[0](torch.rand(1, 3, 3, 16, 16), torch.rand(1, 1, 16, 16)),
     ValueError, r"grad: expected shape \(B=1, C=3, H=16, W=16\)"),
    ("restore_clip: border='reflect'", lambda m: m.restore_clip(_erdn_x(5), border="reflect"), ValueError,
     r"border: expected one of"),
    ("restore_clip: 4 frames without border", lambda m: m.restore_clip(_erdn_x(4), border="none"), ValueError,
     r"frames: expected T >= 5"),
    ("restore_clip: 1 frame", lambda m: m.restore_clip(_erdn_x(1)), ValueError, r"frames: expected T >= 2"),
    ("restore_clip: windows_per_batch=0", lambda m: m.restore_clip(_erdn_x(5), windows_per_batch=0), ValueError,
     r"windows_per_batch: expected an int >= 1"),
    ("loss: a tensor instead of the details", lambda m: erdn_loss(m(_erdn_x(5)), _erdn_x(5)), TypeError,
     r"output: expected the ERDNOutput"),
    ("loss: a 3-frame target", lambda m: erdn_loss(m(_erdn_x(5), return_details=True), _erdn_x(3)), ValueError,
     r"sharp: expected shape \(B, T=5"),
    ("loss: align_target='neighbours'", lambda m: erdn_loss(m(_erdn_x(5), return_details=True), _erdn_x(5),
                                                            align_target="neighbours"),
     ValueError, r"align_target: expected 'centre' or 'own'"),
]

_BSST_FLOWS = torch.zeros(1, 2, 2, 8, 8)  # flows of a 3-frame 20x24 clip on the 1/4 grid of 32x32


def _bsst_x():
    return clip("bsstnet", batch=1, frames=3, height=20, width=24)


_BSSTNET = [
    ("one flow direction", lambda m: m(_bsst_x(), _BSST_FLOWS), ValueError,
     r"flows_to_next, flows_to_prev: expected both or neither"),
    ("flows on another grid", lambda m: m(_bsst_x(), _BSST_FLOWS, torch.zeros(1, 2, 2, 5, 6)), ValueError,
     r"flows_to_prev: expected shape \(B=1, N=2, 2, H=8, W=8\)"),
    ("one flow too many", lambda m: m(_bsst_x(), torch.zeros(1, 3, 2, 8, 8), _BSST_FLOWS), ValueError,
     r"flows_to_next: expected shape \(B=1, N=2"),
    ("integer flows", lambda m: m(_bsst_x(), _BSST_FLOWS, _BSST_FLOWS.long()), TypeError,
     r"flows_to_prev: expected a floating-point tensor"),
    ("no estimator and no flows", lambda m: BSSTNet(**{**BSSTNET_SMALL, "flow_estimator": None})(_bsst_x()),
     ValueError, r"flows_to_next: required, got None"),
    ("flow_iters=0", lambda m: BSSTNet(flow_iters=0), ValueError, r"flow_iters: expected an int >= 1"),
    ("flow_estimator='spynet'", lambda m: BSSTNet(flow_estimator="spynet"), TypeError,
     r"flow_estimator: expected 'raft', an nn.Module or None"),
    ("mid_channels=64", lambda m: BSSTNet(mid_channels=64), ValueError, r"mid_channels: expected a multiple of 3"),
    ("deformable_groups=5", lambda m: BSSTNet(deformable_groups=5), ValueError,
     r"deformable_groups: expected an even divisor"),
    ("restore: tile=100", lambda m: m.restore(_bsst_x(), tile=100), ValueError, r"tile: expected a multiple of 16"),
    ("restore: frames_per_clip=1", lambda m: m.restore(_bsst_x(), frames_per_clip=1), ValueError,
     r"frames_per_clip: expected an int >= 2"),
    ("loss: a 2-frame target", lambda m: bsstnet_loss(torch.rand(1, 3, 3, 8, 8), torch.rand(1, 2, 3, 8, 8)),
     ValueError, r"sharp"),
    ("ShiftBlock(8)", lambda m: ShiftBlock(8), ValueError, r"channels: expected >= 16"),
    ("BlurAwareAlignment: odd groups", lambda m: BlurAwareAlignment(8, deformable_groups=3), ValueError,
     r"deformable_groups: expected an even int"),
    ("BlurAwareAlignment: sharp of 29 channels",
     lambda m: BlurAwareAlignment(8, deformable_groups=4)(torch.zeros(1, 16, 5, 5), torch.zeros(1, 29, 5, 5),
                                                          torch.zeros(1, 2, 2, 5, 5), torch.zeros(1, 1, 5, 5)),
     ValueError, r"sharp: expected shape \(B=1, F=2"),
]

_SPECIFIC = {"stdanet": _STDANET, "stdanet_stack": _STDANET_STACK, "dstnet": _DSTNET, "dstnet_l": _DSTNET,
             "fstanet": _FSTANET, "erdn": _ERDN, "bsstnet": _BSSTNET}

# name -> the model's table: the shared clip contract, then its own cases
BAD_INPUTS = {name: _frame_contract(name) + _SPECIFIC.get(name, []) for name in CASES}
