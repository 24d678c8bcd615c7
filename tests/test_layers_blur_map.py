"""BlurMap: hand computation on a tiny clip, options, static clip, gradients, compile, bad inputs."""
import pytest
import torch

from deblurlayers import BlurMap


def tiny_clip():
    """Three frames of 1x2 pixels with hand-picked flows (x, y)."""
    to_next = torch.tensor([[[[1.0, 0.0]], [[2.0, 0.0]]],     # O[0->1]: x = (1, 0), y = (2, 0)
                            [[[0.0, 3.0]], [[0.0, 0.0]]]])    # O[1->2]: x = (0, 3), y = (0, 0)
    to_prev = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]],     # O[1->0]: x = (0, 1), y = (0, 0)
                            [[[2.0, 2.0]], [[1.0, 0.0]]]])    # O[2->1]: x = (2, 2), y = (1, 0)
    return to_next.unsqueeze(0), to_prev.unsqueeze(0)  # (1, 2, 2, 1, 2)


def test_official_mean_and_sequence_normalisation_by_hand():
    to_next, to_prev = tiny_clip()
    # Squared magnitudes per pixel: |O01| = (5, 0), |O12| = (0, 9), |O10| = (0, 1), |O21| = (5, 4).
    # Frame 0: |O01| = (5, 0); frame 1: (|O12| + |O10|) / 2 = (0, 5); frame 2: |O21| = (5, 4).
    raw = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 4.0]]).view(1, 3, 1, 1, 2)
    layer = BlurMap(eps=0.0)
    torch.testing.assert_close(layer.unnormalised(to_next, to_prev), raw)
    blur, sharp = layer(to_next, to_prev)
    torch.testing.assert_close(blur, raw / 5.0)  # min 0, max 5 over the whole clip
    torch.testing.assert_close(sharp, 1 - raw / 5.0)


def test_paper_sum_and_frame_normalisation_by_hand():
    to_next, to_prev = tiny_clip()
    raw = torch.tensor([[5.0, 0.0], [0.0, 10.0], [5.0, 4.0]]).view(1, 3, 1, 1, 2)
    layer = BlurMap(reduction="sum", norm="frame", eps=0.0)
    torch.testing.assert_close(layer.unnormalised(to_next, to_prev), raw)
    blur, _ = layer(to_next, to_prev)
    torch.testing.assert_close(blur, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]).view(1, 3, 1, 1, 2))


def test_static_clip_is_sharp_not_nan():
    zeros = torch.zeros(2, 4, 2, 6, 6)
    blur, sharp = BlurMap()(zeros, zeros)
    assert blur.shape == (2, 5, 1, 6, 6)
    assert torch.equal(blur, torch.zeros_like(blur)) and torch.equal(sharp, torch.ones_like(sharp))
    constant = torch.ones(1, 3, 2, 4, 4)  # every pixel moves the same: no relative blur either
    assert not BlurMap()(constant, constant)[0].isnan().any()


def test_range_and_per_sample_normalisation():
    to_next, to_prev = torch.randn(3, 5, 2, 8, 9) * 4, torch.randn(3, 5, 2, 8, 9) * 4
    blur, _ = BlurMap()(to_next, to_prev)
    assert blur.min() >= 0 and blur.max() <= 1
    flat = blur.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(3))
    torch.testing.assert_close(flat.max(1).values, torch.ones(3), atol=1e-5, rtol=0)
    # Sample 1 alone gives the same map: the normalisation never mixes batch elements.
    torch.testing.assert_close(BlurMap()(to_next[1:2], to_prev[1:2])[0], blur[1:2])


def test_two_and_one_frame_clips():
    to_next, to_prev = torch.randn(1, 1, 2, 4, 4), torch.randn(1, 1, 2, 4, 4)
    raw = BlurMap().unnormalised(to_next, to_prev)
    torch.testing.assert_close(raw[:, 0], to_next.square().sum(2))
    torch.testing.assert_close(raw[:, 1], to_prev.square().sum(2))
    blur, sharp = BlurMap()(torch.zeros(2, 0, 2, 4, 4), torch.zeros(2, 0, 2, 4, 4))
    assert blur.shape == (2, 1, 1, 4, 4) and torch.equal(sharp, torch.ones_like(sharp))


@pytest.mark.parametrize("detach", [True, False])
def test_gradient_only_when_not_detached(detach):
    to_next = torch.randn(1, 2, 2, 4, 4, requires_grad=True)
    to_prev = torch.randn(1, 2, 2, 4, 4, requires_grad=True)
    blur, _ = BlurMap(detach=detach)(to_next, to_prev)
    assert blur.requires_grad is not detach
    if not detach:
        blur.sum().backward()
        assert to_next.grad.abs().sum() > 0 and to_prev.grad.abs().sum() > 0


def test_compile_fullgraph():
    layer = BlurMap()
    to_next, to_prev = torch.randn(2, 3, 2, 5, 6), torch.randn(2, 3, 2, 5, 6)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(to_next, to_prev), layer(to_next, to_prev)):
        torch.testing.assert_close(got, want)


def test_bad_inputs():
    layer = BlurMap()
    with pytest.raises(ValueError, match=r"flows_to_prev: expected shape \(B=1, Tm1=3, 2, H=8, W=8\) with H=8, "
                                         r"got shape \(1, 3, 2, 4, 4\)"):
        layer(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match=r"flows_to_next: expected shape \(B, Tm1, 2, H, W\) with 2=2"):
        layer(torch.zeros(1, 3, 3, 8, 8), torch.zeros(1, 3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"flows_to_prev: expected shape .* with Tm1=3, got shape \(1, 2, 2, 8, 8\)"):
        layer(torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 2, 2, 8, 8))
    with pytest.raises(TypeError, match="flows_to_next: expected a floating-point tensor, got dtype torch.int64"):
        layer(torch.zeros(1, 3, 2, 8, 8, dtype=torch.long), torch.zeros(1, 3, 2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction: expected one of"):
        BlurMap(reduction="max")
    with pytest.raises(ValueError, match="norm: expected one of"):
        BlurMap(norm="pixel")
