"""RAFT (BSSTNet's flow estimator): official count and keys, the correlation lookup and convex
upsampling checked by hand, padding, iterations, gradients, bad inputs."""

import pytest
import torch
import torch.nn.functional as F

from deblurlayers.models import RAFT, load_official
from deblurlayers.models.flow import CorrelationPyramid, convex_upsample
from helpers import count_parameters
from model_cases import manifest


def images(batch=1, height=64, width=72, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, height, width, generator=gen), torch.rand(batch, 3, height, width, generator=gen))


def test_parameter_count_and_official_keys_load_strictly():
    facts = manifest("RAFT")
    model = RAFT()
    assert count_parameters(model) == facts["parameters"] == 5_257_536
    gen = torch.Generator().manual_seed(0)
    # raft-things.pth: DataParallel's "module." prefix; norm3 is listed again as downsample.1
    state = {"module." + k: (torch.randn(e["shape"], generator=gen) if e["shape"] else torch.tensor(7))
             for k, e in facts["entries"].items()}
    for key in [k for k in state if ".norm3." in k]:
        state[key.replace(".norm3.", ".downsample.1.")] = state[key]
    result = load_official(model, state)
    assert result == ([], [], {})
    own = model.state_dict()
    for key in ("update_block.gru.convq2.weight", "cnet.layer2.0.norm3.running_var", "fnet.conv2.bias"):
        assert torch.equal(own[key], state["module." + key])


def test_correlation_lookup_is_the_dot_product_of_the_features_at_the_window():
    gen = torch.Generator().manual_seed(1)
    f1, f2 = torch.randn(1, 16, 8, 8, generator=gen), torch.randn(1, 16, 8, 8, generator=gen)
    pyramid = CorrelationPyramid(f1, f2, levels=2, radius=1)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    coords = torch.stack((xs, ys))[None]
    feats = pyramid.lookup(coords)  # (1, 2 * 9, 8, 8)
    assert feats.shape == (1, 18, 8, 8)

    def corr(y, x, qy, qx):
        inside = 0 <= qy < 8 and 0 <= qx < 8
        return float(f1[0, :, y, x] @ f2[0, :, qy, qx]) / 4 if inside else 0.0

    for y, x in ((0, 0), (3, 5), (7, 6)):
        for a, dx in enumerate((-1, 0, 1)):  # channel (a, b): x offset d_a, y offset d_b
            for b, dy in enumerate((-1, 0, 1)):
                assert feats[0, a * 3 + b, y, x].item() == pytest.approx(corr(y, x, y + dy, x + dx), abs=1e-5)
    # level 1: the volume average-pooled over q, looked up at coords / 2
    y, x = 4, 2
    for a, dx in enumerate((-1, 0, 1)):
        for b, dy in enumerate((-1, 0, 1)):
            qy, qx = y // 2 + dy, x // 2 + dx
            expected = sum(corr(y, x, 2 * qy + i, 2 * qx + j) for i in (0, 1) for j in (0, 1)) / 4 \
                if 0 <= qy < 4 and 0 <= qx < 4 else 0.0
            assert feats[0, 9 + a * 3 + b, y, x].item() == pytest.approx(expected, abs=1e-5)


def test_convex_upsampling_by_hand():
    flow = torch.randn(2, 2, 3, 4)
    # equal weights: every sub-pixel is 8 x the mean of the zero-padded 3x3 neighbourhood
    up = convex_upsample(flow, torch.zeros(2, 9 * 64, 3, 4))
    mean = F.avg_pool2d(8 * flow, 3, stride=1, padding=1, count_include_pad=True)
    torch.testing.assert_close(up, F.interpolate(mean, scale_factor=8, mode="nearest"))
    # all weight on the centre tap: nearest-neighbour upsampling of 8 x flow
    mask = torch.zeros(2, 9, 64, 3, 4)
    mask[:, 4] = 50.0
    torch.testing.assert_close(convex_upsample(flow, mask.flatten(1, 2)),
                               F.interpolate(8 * flow, scale_factor=8, mode="nearest"))


def test_shapes_padding_and_iterations():
    torch.manual_seed(0)
    model = RAFT().eval()
    a, b = images(batch=2, height=37, width=45)
    with torch.no_grad():
        flows = model(a, b, iters=3, return_all=True)
        assert len(flows) == 3 and all(f.shape == (2, 2, 37, 45) for f in flows)
        torch.testing.assert_close(model(a, b, iters=3), flows[-1])
        # the padding is replication to 64 x 64 here: equal to running on the padded images
        padded = [F.pad(x, (9, 10, 13, 14), mode="replicate") for x in (a, b)]
        torch.testing.assert_close(flows[-1], model(*padded, iters=3)[..., 13:50, 9:54], rtol=1e-4, atol=1e-5)
        # batch elements are independent in eval mode
        torch.testing.assert_close(model(a[1:], b[1:], iters=3), flows[-1][1:], rtol=1e-4, atol=1e-5)


def test_images_are_mapped_to_minus_one_one():
    torch.manual_seed(0)
    model = RAFT().eval()
    seen = []
    model.fnet.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    a, b = images()
    with torch.no_grad():
        model(a, b, iters=1)
    torch.testing.assert_close(seen[0], torch.cat((2 * a - 1, 2 * b - 1)))


def test_gradients_reach_every_parameter_in_training():
    torch.manual_seed(0)
    model = RAFT().train()
    a, b = images(batch=2)
    flows = model(a, b, iters=2, return_all=True)
    sum(f.abs().mean() for f in flows).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_inputs_and_empty_batch():
    model = RAFT()
    a, b = images()
    with pytest.raises(ValueError, match=r"image2: expected shape \(N=1, C=3, H=64, W=72\)"):
        model(a, b[..., :64, :70])
    with pytest.raises(ValueError, match=r"image1: expected shape .*C=3"):
        model(a[:, :1], b[:, :1])
    with pytest.raises(ValueError, match=r"iters: expected an int >= 1"):
        model(a, b, iters=0)
    with pytest.raises(TypeError, match=r"image1: expected a floating-point tensor"):
        model(a.long(), b.long())
    assert model(torch.rand(0, 3, 20, 30), torch.rand(0, 3, 20, 30), iters=2).shape == (0, 2, 20, 30)
    # the shape-only meta run behind the empty batch gives every tensor back, the shared norm's too
    assert all(t.device.type == "cpu" for t in model.state_dict(keep_vars=True).values())


def test_flops_on_the_meta_device_with_the_shared_norm():
    from deblurlayers.flops import count_flops

    a, b = images()
    model = RAFT().eval()
    before = {name: t for name, t in model.state_dict(keep_vars=True).items()}
    assert count_flops(model, a, b, 2).macs > 0
    # every name, the shared norm's two included, holds its own tensor again
    after = model.state_dict(keep_vars=True)
    assert all(after[name] is tensor for name, tensor in before.items())
    with torch.no_grad():
        assert torch.isfinite(model(a, b, iters=1)).all()


def test_a_float64_model_takes_float64_images():
    # The correlation and the coordinates stay in fp32 under autocast; for fp64 they follow the model.
    torch.manual_seed(0)
    model = RAFT().eval()
    a, b = images()
    with torch.no_grad():
        single = model(a, b, iters=3)
        double = model.double()(a.double(), b.double(), iters=3)
    assert double.dtype == torch.float64
    torch.testing.assert_close(double, single.double(), rtol=1e-4, atol=1e-4)
