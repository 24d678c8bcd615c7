"""ERDN: official counts and key manifests, the official data flow restated step by step, padding,
whole-clip restoration with stage-1 reuse, the losses, and bad inputs. (Shapes, gradients,
autocast, compile, FLOPs, DDP and a short training run are in the shared model tests.)"""

import pytest
import torch
import torch.nn.functional as F

from deblurlayers.layers import GradientMap
from deblurlayers.models import ERDN, erdn_loss, erdn_stage_loss, load_official
from deblurlayers.models.erdn import luckiness_mask
from helpers import count_parameters
from model_cases import clip, manifest, perturb_zero_init, small

GRADIENT_KERNEL_VALUES = 18  # get_grad.weight_{h,v}: official frozen parameters, buffers here


def deforming(stages=2, seed=0):
    """The small ERDN with non-zero DCN offsets, so the alignment actually deforms; eval mode."""
    model = small("erdn" if stages == 2 else "erdn_single", seed=seed)
    perturb_zero_init(model)
    return model.eval()


def frames(t, batch=1, height=16, width=24, seed=1):
    return clip(batch=batch, frames=t, height=height, width=width, seed=seed)


# -- official counts and keys ----------------------------------------------------------------------
@pytest.mark.parametrize("stages,name", [(2, "ERDN"), (1, "ERDN_1")])
def test_parameter_count_is_the_official_one_without_the_uncalled_convolutions(stages, name):
    facts = manifest(name)
    model = ERDN(stages=stages)
    uncalled = facts["parameters_in_uncalled_modules"]
    assert uncalled == 73_856 * stages
    assert count_parameters(model) == facts["parameters"] - uncalled - GRADIENT_KERNEL_VALUES
    assert count_parameters(model, trainable_only=True) == facts["trainable"] - uncalled
    assert sum(b.numel() for b in model.buffers()) == GRADIENT_KERNEL_VALUES
    # the spec's per-part figures (flow_net without its 73,856 uncalled values)
    stage = model.stages[0]
    assert [count_parameters(m) for m in (stage.flow_net, stage.recons_net, stage.grad_net)] == \
        [10_988_990 - 73_856, 6_812_771, 5_296_099]


def official_state(name, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {key: torch.randn(entry["shape"], generator=gen) for key, entry in manifest(name)["entries"].items()}


def uncalled_keys(state):
    return sorted(k for k in state if ".conv_l4_c_" in k)


@pytest.mark.parametrize("stages,name", [(2, "ERDN"), (1, "ERDN_1")])
def test_official_key_manifest_loads_strictly(stages, name):
    state = official_state(name)
    model = ERDN(stages=stages)
    result = load_official(model, state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert sorted(result.discarded_keys) == uncalled_keys(state) and len(uncalled_keys(state)) == 4 * stages
    own = model.state_dict()
    spot = {"get_grad.weight_h": "get_grad.weight_h",
            "flow_net.pcd_align.dcn_pack.l1.conv_offset.weight": "stages.0.flow_net.pcd_align.dcn_pack.l1.conv_offset.weight",
            "flow_net.center_net.decoder_second.3.0.weight": "stages.0.flow_net.center_net.decoder_second.3.0.weight",
            "grad_net.condition_shift.2.2.bias": "stages.0.grad_net.condition_shift.2.2.bias",
            "recons_net_new.inBlock.0.0.weight": "stages.1.recons_net.inBlock.0.0.weight",
            "flow_net_new.conv_l3_t.weight": "stages.1.flow_net.conv_l3_t.weight"}
    for official, ours in spot.items():
        if official in state:
            assert torch.equal(own[ours], state[official]), official
    total = sum(v.double().sum() for k, v in state.items() if k not in result.discarded_keys)
    assert torch.isclose(sum(v.double().sum() for v in own.values()), total)


def test_single_stage_model_takes_a_full_official_checkpoint_and_discards_stage_two():
    # the official class always builds the *_new modules, so a phase='single' checkpoint has them
    state = official_state("ERDN")
    model = ERDN(stages=1)
    result = load_official(model, state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    stage_two = [k for k in state if k.split(".")[0].endswith("_new")]
    assert sorted(result.discarded_keys) == sorted(stage_two + uncalled_keys({k: 0 for k in state
                                                                               if k not in stage_two}))
    assert torch.equal(model.state_dict()["stages.0.grad_net.recons_output.weight"],
                       state["grad_net.recons_output.weight"])


def to_official_names(model):
    """The model's weights under the official names (written from the manifest's naming, not the converter)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("stages."):
            _, stage, module, rest = key.split(".", 3)
            key = f"{module}{'_new' if stage == '1' else ''}.{rest}"
        out[key] = value.clone()
    return out


def test_official_names_are_the_manifest_less_the_uncalled_convolutions():
    names = set(to_official_names(ERDN()))
    assert names | set(uncalled_keys(official_state("ERDN"))) == set(manifest("ERDN")["entries"])


@pytest.mark.parametrize("wrap", ["flat", "module", "file"])
def test_load_official_round_trip(wrap, tmp_path):
    source, target = deforming(seed=0), deforming(seed=1)
    state = to_official_names(source)
    checkpoint = {"module." + k: v for k, v in state.items()} if wrap == "module" else state
    if wrap == "file":
        torch.save(state, tmp_path / "erdn.pt")
        checkpoint = tmp_path / "erdn.pt"
    result = load_official(target, checkpoint)
    assert result == ([], [], {})
    x = frames(5)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


# -- the official data flow, restated ----------------------------------------------------------------
def official_luckiness(images):
    """ERDN's ``get_masks`` as written: per-channel 5x5 mean filter, squared differences to the
    centre summed over frames, divided by 0.5², square root of the channel sum, exp(-x)."""
    kernel = torch.ones(1, 1, 5, 5) / 25
    smooth = [torch.cat([F.conv2d(im[:, c:c + 1], kernel, padding=2) for c in range(3)], 1) for im in images]
    mid = smooth[len(smooth) // 2]
    diff = sum((s - mid) ** 2 for s in smooth) / 0.25
    return torch.exp(-torch.sqrt(diff.sum(1, keepdim=True)))


def test_luckiness_mask_is_the_official_prior_on_detached_frames():
    x = frames(3, batch=2, seed=4).requires_grad_()
    mask = luckiness_mask(x)
    torch.testing.assert_close(mask, official_luckiness([x[:, i].detach() for i in range(3)]))
    assert mask.shape == (2, 1, 16, 24) and not mask.requires_grad
    assert torch.equal(luckiness_mask(x[:, :1].expand(2, 3, 3, 16, 24)), torch.ones(2, 1, 16, 24))


def official_flow_deform(net, x):
    """``Flow_Deform.forward`` step by step: each neighbour aligned on its own, explicit LReLUs."""
    lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
    b, t, c, h, w = x.shape
    nbr = torch.stack([x[:, 0], x[:, 2]], 1).view(-1, c, h, w)
    l1 = net.feature_extraction(lrelu(net.conv_first(nbr)))
    l2 = lrelu(net.conv_l2_2(lrelu(net.conv_l2_1(l1))))
    l3 = lrelu(net.conv_l3_2(lrelu(net.conv_l3_1(l2))))
    l4 = lrelu(net.conv_l4_2(lrelu(net.conv_l4_1(l3))))
    centre = net.center_net
    s0 = centre.inBlock(torch.cat([x[:, i] for i in range(t)], 1))
    e1 = centre.encoder_first(s0)
    e2 = centre.encoder_second(e1)
    ref3 = net.conv_l3_t(e2)
    ref = [net.conv_l1_t(s0), net.conv_l2_t(e1), ref3, lrelu(net.conv_l4_2(lrelu(net.conv_l4_1(ref3))))]
    levels = [f.view(b, 2, *f.shape[1:]) for f in (l1, l2, l3, l4)]
    aligned = [net.conv_last(net.reconstruction(net.pcd_align([f[:, i] for f in levels], ref))) for i in (0, 1)]
    pre_deblurred = centre.outBlock(centre.decoder_first(centre.decoder_second(e2) + e1) + s0)
    return torch.stack([aligned[0], pre_deblurred, aligned[1]], 1)


def official_first_stage(model, stage, x):
    """``ERDN.first_stage`` step by step."""
    grad_input = model.get_grad(x[:, 1])
    warped = official_flow_deform(stage.flow_net, x)
    images = [warped[:, i] for i in range(3)]
    net = stage.recons_net
    s0 = net.inBlock(torch.cat(images + [official_luckiness([im.detach() for im in images])], 1))
    e1 = net.encoder_first(s0)
    e2 = net.encoder_second(e1)
    scale, shift, grad = stage.grad_net(grad_input, [s0, e1, e2])
    f0, f1, f2 = (f * a + s for f, a, s in zip((s0, e1, e2), scale, shift))
    return net.outBlock(net.decoder_first(net.decoder_second(f2) + f1) + f0), grad, warped


def test_stage_is_the_official_first_stage():
    model = deforming(stages=1)
    x = frames(3, batch=2)
    out = model(x, return_details=True)
    restored, grad, warped = official_first_stage(model, model.stages[0], x)
    torch.testing.assert_close(out.aligned, warped, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.restored, restored, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.grad_map, grad, rtol=1e-5, atol=1e-6)
    assert out.first_restored is None


def test_two_stages_are_the_official_cascade():
    model = deforming(stages=2)
    x = frames(5, batch=2)
    out = model(x, return_details=True)
    firsts = [official_first_stage(model, model.stages[0], x[:, i:i + 3]) for i in range(3)]
    restored1 = torch.stack([f[0] for f in firsts], 1)
    # stage 2: its own weights, on the stage-1 outputs, with the gradient map of stage 1's centre
    restored, grad, warped = official_first_stage(model, model.stages[1], restored1)
    torch.testing.assert_close(out.first_restored, restored1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.first_grad_map, torch.stack([f[1] for f in firsts], 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.first_aligned, torch.stack([f[2] for f in firsts], 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.restored, restored, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.grad_map, grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.aligned, warped, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model.stages[0].grad_net.inBlock[2].weight, model.stages[1].grad_net.inBlock[2].weight)


def test_stage_two_gradient_input_is_not_detached():
    # official: grad_input = get_grad(warped2.clone()), so stage 1 also learns through that path
    model = deforming(stages=2)
    x = frames(5)
    weight = model.stages[0].recons_net.outBlock[-1].weight
    (full,) = torch.autograd.grad(model(x).sum(), weight)
    first = torch.stack([model.run_stage(0, x[:, i:i + 3]).restored for i in range(3)], 1)
    for detach, expect_equal in ((False, True), (True, False)):
        grad_input = model.get_grad(first[:, 1])
        out = model.stages[1](first, grad_input.detach() if detach else grad_input).restored
        (manual,) = torch.autograd.grad(out.sum(), weight, retain_graph=True)
        # fp32 rounding moves entries by ~1e-6 of the gradient's range (~1); detaching, by ~1
        assert torch.allclose(manual, full, rtol=1e-4, atol=1e-5) == expect_equal


def test_frames_are_padded_to_multiples_of_8_and_cropped():
    model = deforming(stages=1)
    x = frames(3, height=13, width=18)
    padded = F.pad(x.flatten(0, 1), (0, 6, 0, 3), mode="reflect").view(1, 3, 3, 16, 24)
    torch.testing.assert_close(model(x), model(padded)[..., :13, :18])
    assert model(frames(3, height=5, width=3)).shape == (1, 3, 5, 3)  # replication below the pad size


def test_batched_stage_one_windows_equal_separate_calls():
    model = deforming(stages=2)
    x = frames(5, batch=2)
    separate = torch.stack([model.run_stage(0, x[:, i:i + 3]).restored for i in range(3)], 1)
    torch.testing.assert_close(model(x, return_details=True).first_restored, separate, rtol=1e-5, atol=1e-6)


# -- whole clips -----------------------------------------------------------------------------------
def official_windows(clip, border):
    """``inference.py``'s ``gene_seq``: with ``--border`` the list is extended by its first two and
    last two frames; then every 5-frame window."""
    indices = list(range(clip.shape[1]))
    if border:
        indices = indices[:2] + indices + indices[-2:]
    return [clip[:, indices[i:i + 5]] for i in range(len(indices) - 4)]


class StagePasses:
    """Counts the windows each stage restores (batch elements / clip batch)."""

    def __init__(self, model, batch):
        self.counts = [0] * len(model.stages)
        self.handles = [stage.register_forward_hook(self._hook(i, batch)) for i, stage in enumerate(model.stages)]

    def _hook(self, index, batch):
        def hook(module, args, output):
            self.counts[index] += args[0].shape[0] // batch
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("border", ["official", "none"])
def test_restore_clip_equals_the_model_on_every_window_with_half_the_stage_passes(border):
    model = deforming(stages=2)
    clip = frames(7, batch=2, height=13, width=18, seed=5)
    windows = official_windows(clip, border == "official")
    passes = StagePasses(model, batch=2)
    with torch.no_grad():
        per_window = torch.stack([model(w) for w in windows], 1)
        naive = list(passes.counts)
        passes.counts = [0, 0]
        restored = model.restore_clip(clip, border=border, windows_per_batch=3)
    passes.remove()
    assert restored.shape == ((2, 7, 3, 13, 18) if border == "official" else (2, 3, 3, 13, 18))
    torch.testing.assert_close(restored, per_window, rtol=1e-5, atol=1e-6)
    n = len(windows)
    assert naive == [3 * n, n]  # 4 stage passes per frame
    assert passes.counts == [n + 2, n]  # each stage-1 window once: 16 instead of 28 for 7 frames
    if border == "official":
        torch.testing.assert_close(restored[:, 0], model(clip[:, [0, 1, 0, 1, 2]]), rtol=1e-5, atol=1e-6)


def test_restore_clip_with_one_stage_uses_the_middle_three_frames_of_each_window():
    model = deforming(stages=1)
    clip = frames(4, seed=6)
    with torch.no_grad():
        expected = torch.stack([model(w[:, 1:4]) for w in official_windows(clip, True)], 1)
        torch.testing.assert_close(model.restore_clip(clip, windows_per_batch=1), expected, rtol=1e-5, atol=1e-6)


def test_restore_clip_batching_and_empty_batch():
    model = deforming(stages=2)
    clip = frames(5, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(model.restore_clip(clip, windows_per_batch=1),
                                   model.restore_clip(clip, windows_per_batch=16), rtol=1e-5, atol=1e-6)
    assert model.restore_clip(torch.rand(0, 6, 3, 10, 12)).shape == (0, 6, 3, 10, 12)
    assert model.restore_clip(torch.rand(0, 6, 3, 10, 12), border="none").shape == (0, 2, 3, 10, 12)
    # As every forward's empty batch: attached to the parameters' graph (a training step runs).
    out = model.restore_clip(torch.rand(0, 6, 3, 10, 12))
    assert out.requires_grad
    out.sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters() if p.requires_grad)


# -- losses ----------------------------------------------------------------------------------------
def test_stage_loss_terms_by_hand():
    sharp = frames(3, batch=2, seed=8)
    centre = sharp[:, 1]
    gradient = GradientMap()(centre)
    # restored off by 0.1, gradient map exact, aligned images off by 0.2 from the centre
    loss = erdn_stage_loss(centre + 0.1, gradient, centre[:, None].expand_as(sharp) + 0.2, sharp, align_weight=0.5)
    torch.testing.assert_close(loss, torch.tensor(0.1 + 0.5 * 0.2))
    # "own": each aligned image against its own sharp frame
    loss = erdn_stage_loss(centre, gradient + 0.3, sharp - 0.4, sharp, align_weight=2.0, align_target="own")
    torch.testing.assert_close(loss, torch.tensor(0.3 + 2.0 * 0.4))
    # the same aligned images under "centre" are scored against S_t for all three
    expected = 0.3 + (sharp - 0.4 - centre[:, None]).abs().mean()
    torch.testing.assert_close(erdn_stage_loss(centre, gradient + 0.3, sharp - 0.4, sharp, align_weight=1.0), expected)


def test_two_stage_loss_is_the_sum_over_the_three_first_windows_and_the_last():
    model = deforming(stages=2)
    x, sharp = frames(5, seed=9), frames(5, seed=10)
    out = model(x, return_details=True)
    expected = sum(erdn_stage_loss(out.first_restored[:, i], out.first_grad_map[:, i], out.first_aligned[:, i],
                                   sharp[:, i:i + 3]) for i in range(3))
    expected = expected + erdn_stage_loss(out.restored, out.grad_map, out.aligned, sharp[:, 1:4])
    torch.testing.assert_close(erdn_loss(out, sharp), expected)
    single = deforming(stages=1)(x[:, 1:4], return_details=True)
    torch.testing.assert_close(erdn_loss(single, sharp[:, 1:4]),
                               erdn_stage_loss(single.restored, single.grad_map, single.aligned, sharp[:, 1:4]))


# -- compile, bad inputs -----------------------------------------------------------------------------
def test_forward_compiles_without_graph_breaks():
    explanation = torch._dynamo.explain(deforming(stages=2))(frames(5))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_restore_clip_refuses_non_finite_frames_when_asked():
    model = deforming(stages=2)
    clip_ = frames(5)
    clip_[0, 3, 1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"frames: 1 NaN or infinite values, in frame\(s\) \[3\]"):
        model.restore_clip(clip_, check_finite=True)
    with torch.no_grad():
        assert model.restore_clip(clip_).isnan().any()  # the default does not look
