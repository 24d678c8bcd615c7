"""DSTNet and DSTNet-L: the fixed Haar filters of the checkpoints, BasicSR's containers, the official
data flow around WaveletFP, padding, the loss."""
import pytest
import torch
import torch.nn.functional as F

from deblurlayers.models import (DSTNet, dstnet_loss, get_model, load_official)
from model_cases import (clip, manifest, official_state_dict,
                         small)


def test_dstnet_rejects_haar_weights_that_are_not_the_fixed_transform():
    state = official_state_dict(manifest("DSTNet"))
    state["wave.haar_weights"] = state["wave.haar_weights"].flip(0)
    with pytest.raises(ValueError, match="wave.haar_weights"):
        load_official(DSTNet(), state)


def test_load_official_prefers_the_named_container():
    source, other, target = small("dstnet"), small("dstnet"), small("dstnet")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    load_official(target, {"params": other.state_dict(), "params_ema": source.state_dict()}, param_key="params_ema")
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))
    with pytest.raises(KeyError, match="param_key"):
        load_official(target, {"params": source.state_dict()}, param_key="params_ema")


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


def test_dstnet_loss_terms():
    x = torch.rand(1, 2, 3, 8, 8)
    # equal inputs: only the Charbonnier epsilon remains
    torch.testing.assert_close(dstnet_loss(x, x), torch.tensor(1e-6))
    # a constant offset d lives in the DC bin only: FFT term = d * H * W / (H * (W // 2 + 1))
    d = 0.25
    expected = d + 0.1 * d * 64 / (8 * 5)
    torch.testing.assert_close(dstnet_loss(x + d, x, eps=0.0), torch.tensor(expected), rtol=1e-5, atol=1e-6)
