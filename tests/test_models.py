"""Every registered model (model_cases.CASES): registry, official counts and key manifests of the
models without a file of their own for them, load_official, shapes, gradients, autocast, compile,
export, FLOP counting, bad inputs, and a short overfitting run. Each paper's own checks are in
test_models_<paper>.py."""
import pytest
import torch
import torch.nn.functional as F

from deblurlayers.flops import count_flops
from deblurlayers.models import (STDANet, get_model, list_models,
                                 load_official, register_model)
from helpers import count_parameters
from model_bad_inputs import BAD_INPUTS
from model_cases import (CASES, CLIP_MODELS, clip, manifest, official_state_dict,
                         perturb_zero_init, small, training_loss)


NAMES = sorted(CASES)


def test_every_registered_model_has_a_case():
    assert set(list_models()) == set(CASES)


def test_registry_errors():
    with pytest.raises(ValueError, match="name: expected one of"):
        get_model("no_such_model")
    with pytest.raises(ValueError, match="already registered"):
        register_model("stdanet")(STDANet)


HAAR_VALUES = 16 * 64  # DSTNet's frozen Haar filters: official "parameters", a fixed op here


@pytest.mark.parametrize("name", ["stdanet", "stdanet_stack", "dstnet", "dstnet_l"])
def test_parameter_count_matches_the_official_model(name):
    facts = manifest(CASES[name][2])
    model = get_model(name)
    frozen = HAAR_VALUES if name.startswith("dstnet") else 0
    assert count_parameters(model) == facts["parameters"] - frozen
    assert count_parameters(model, trainable_only=True) == facts["trainable"]
    assert facts["parameters_in_uncalled_modules"] == 0


SPOT_CHECKS = {
    "stdanet": {"MMA.emb_qk.weight": "stda.MMA.emb_qk.weight", "MSA.fusion.0.weight": "stda.MSA.fusion.0.weight",
                "motion_out.bias": "motion_out.bias", "decoder_second.3.0.weight": "decoder_second.3.0.weight"},
    "stdanet_stack": {"recons_net.MMA.defor_attn.sampling_offsets.weight":
                      "recons_net.stda.MMA.defor_attn.sampling_offsets.weight",
                      "recons_net.outBlock.3.weight": "recons_net.outBlock.3.weight"},
    "dstnet": {"forward_propagation.conv1.weight": "wavelet_fp.forward_propagation.conv1.weight",
               "transformer_scale4.0.0.norm2.body.weight": "wavelet_fp.transformer_scale4.0.0.norm2.body.weight",
               "recons.bias": "recons.bias"},
    "dstnet_l": {"up.weight": "wavelet_fp.up.weight", "down.bias": "wavelet_fp.down.bias"},
}


@pytest.mark.parametrize("name", ["stdanet", "stdanet_stack", "dstnet", "dstnet_l"])
def test_official_key_manifest_loads_strictly(name):
    facts = manifest(CASES[name][2])
    state = official_state_dict(facts)
    model = get_model(name)
    result = load_official(model, state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    own = model.state_dict()
    for official, ours in SPOT_CHECKS[name].items():
        assert official in state, f"spot check {official!r} is not an official key"
        assert ours in own, f"spot check target {ours!r} is not a key of the model"
        assert torch.equal(own[ours], state[official]), official
    if name.startswith("dstnet"):
        assert list(result.discarded_keys) == ["wave.haar_weights"]
        assert torch.equal(own["feat_extractor.weight"], state["feat_extractor.weight"][:, :, 0])
    # every official tensor landed somewhere: the loaded values add up to the official ones
    total = sum(v.double().sum() for k, v in state.items() if k != "wave.haar_weights")
    assert torch.isclose(sum(v.double().sum() for v in own.values()), total)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_model_loads_a_library_state_dict(name):
    source, target = small(name), small(name)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)
    result = load_official(target, {"state_dict": source.state_dict()})
    assert result.missing_keys == result.unexpected_keys == []
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))


@pytest.mark.parametrize("name", NAMES)
def test_built_on_meta_then_to_empty_and_loaded_equals_the_model(name):
    # The deferred-initialisation recipe for large models: nothing derived may stay uninitialised.
    source = small(name).eval()
    with torch.device("meta"):
        model = small(name)
    model = model.to_empty(device="cpu")
    model.load_state_dict(source.state_dict())
    estimator = getattr(model, "flow_estimator", None)
    if estimator is not None:  # kept outside the state dict: loaded on its own, as raft-things.pth is
        estimator.load_state_dict(source.flow_estimator.state_dict())
    x = clip(name, batch=1, height=16, width=16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_frames_in_0_255_draw_one_warning_naming_frames(name):
    import warnings

    model = small(name).eval()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(255 * clip(name, batch=1, height=16, width=16))
        model(clip(name, batch=1, height=16, width=16))
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning) and "frames:" in str(w.message)]
    assert len(messages) == 1 and "take frames in [0, 1]" in messages[0]


def test_load_official_type_errors():
    with pytest.raises(TypeError, match="model: expected one of"):
        load_official(torch.nn.Linear(2, 2), {})
    with pytest.raises(TypeError, match="checkpoint: expected a path or a state dict"):
        load_official(small("dstnet"), 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(18, 22), (16, 16), (7, 9)])
def test_output_shapes_any_size(name, size):
    model = small(name).eval()
    x = clip(name, batch=2, height=size[0], width=size[1])
    out = model(x)
    expected = x.shape if name in CLIP_MODELS else (2, 3, *size)
    assert out.shape == expected and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_gives_empty_results(name):
    model = small(name)
    t = CASES[name][1]
    out = model(torch.rand(0, t, 3, 10, 14))
    assert out.shape == ((0, t, 3, 10, 14) if name in CLIP_MODELS else (0, 3, 10, 14))
    if name == "stdanet":
        details = model(torch.rand(0, 3, 3, 10, 14), return_details=True)
        assert details.flows_to_next.shape == details.flows_to_prev.shape == (0, 2, 2, 3, 4)
        assert details.stages is None
    if name == "stdanet_stack":
        details = model(torch.rand(0, 5, 3, 10, 14), return_details=True)
        assert details.stages.shape == (0, 3, 3, 10, 14) and details.flows_to_next.shape == (0, 4, 2, 2, 3, 4)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_trainable_parameter(name):
    model = small(name)
    perturb_zero_init(model)
    x = clip(name, batch=1, height=16, width=16)
    training_loss(name, model, x, x.flip(-1)).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_forward_and_backward_close_to_fp32(name):
    model = small(name)
    perturb_zero_init(model)
    x = clip(name, batch=1, height=16, width=16)
    reference = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        # the training loss reaches every head (ERDN's gradient-map head only through its loss)
        training_loss(name, model, x, x.flip(-1)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    # bf16 keeps 8 bits of mantissa; errors compound over the network's depth
    error = (out.float() - reference).abs().max() / reference.abs().max()
    assert error < 0.05, float(error)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_short_training_run_drives_the_models_own_loss_down(name):
    torch.manual_seed(0)
    model = small(name)
    # a smooth clip, box-blurred: learnable (white noise cannot be recovered from its blur)
    coarse = torch.rand(CASES[name][1], 3, 4, 4, generator=torch.Generator().manual_seed(3))
    sharp = F.interpolate(coarse, size=(16, 16), mode="bicubic", align_corners=False)[None]
    blurry = F.avg_pool2d(sharp[0], 5, stride=1, padding=2, count_include_pad=False)[None]
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(40):
        optimiser.zero_grad()
        loss = training_loss(name, model, blurry, sharp)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert max(losses[-5:]) < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph_matches_eager(name):
    model = small(name).eval()
    x = clip(name, batch=1, height=16, width=16)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_export_for_inference():
    model = small("stdanet").eval()
    x = clip("stdanet", batch=1, height=16, width=16)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_flops_on_the_meta_device(name):
    model = small(name)
    result = count_flops(model, torch.zeros(1, CASES[name][1], 3, 64, 64))
    assert result.macs > 0
    assert all(p.device.type == "cpu" for p in model.parameters())


_BAD = [(name, case) for name, cases in BAD_INPUTS.items() for case in cases]


@pytest.mark.parametrize("name,case", _BAD, ids=[f"{name}: {case[0]}" for name, case in _BAD])
def test_bad_input(name, case):
    """One table per model (tests/model_bad_inputs.py): each mistake a clear error naming it."""
    _, call, error, match = case
    with pytest.raises(error, match=match):
        call(small(name).eval())