"""Ops are complete (schema, fake kernel, autograd, FLOP formula, autocast) from import on, before
anything is compiled, and an op defined later is registered as completely."""
import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import deblurlayers
from deblurlayers._native import define, specs

PACKAGE = pathlib.Path(deblurlayers.__file__).parent
FORWARD_OPS = ["haar_dwt2d", "haar_idwt2d", "pixel_dynamic_filter", "ms_deform_attn", "deform_conv2d"]


def run_fresh(code, **env):
    """Run ``code`` in a new interpreter (nothing of deblurlayers loaded); return its stdout."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**__import__("os").environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_op_is_defined_at_import_without_building():
    out = run_fresh("""
        import torch, deblurlayers
        from torch.utils.flop_counter import FlopCounterMode
        x = torch.zeros(1, 4, 8, 8, device="meta")
        with FlopCounterMode(display=False) as counter:
            ll, highs = torch.ops.deblurlayers.haar_dwt2d(x, 0.25)
        print(sorted(deblurlayers._native.specs()))
        print(tuple(highs.shape), counter.get_total_flops())
        print(deblurlayers.native_status()["status"])
    """, DEBLURLAYERS_BACKEND="reference")
    names, shape_and_flops, status = out.splitlines()
    assert set(FORWARD_OPS) <= set(eval(names))
    assert shape_and_flops == "(1, 12, 4, 4) 2048"  # 4 MACs per input element, 256 elements
    assert status == "disabled"  # nothing was compiled


def test_no_import_from_native_up_into_ops():
    for path in (PACKAGE / "_native").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = ("." * node.level) + (node.module or "")
                assert "ops" not in target.split(".") and "layers" not in target.split("."), (path.name, target)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("deblurlayers.ops") for a in node.names), path.name


def test_each_forward_op_has_fake_autograd_flops_and_autocast():
    for name in FORWARD_OPS:
        spec = specs()[name]
        assert spec.backward is not None and spec.flops is not None and spec.autocast, name
        op = getattr(torch.ops.deblurlayers, name).default
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Meta"), name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "AutocastCPU"), name


# A later op, defined the way the library's are: everything must be in place at once.
def _scale_fake(x, factor):
    return torch.empty_like(x)


def _scale_backward(ctx, grad):
    return torch.ops.deblurlayers._test_scale(grad, ctx.factor), None


def _scale_context(ctx, inputs, output):
    ctx.factor = inputs[1]


def _scale_flops(x_shape, factor, *args, out_shape=None, **kwargs):
    return 7 * torch.Size(x_shape).numel()


def test_an_op_defined_later_is_registered_completely():
    define("_test_scale(Tensor x, float factor) -> Tensor", fake=_scale_fake, flops=_scale_flops,
           backward=_scale_backward, setup_context=_scale_context, autocast=True)
    torch.library.impl("deblurlayers::_test_scale", "CPU")(lambda x, factor: x * factor)
    op = torch.ops.deblurlayers._test_scale
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(op, (x, 2.5))
    assert torch.autograd.gradcheck(lambda t: op(t, 2.5), (x,))
    with FlopCounterMode(display=False) as counter:
        op(torch.randn(4, 5), 2.0)
    assert counter.get_total_flops() == 7 * 20
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert op(torch.randn(3, dtype=torch.bfloat16), 2.0).dtype == torch.float32
    assert op(torch.zeros(3, device="meta"), 1.0).device.type == "meta"


@pytest.mark.parametrize("name", FORWARD_OPS)
def test_native_op_runs_in_float32_under_autocast(name, native_ops):
    args = _op_args(name)
    expected = getattr(native_ops, name)(*args)
    low = [a.bfloat16() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = getattr(native_ops, name)(*low)
    outs, refs = (out, expected) if isinstance(out, tuple) else ((out,), (expected,))
    rounded = getattr(native_ops, name)(*[a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                                         for a in low])
    rounded = rounded if isinstance(rounded, tuple) else (rounded,)
    for o, r in zip(outs, rounded):
        assert o.dtype == torch.float32
        torch.testing.assert_close(o, r)  # exactly the fp32 op on the bf16-rounded inputs


def _op_args(name):
    gen = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    if name == "haar_dwt2d":
        return rand(1, 4, 8, 8), 0.25
    if name == "haar_idwt2d":
        return rand(1, 4, 4, 4), rand(1, 12, 4, 4), 1.0
    if name == "pixel_dynamic_filter":
        return rand(1, 4, 8, 8), rand(1, 36, 2, 2), 3
    if name == "ms_deform_attn":
        shapes = torch.tensor([[4, 4], [2, 2]])
        return (rand(1, 20, 2, 4), shapes, torch.tensor([0, 16]), rand(1, 6, 2, 2, 3, 2),
                rand(1, 6, 2, 2, 3).softmax(-1))
    return (rand(1, 4, 6, 6), 2 * rand(1, 18, 6, 6) - 1, rand(1, 9, 6, 6), rand(3, 4, 3, 3), rand(3),
            [1, 1], [1, 1], [1, 1], 1, 1)


LAYER_FLOPS_CODE = """
import json, sys
sys.path.insert(0, {tests!r})
from torch.utils.flop_counter import FlopCounterMode
from deblurlayers.flops import EXTRA_ATEN_FORMULAS, count_flops
from layer_cases import LAYERS, make
result = {{}}
for name in LAYERS:
    layer, inputs = make(name)
    # opened before any op of the process ran; count_flops adds grid_sample's formula (PyTorch
    # counts it as 0), so the comparison does too
    with FlopCounterMode(display=False, custom_mapping=EXTRA_ATEN_FORMULAS) as counter:
        layer(*inputs)
    result[name] = [counter.get_total_flops(), count_flops(layer, *inputs).flops]
print(json.dumps(result))
"""


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_flop_counter_opened_first_counts_every_layer_like_count_flops(backend):
    import json

    code = LAYER_FLOPS_CODE.format(tests=str(pathlib.Path(__file__).parent))
    result = json.loads(run_fresh(code, DEBLURLAYERS_BACKEND=backend).splitlines()[-1])
    from layer_cases import LAYERS

    assert sorted(result) == sorted(LAYERS)
    for name, (counted, expected) in result.items():
        assert counted == expected > 0 or name == "BlurMap" and counted == expected == 0, name
