"""Models: registry, official parameter counts and key manifests, load_official, shapes, gradients,
autocast, compile, export, FLOP counting, bad inputs, and a short overfitting run."""
import json
import pathlib

import pytest
import torch
import torch.nn.functional as F

from deblurlayers.flops import count_flops
from deblurlayers.models import (DSTNet, FSTANet, STDANet, dstnet_loss, get_model, list_models,
                                 load_official, register_model, stdanet_warp_loss)
from deblurlayers.ops import flow_warp
from helpers import count_parameters
from model_cases import CASES, CLIP_MODELS, MIN_FRAMES, perturb_zero_init, training_loss

DATA = pathlib.Path(__file__).parent / "data"
NAMES = sorted(CASES)


def manifest(name):
    return json.loads((DATA / f"{name}.json").read_text())


def small(name):
    torch.manual_seed(0)
    return get_model(name, **CASES[name][0])


def clip(name, batch=2, height=18, width=22, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, CASES[name][1], 3, height, width, generator=gen)


# -- registry ----------------------------------------------------------------------------------
def test_every_registered_model_has_a_case():
    assert set(list_models()) == set(CASES)


def test_registry_errors():
    with pytest.raises(ValueError, match="name: expected one of"):
        get_model("no_such_model")
    with pytest.raises(ValueError, match="already registered"):
        register_model("stdanet")(STDANet)


# -- official counts and keys ------------------------------------------------------------------
HAAR_VALUES = 16 * 64  # DSTNet's frozen Haar filters: official "parameters", a fixed op here


@pytest.mark.parametrize("name", ["stdanet", "stdanet_stack", "dstnet", "dstnet_l"])
def test_parameter_count_matches_the_official_model(name):
    facts = manifest(CASES[name][2])
    model = get_model(name)
    frozen = HAAR_VALUES if name.startswith("dstnet") else 0
    assert count_parameters(model) == facts["parameters"] - frozen
    assert count_parameters(model, trainable_only=True) == facts["trainable"]
    assert facts["parameters_in_uncalled_modules"] == 0


def test_fstanet_parameter_count_follows_its_documented_architecture():
    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + c_out

    def dense_block(c, growth=32, layers=4):
        return sum(conv(c + i * growth, growth, 3) for i in range(layers)) + conv(c + layers * growth, c, 1)

    def fsta(c, m=8, n=4):
        return conv(c, m, 1) + (c * n * 3 + n) + conv(c, m * n, 3)

    widths = (32, 64, 128)
    encoder = sum(conv(c_in, c, 3) + dense_block(c) for c_in, c in zip((3, 32, 64), widths))
    decoder = dense_block(128) + sum(conv(c, c // 2, 3) + dense_block(c // 2) for c in (128, 64)) + conv(32, 3, 3)
    expected = encoder + sum(fsta(c) for c in widths) + decoder
    assert count_parameters(FSTANet()) == expected == 1_204_935  # the figure in docs/models/fstanet.md


def official_haar_weights(channels):
    """DSTNet's ``wave.haar_weights``, written out from the spec: per channel four 2x2 filters
    with +1 except at the positions the band subtracts (band1: right column, band2: bottom row,
    band3: anti-diagonal)."""
    w = torch.ones(4 * channels, 1, 2, 2)
    minus = {1: [(0, 1), (1, 1)], 2: [(1, 0), (1, 1)], 3: [(0, 1), (1, 0)]}
    for c in range(channels):
        for band, positions in minus.items():
            for y, x in positions:
                w[4 * c + band, 0, y, x] = -1
    return w


def official_state_dict(facts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(entry["shape"], generator=gen) for key, entry in facts["entries"].items()}
    if "wave.haar_weights" in state:
        state["wave.haar_weights"] = official_haar_weights(state["wave.haar_weights"].shape[0] // 4)
    return state


# official key -> where the library keeps it (independent of the converters)
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


def test_dstnet_rejects_haar_weights_that_are_not_the_fixed_transform():
    state = official_state_dict(manifest("DSTNet"))
    state["wave.haar_weights"] = state["wave.haar_weights"].flip(0)
    with pytest.raises(ValueError, match="wave.haar_weights"):
        load_official(DSTNet(), state)


def stdan_release_names(model):
    """A STDANet state dict as STDAN's released test weights name it (written from the README)."""
    out = {}
    for key, value in model.state_dict().items():
        key = key.replace("stda.MMA.", "Defattn1.").replace("stda.MSA.", "Defattn3.")
        out["module." + key] = value
    out["module.flow_net.moduleBasic.0.weight"] = torch.zeros(1)
    return out


@pytest.mark.parametrize("wrap", ["flat", "params", "params_ema", "deblurnet_state_dict", "file"])
def test_load_official_round_trip_through_each_wrapping(wrap, tmp_path):
    source, target = small("stdanet"), small("stdanet")
    perturb_zero_init(source)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)
    state = stdan_release_names(source)
    checkpoint = state if wrap in ("flat", "file") else {wrap: state, "epoch": 3}
    if wrap == "file":
        torch.save(checkpoint, tmp_path / "stdan.pth")
        checkpoint = tmp_path / "stdan.pth"
    result = load_official(target, checkpoint)
    assert list(result.discarded_keys) == ["flow_net.moduleBasic.0.weight"]
    x = clip("stdanet", batch=1)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_stack_reports_discarded_keys_as_the_checkpoint_names_them():
    bare = {k.replace("module.", ""): v for k, v in stdan_release_names(small("stdanet")).items()}
    result = load_official(small("stdanet_stack"), bare)
    assert list(result.discarded_keys) == ["flow_net.moduleBasic.0.weight"]
    stacked = {"recons_net." + k: v for k, v in bare.items()}
    result = load_official(small("stdanet_stack"), stacked)
    assert list(result.discarded_keys) == ["recons_net.flow_net.moduleBasic.0.weight"]


def test_load_official_prefers_the_named_container():
    source, other, target = small("dstnet"), small("dstnet"), small("dstnet")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    load_official(target, {"params": other.state_dict(), "params_ema": source.state_dict()}, param_key="params_ema")
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))
    with pytest.raises(KeyError, match="param_key"):
        load_official(target, {"params": source.state_dict()}, param_key="params_ema")


def test_strict_load_lists_missing_and_unexpected_keys_and_loads_nothing():
    model = small("stdanet")
    state = stdan_release_names(small("stdanet"))
    del state["module.motion_out.bias"]
    state["module.extra.weight"] = torch.zeros(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"missing keys \(1\): \['motion_out.bias'\][\s\S]*extra.weight"):
        load_official(model, state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    result = load_official(model, state, strict=False)
    assert result.missing_keys == ["motion_out.bias"] and result.unexpected_keys == ["extra.weight"]


def test_stack_loads_a_bare_stdan_checkpoint():
    source = small("stdanet")
    stack = small("stdanet_stack")
    load_official(stack, stdan_release_names(source))
    assert torch.equal(stack.recons_net.stda.MSA.emb_v.weight, source.stda.MSA.emb_v.weight)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_model_loads_a_library_state_dict(name):
    source, target = small(name), small(name)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)
    result = load_official(target, {"state_dict": source.state_dict()})
    assert result.missing_keys == result.unexpected_keys == []
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))


def test_load_official_type_errors():
    with pytest.raises(TypeError, match="model: expected one of"):
        load_official(torch.nn.Linear(2, 2), {})
    with pytest.raises(TypeError, match="checkpoint: expected a path or a state dict"):
        load_official(small("dstnet"), 3)


# -- data flow -----------------------------------------------------------------------------------
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


def test_batch_elements_are_independent():
    model = small("stdanet").eval()
    x = clip("stdanet", batch=2)
    torch.testing.assert_close(model(x)[1:], model(x[1:]), rtol=1e-5, atol=1e-6)


def test_stdanet_flows_are_in_the_library_naming():
    model = small("stdanet")
    perturb_zero_init(model)
    x = clip("stdanet", batch=1, height=16, width=20)
    _, to_next, to_prev, _ = model(x, return_details=True)
    assert to_next.shape == to_prev.shape == (1, 2, 2, 4, 5)
    # O[k->k+1] comes from (f_k, f_k+1): swapping the two frames of a pair swaps the directions
    swapped = x[:, [1, 0, 2]]
    _, next_swapped, prev_swapped, _ = model(swapped, return_details=True)
    torch.testing.assert_close(next_swapped[:, 0], to_prev[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(prev_swapped[:, 0], to_next[:, 0], rtol=1e-5, atol=1e-6)


def test_stdanet_at_initialisation_estimates_zero_flow():
    _, to_next, to_prev, _ = small("stdanet")(clip("stdanet", batch=1), return_details=True)
    assert not to_next.any() and not to_prev.any()


def test_stack_is_the_official_cascade_of_one_shared_stdanet():
    stack = small("stdanet_stack").eval()
    perturb_zero_init(stack)
    x = clip("stdanet_stack", batch=2)
    out, to_next, to_prev, stages = stack(x, return_details=True)
    net = stack.recons_net
    by_hand = [net(x[:, i:i + 3], return_details=True) for i in range(3)]
    for i, (r, fn, fp, _) in enumerate(by_hand):
        torch.testing.assert_close(stages[:, i], r, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(to_next[:, i], fn, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(to_prev[:, i], fp, rtol=1e-4, atol=1e-5)
    final, fn, fp, _ = net(torch.stack([d.restored for d in by_hand], 1), return_details=True)
    torch.testing.assert_close(out, final, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(to_next[:, 3], fn, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stack(x), out)


def test_dstnet_is_the_official_data_flow_around_wavelet_fp():
    model = small("dstnet").eval()
    x = clip("dstnet", batch=1, height=16, width=32)
    frames = x.flatten(0, 1)
    features = F.conv2d(frames, model.feat_extractor.weight, model.feat_extractor.bias, padding=1)
    features = model.wavelet_fp(features.view(1, 3, -1, 16, 32)).flatten(0, 1)
    by_hand = F.conv2d(features, model.recons.weight, model.recons.bias, padding=1) + frames
    torch.testing.assert_close(model(x), by_hand.view_as(x))


def test_dstnet_pads_to_multiples_of_16_and_crops():
    model = small("dstnet").eval()
    x = clip("dstnet", batch=1, height=16, width=32)
    cropped = x[..., :13, :27]
    padded = F.pad(cropped.flatten(0, 1), (0, 5, 0, 3), mode="reflect").view(1, 3, 3, 16, 32)
    torch.testing.assert_close(model(cropped), model(padded)[..., :13, :27])


def test_dstnet_large_preset():
    model = get_model("dstnet_l")
    assert model.wavelet_fp.forward_propagation.channels == 96
    assert len(model.wavelet_fp.forward_propagation.resblock_bcakward2d.main[0]) == 30


def test_fstanet_residual_and_reference():
    model = small("fstanet").eval()
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
    x = clip("fstanet", batch=1)
    torch.testing.assert_close(model(x), x[:, 2])
    torch.testing.assert_close(model(x, reference=0), x[:, 0])


# -- training: gradients, autocast, overfitting --------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_trainable_parameter(name):
    model = small(name)
    perturb_zero_init(model)
    x = clip(name, batch=1, height=16, width=16)
    training_loss(name, model, x, x.flip(-1)).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing


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


# -- losses --------------------------------------------------------------------------------------
def test_stdanet_warp_loss_by_hand():
    gen = torch.Generator().manual_seed(0)
    sharp = torch.rand(1, 3, 3, 16, 16, generator=gen)
    to_next, to_prev = (torch.randn(1, 2, 2, 4, 4, generator=gen) for _ in range(2))
    small_frames = [F.interpolate(sharp[:, k], size=(4, 4), mode="bilinear", align_corners=True) for k in range(3)]
    terms = []
    for k in range(2):
        terms.append((flow_warp(small_frames[k + 1], to_next[:, k], "border") - small_frames[k]).abs().mean())
        terms.append((flow_warp(small_frames[k], to_prev[:, k], "border") - small_frames[k + 1]).abs().mean())
    torch.testing.assert_close(stdanet_warp_loss(sharp, to_next, to_prev), sum(terms) / 4)
    still = sharp[:, :1].expand(1, 3, 3, 16, 16)
    assert stdanet_warp_loss(still, torch.zeros_like(to_next), torch.zeros_like(to_prev)) == 0


def test_stdanet_losses_name_the_expected_targets():
    from deblurlayers.models import stdanet_loss, stdanet_stack_loss

    net, stack = small("stdanet"), small("stdanet_stack")
    details = net(clip("stdanet", batch=1, height=8, width=8), return_details=True)
    with pytest.raises(ValueError, match=r"sharp: expected .*T=3"):
        stdanet_loss(details, torch.rand(1, 3, 8, 8))            # the centre frame alone
    with pytest.raises(TypeError, match=r"output: expected the STDANetOutput of STDANet\("):
        stdanet_loss(details.restored, torch.rand(1, 3, 3, 8, 8))
    stack_details = stack(clip("stdanet_stack", batch=1, height=8, width=8), return_details=True)
    with pytest.raises(ValueError, match=r"sharp: expected .*T=5"):
        stdanet_stack_loss(stack_details, torch.rand(1, 3, 3, 8, 8))
    with pytest.raises(TypeError, match=r"STDANetStack\(frames, return_details=True\)"):
        stdanet_stack_loss(details, torch.rand(1, 5, 3, 8, 8))
    assert stdanet_loss(details, torch.rand(1, 3, 3, 8, 8)).dim() == 0


def test_dstnet_loss_terms():
    x = torch.rand(1, 2, 3, 8, 8)
    # equal inputs: only the Charbonnier epsilon remains
    torch.testing.assert_close(dstnet_loss(x, x), torch.tensor(1e-6))
    # a constant offset d lives in the DC bin only: FFT term = d * H * W / (H * (W // 2 + 1))
    d = 0.25
    expected = d + 0.1 * d * 64 / (8 * 5)
    torch.testing.assert_close(dstnet_loss(x + d, x, eps=0.0), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="sharp: expected the shape"):
        dstnet_loss(x, x[:, :1])


# -- compile, export, meta -----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph_matches_eager(name):
    model = small(name).eval()
    x = clip(name, batch=1, height=16, width=16)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


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


# -- bad inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name):
    model = small(name)
    t = CASES[name][1]
    with pytest.raises(ValueError, match=r"frames: expected a 5-d tensor"):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"frames: expected shape .*C=3"):
        model(torch.rand(1, t, 4, 16, 16))
    with pytest.raises(ValueError, match=r"frames: expected H >= 1 in \(B, T, C, H, W\)"):
        model(torch.rand(1, t, 3, 0, 16))
    with pytest.raises(TypeError, match=r"frames: expected a floating-point tensor"):
        model(torch.ones(1, t, 3, 16, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"frames: expected dtype torch.float32"):
        model(torch.rand(1, t, 3, 16, 16, dtype=torch.float64))
    if name.startswith(("stdanet", "erdn")):
        with pytest.raises(ValueError, match=rf"frames: expected shape \(B, T={t}"):
            model(torch.rand(1, t + 1, 3, 16, 16))
    else:
        fewest = MIN_FRAMES.get(name, 1)
        with pytest.raises(ValueError, match=rf"frames: expected T >= {fewest} in \(B, T, C, H, W\)"):
            model(torch.rand(1, fewest - 1, 3, 16, 16))


def test_fstanet_bad_reference():
    with pytest.raises(ValueError, match=r"reference: expected a frame index in \[0, T=5\)"):
        small("fstanet")(clip("fstanet", batch=1), reference=5)
