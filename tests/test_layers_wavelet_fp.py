"""WaveletFP: wiring against a written-out composition, parameter layout, sizes, gradients."""
import pytest
import torch
import torch.nn.functional as F

from deblurlayers import WaveletFP
from deblurlayers.ops import haar_dwt2d_reference, haar_idwt2d_reference, use_backend
from helpers import count_parameters


def written_out(fp, x):
    """The official Deblur data flow between stem and head, spelled out with the reference Haar."""
    b, t, c, h, w = x.shape
    frames = x.reshape(b * t, c, h, w)
    nh = lambda conv1, conv2, v: conv2(F.leaky_relu(conv1(v), 0.1))
    ll1, hf1 = haar_dwt2d_reference(frames)
    hf1 = nh(fp.x_wave_1_conv1, fp.x_wave_1_conv2, hf1)
    ll2, hf2 = haar_dwt2d_reference(ll1)
    ll2 = ll2.reshape(b, t, c, h // 4, w // 4)
    for block in fp.transformer_scale4:
        ll2 = block[0](ll2)
    ll1 = haar_idwt2d_reference(ll2.reshape(b * t, c, h // 4, w // 4), nh(fp.x_wave_2_conv1, fp.x_wave_2_conv2, hf2))
    ll1 = ll1.reshape(b, t, c, h // 2, w // 2)
    state = torch.zeros_like(ll1[:, 0])
    backward = [None] * t
    for i in reversed(range(t)):
        state = backward[i] = fp.backward_propagation(ll1[:, i], state)
    state = torch.zeros_like(ll1[:, 0])
    forward = []
    for i in range(t):
        state = fp.forward_propagation(backward[i], state)
        forward.append(state)
    low = torch.stack(forward, 1).reshape(b * t, c, h // 2, w // 2)
    return haar_idwt2d_reference(low, hf1).reshape(b, t, c, h, w)


def small(**kwargs):
    torch.manual_seed(0)
    return WaveletFP(channels=8, num_blocks=1, num_cwgdn=2, **kwargs).double()


def test_matches_the_written_out_official_data_flow():
    fp = small()
    x = torch.randn(2, 3, 8, 32, 16, dtype=torch.float64)
    torch.testing.assert_close(fp(x), written_out(fp, x))


def test_native_and_reference_backends_agree():
    fp = small().float()
    x = torch.randn(1, 3, 8, 32, 32)
    with use_backend("reference"):
        ref = fp(x)
    torch.testing.assert_close(fp(x), ref, atol=1e-4, rtol=1e-4)


def test_parameter_counts_match_dstnet():
    # DSTNet totals minus feat_extractor (1,792), recons (1,731) and the frozen Haar filters (1,024)
    assert count_parameters(WaveletFP()) == 7_450_819 - 4_547
    assert count_parameters(WaveletFP(64, prop_channels=96, num_blocks=30)) == 16_965_027 - 4_547
    keys = {k.split(".")[0] for k in WaveletFP(prop_channels=96, num_blocks=1, num_cwgdn=1).state_dict()}
    assert keys == {"x_wave_1_conv1", "x_wave_1_conv2", "x_wave_2_conv1", "x_wave_2_conv2", "transformer_scale4",
                    "up", "down", "forward_propagation", "backward_propagation"}


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("size", [(32, 32), (18, 22), (13, 7)])
def test_shapes_any_size(levels, size):
    fp = WaveletFP(channels=8, num_blocks=1, num_cwgdn=1, levels=levels)
    x = torch.randn(1, 2, 8, *size)
    assert fp(x).shape == x.shape


def test_padding_matches_padding_by_hand():
    fp = small()
    x = torch.randn(1, 2, 8, 30, 13, dtype=torch.float64)
    padded = F.pad(x.reshape(2, 8, 30, 13), (0, 3, 0, 2), mode="reflect").reshape(1, 2, 8, 32, 16)
    torch.testing.assert_close(fp(x), written_out(fp, padded)[..., :30, :13])


def test_paper_initialisation_on_one_frame_skips_the_fusion():
    torch.manual_seed(0)
    fp = WaveletFP(channels=8, num_blocks=1, num_cwgdn=0, levels=1, init="paper").double()
    x = torch.randn(1, 1, 8, 16, 16, dtype=torch.float64)
    ll, hf = haar_dwt2d_reference(x[:, 0])
    hf = fp.x_wave_1_conv2(F.leaky_relu(fp.x_wave_1_conv1(hf), 0.1))
    torch.testing.assert_close(fp(x)[:, 0], haar_idwt2d_reference(ll, hf))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    fp = WaveletFP(channels=8, prop_channels=12, num_blocks=1, num_cwgdn=1)
    fp(torch.randn(1, 3, 8, 32, 32)).square().sum().backward()
    for name, p in fp.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_compile_fullgraph(native_ops):
    torch.manual_seed(0)
    fp = WaveletFP(channels=4, num_blocks=1, num_cwgdn=1)
    x = torch.randn(1, 2, 4, 16, 16, requires_grad=True)
    compiled = torch.compile(fp, fullgraph=True, backend="aot_eager")
    out, eager = compiled(x), fp(x)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(eager.sum(), x)[0])


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match=r"levels: expected 1 \(paper\) or 2 \(official code\), got 3"):
        WaveletFP(levels=3)
    with pytest.raises(ValueError, match=r"init: expected 'zeros' \(official code\) or 'paper', got 'ones'"):
        WaveletFP(init="ones")
    fp = WaveletFP(channels=8, num_blocks=1, num_cwgdn=0)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, C=8, H, W\) with C=8, got shape \(1, 2, 4, 16, 16\)"):
        fp(torch.zeros(1, 2, 4, 16, 16))
    with pytest.raises(ValueError, match=r"x: expected a 5-d tensor"):
        fp(torch.zeros(2, 8, 16, 16))
