"""STDANet and STDANet-Stack: the released checkpoints' names and containers, the flow naming, the
stack as the official cascade, the losses."""
import pytest
import torch
import torch.nn.functional as F

from deblurlayers.models import (load_official, stdanet_warp_loss)
from deblurlayers.ops import flow_warp
from model_cases import (clip, perturb_zero_init, small)


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


