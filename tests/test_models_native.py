"""Whole models, native backend against the reference backend (issue 22's model-level check).

The border fuzz (test_ops_border_fuzz.py) proves the kernels; this checks what a user runs: the full
default-width models, with every native op in place, give the reference backend's output. BSSTNet
runs with its RAFT flow estimator, whose flows drive the DCNs' samples far outside the frame.
"""
import pytest
import torch

from deblurlayers.models import BSSTNet, ERDN
from deblurlayers.utils.env import use_backend

pytestmark = pytest.mark.slow  # the full-width models, twice


def outputs_on_both_backends(model, clip):
    outs = {}
    for backend in ("native", "reference"):
        with torch.inference_mode(), use_backend(backend):
            outs[backend] = model(clip)
    return outs["native"], outs["reference"]


@pytest.mark.parametrize("model_fn, clip_shape", [
    (lambda: ERDN(), (1, 5, 3, 32, 32)),
    (lambda: BSSTNet(), (1, 4, 3, 256, 256)),
], ids=["erdn_32x32", "bsstnet_raft_256x256"])
def test_native_model_equals_the_reference_backend(native_ops, model_fn, clip_shape):
    torch.manual_seed(0)
    model = model_fn().eval()
    native, reference = outputs_on_both_backends(model, torch.rand(clip_shape))
    assert native.isfinite().all() and reference.isfinite().all()
    torch.testing.assert_close(native, reference, atol=1e-5, rtol=1e-5)
