"""The standard every mission layer meets (conventions §5, issue 12): bf16 autocast forward and
backward close to fp32, torch.compile(dynamic=True) reusing its graph at a new size, and the same
errors and empty results for malformed inputs."""
import inspect

import pytest
import torch
from torch.utils._pytree import tree_leaves

from layer_cases import LAYERS, make

NAMES = sorted(LAYERS)
# A new T is a new graph where T sets Python structure: WaveletFP's DTFF recurrence and the flow
# refiner's second-order propagation are loops over the frames; BSST's frame selection sizes its
# top-k and frame groups from T (static shapes, so the sparse attention compiles without
# data-dependent sizes). Documented on their pages.
RECOMPILE_ON_NEW_T = {"WaveletFP", "BlurAwareSparseAttention", "FlowRefiner"}
# bf16 keeps 8 bits of mantissa: relative to the output's largest value
AUTOCAST_TOLERANCE = 0.03


def main_index(name):
    layer, _ = make(name)
    return list(inspect.signature(layer.forward).parameters).index(LAYERS[name][2])


def with_main(name, inputs, value):
    inputs = list(inputs)
    inputs[main_index(name)] = value
    return inputs


def perturb_zero_init(layer):
    """Zero-initialised heads (offsets) hide the paths behind them from the comparison."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in layer.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def float_leaves(out):
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_forward_and_backward_close_to_fp32(name):
    layer, inputs = make(name, b=2, h=8, w=8) if name not in ("DTFF", "WaveletFP") else make(name, b=2, h=16, w=16)
    perturb_zero_init(layer)
    reference = float_leaves(layer(*inputs))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = float_leaves(layer(*inputs))
    trainable = [o for o in out if o.requires_grad]
    if trainable:  # BlurMap (no parameters, detached flows) has nothing to differentiate
        sum(o.float().sum() for o in trainable).backward()
    for o, r in zip(out, reference):
        error = (o.float() - r).abs().max() / r.abs().max().clamp_min(1e-6)
        assert error < AUTOCAST_TOLERANCE, (name, float(error))
    grads = [p.grad for p in layer.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), name


# Sizes for the dynamic-shape test. Under PyTorch's duck shaping, dims of equal size share one
# symbol, so a batch, frame count or H equal to a fixed size (a flow's 2 channels, a layer's width)
# is specialised with it; these sizes coincide with none of the cases' fixed sizes. PyTorch's conv
# shape function also guards its memory-format choice on the conv batch (< 16) and on H // 16:
# both calls stay on one side of those thresholds, as a real training or inference run does.
DYNAMIC_SIZES = [(6, 5, 40, 56), (8, 5, 56, 72)]
NEW_T = 7


@pytest.mark.parametrize("name", NAMES)
def test_compile_dynamic_reuses_the_graph_at_a_new_size(name):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    layer, _ = make(name)
    compiled = torch.compile(layer, backend=backend, dynamic=True, fullgraph=True)
    frames = LAYERS[name][3]
    for b, t, h, w in DYNAMIC_SIZES:
        _, inputs = make(name, b=b, t=frames or t, h=h, w=w)
        for got, want in zip(float_leaves(compiled(*inputs)), float_leaves(layer(*inputs))):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert len(graphs) == 1, f"{name}: recompiled for a new batch and H x W"
    if frames is None and name not in RECOMPILE_ON_NEW_T:
        b, _, h, w = DYNAMIC_SIZES[-1]
        compiled(*make(name, b=b, t=NEW_T, h=h, w=w)[1])
        assert len(graphs) == 1, f"{name}: recompiled for a new T"


@pytest.mark.parametrize("name", NAMES)
def test_integer_input_is_a_type_error_naming_the_argument(name):
    layer, inputs = make(name)
    main = LAYERS[name][2]
    bad = with_main(name, inputs, (inputs[main_index(name)] * 10).long())
    with pytest.raises(TypeError, match=rf"{main}: expected a floating-point tensor, got dtype torch.int64"):
        layer(*bad)


@pytest.mark.parametrize("name", NAMES)
def test_dtype_other_than_the_parameters_is_a_type_error_outside_autocast(name):
    layer, inputs = make(name)
    if next(layer.parameters(), None) is None:
        pytest.skip(f"{name} has no parameters: any floating dtype is its own")
    main = LAYERS[name][2]
    bad = with_main(name, inputs, inputs[main_index(name)].double())
    with pytest.raises(TypeError, match=rf"{main}: expected dtype torch.float32 \(that of the parameters"):
        layer(*bad)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_gives_empty_results_of_the_right_shape(name):
    layer, inputs = make(name, b=1)
    _, empty_inputs = make(name, b=0)
    for p in layer.parameters():
        p.grad = None
    full, empty = float_leaves(layer(*inputs)), float_leaves(layer(*empty_inputs))
    assert [tuple(e.shape) for e in empty] == [(0, *f.shape[1:]) for f in full]
    trainable = [e for e in empty if e.requires_grad]
    if trainable:  # a training step over an empty batch works, with zero gradients
        sum(e.sum() for e in trainable).backward()
        assert all(p.grad is None or not p.grad.any() for p in layer.parameters())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", ["H", "W", "T"])
def test_empty_frames_are_a_value_error_naming_the_minimum(name, dim):
    layer, _ = make(name)
    main = LAYERS[name][2]
    if dim == "T":
        if LAYERS[name][3] is not None or name == "BlurMap":
            pytest.skip(f"{name}: no free T (fixed or no time axis), or T - 1 = 0 flows is a valid one-frame clip")
        _, inputs = make(name, t=0)
    else:
        _, inputs = make(name, h=0 if dim == "H" else 8, w=0 if dim == "W" else 8)
    label = {"H": "[Hh]", "W": "[Ww]", "T": "T"}[dim]
    with pytest.raises(ValueError, match=rf"{main}: expected {label} >= \d+ in \("):
        layer(*inputs)
