"""deblurlayers.metrics against independent implementations (scikit-image, scipy) and by hand."""
import math

import numpy as np
import pytest
import torch

from deblurlayers.metrics import PROTOCOLS, get_protocol, gaussian_taps, psnr, quantize, rgb_to_y, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")
ndimage = pytest.importorskip("scipy.ndimage")


def _pairs():
    """(name, x, y) H×W×3 float64 pairs in [0, 255]: random, structured, and nearly equal."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (37, 45, 3)).astype(np.float64)
    yy, xx = np.mgrid[0:40, 0:52]
    structured = np.stack([127 + 120 * np.sin(xx / 4.0), 127 + 120 * np.cos(yy / 6.0), (xx * yy) % 256], -1)
    blurred = ndimage.uniform_filter(structured, size=(5, 5, 1), mode="nearest").round()
    return [("random", noise, np.clip(noise + rng.normal(0, 25, noise.shape), 0, 255).round()),
            ("structured", structured, blurred),
            ("close", structured, np.clip(structured + rng.normal(0, 1, structured.shape), 0, 255))]


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


@pytest.mark.parametrize("name,x,y", _pairs(), ids=[p[0] for p in _pairs()])
def test_psnr_and_ssim_2d_equal_scikit_image(name, x, y):
    expected_ssim = skimage_metrics.structural_similarity(x, y, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                                          use_sample_covariance=False, data_range=255)
    expected_psnr = skimage_metrics.peak_signal_noise_ratio(x, y, data_range=255)
    assert abs(ssim(_t(x), _t(y), 255).item() - expected_ssim) < 1e-6
    assert abs(psnr(_t(x), _t(y), 255).item() - expected_psnr) < 1e-6
    # the [0, 1] scale gives the same numbers
    assert abs(ssim(_t(x) / 255, _t(y) / 255, 1.0).item() - expected_ssim) < 1e-6


def _gaussian_ssim(x, y, smooth, peak):
    mx, my = smooth(x), smooth(y)
    vx, vy, cxy = smooth(x * x) - mx ** 2, smooth(y * y) - my ** 2, smooth(x * y) - mx * my
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    return (((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean()


@pytest.mark.parametrize("name,x,y", _pairs(), ids=[p[0] for p in _pairs()])
def test_ssim_bsst_equals_scipy_gaussian_over_all_three_axes(name, x, y):
    # BSSTNet: C×H×W in [0, 1], scipy.ndimage.gaussian_filter(sigma=1.5) with its defaults
    a, b = x.transpose(2, 0, 1) / 255, y.transpose(2, 0, 1) / 255
    expected = _gaussian_ssim(a, b, lambda v: ndimage.gaussian_filter(v, 1.5), 1.0)
    assert abs(ssim(torch.from_numpy(a), torch.from_numpy(b), 1.0, kind="bsst").item() - expected) < 1e-6


@pytest.mark.parametrize("name,x,y", _pairs(), ids=[p[0] for p in _pairs()])
def test_ssim_3d_equals_replicate_padded_11_cube(name, x, y):
    taps = np.exp(-np.arange(-5, 6) ** 2 / 4.5)
    taps = (taps / taps.sum()).astype(np.float32).astype(np.float64)  # DSTNet keeps its window in float32

    def smooth(v):
        for axis in range(3):
            v = ndimage.correlate1d(v, taps, axis=axis, mode="nearest")
        return v

    expected = _gaussian_ssim(x, y, smooth, 255.0)
    assert abs(ssim(_t(x), _t(y), 255, kind="3d").item() - expected) < 1e-6


def test_gaussian_taps_are_opencvs_11_tap_window():
    d = torch.arange(-5, 6, dtype=torch.float64)
    expected = torch.exp(-d ** 2 / 4.5)
    assert torch.allclose(gaussian_taps(11, 1.5), expected / expected.sum(), atol=0, rtol=1e-15)


@pytest.mark.parametrize("kind", ["2d", "bsst", "3d"])
def test_hand_cases(kind):
    x = torch.full((3, 20, 24), 100.0, dtype=torch.float64)
    assert psnr(x, x, 255).item() == math.inf
    assert ssim(x, x, 255, kind=kind).item() == pytest.approx(1.0, abs=1e-12)  # the terms cancel exactly
    # a constant offset d: mse = d², and SSIM of two flat images (2ab + C1) / (a² + b² + C1)
    y = x + 10
    assert psnr(x, y, 255).item() == pytest.approx(20 * math.log10(255 / 10), abs=1e-12)
    c1 = (0.01 * 255) ** 2
    # 3d: DSTNet's float32 window sums to 1 only to float32 precision, so a flat image is not exactly flat
    tolerance = 1e-7 if kind == "3d" else 1e-12
    assert ssim(x, y, 255, kind=kind).item() == pytest.approx((2 * 100 * 110 + c1) / (100 ** 2 + 110 ** 2 + c1),
                                                              abs=tolerance)
    # one pixel of one channel off by d: mse = d² / (3 H W)
    z = x.clone()
    z[1, 7, 9] += 30
    assert psnr(x, z, 255).item() == pytest.approx(10 * math.log10(255 ** 2 * 3 * 20 * 24 / 900), abs=1e-12)


def test_crop_and_y_channel_by_hand():
    x = torch.rand(3, 16, 18, dtype=torch.float64) * 255
    y = x.clone()
    y[:, :4] += 50  # only the top 4 rows differ: a 4 px crop removes them
    assert psnr(x, y, 255, crop=4).item() == math.inf
    assert psnr(x, y, 255).item() < 30
    r, g, b = x
    luma = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    assert torch.allclose(rgb_to_y(x)[0], luma, atol=1e-12)
    assert torch.allclose(rgb_to_y(x / 255, data_range=1.0)[0], luma / 255, atol=1e-12)
    assert psnr(x, y, 255, channel="y").item() == pytest.approx(
        psnr(luma[None], rgb_to_y(y)[0][None], 255).item(), abs=1e-12)


def test_batched_equals_one_by_one():
    x, y = torch.rand(2, 4, 3, 24, 26), torch.rand(2, 4, 3, 24, 26)
    for kind in ("2d", "bsst", "3d"):
        batched = ssim(x, y, 1.0, kind=kind)
        assert batched.shape == (2, 4)
        assert torch.allclose(batched, torch.stack([torch.stack([ssim(x[i, j], y[i, j], 1.0, kind=kind)
                                                                 for j in range(4)]) for i in range(2)]), atol=1e-14)
    assert torch.allclose(psnr(x, y)[1, 2], psnr(x[1, 2], y[1, 2]), atol=1e-14)


def test_quantize_is_basicsr_tensor2img():
    """float32 clamp, ×255 in float32, numpy's round half to even; here near every half step."""
    halves = (np.arange(256, dtype=np.float32) + np.float32(0.5)) / np.float32(255)
    values = np.concatenate([halves, np.nextafter(halves, 2), np.nextafter(halves, -2), [-0.2, 1.3]]).astype(np.float32)
    expected = np.round(np.clip(values, 0, 1) * np.float32(255.0))
    assert np.array_equal(quantize(torch.from_numpy(values)).numpy(), expected.astype(np.float64))


def _protocol_pair():
    gen = torch.Generator().manual_seed(3)
    sharp = quantize(torch.rand(3, 40, 48, generator=gen)) / 255  # sharp frames come from 8-bit files
    restored = sharp + 0.04 * torch.randn(3, 40, 48, generator=gen)  # out of [0, 1] in places
    return restored, sharp


def test_protocols_follow_their_definitions_with_scikit_image():
    restored, sharp = _protocol_pair()
    raw, gt = restored.double().numpy().transpose(1, 2, 0) * 255, sharp.double().numpy().transpose(1, 2, 0) * 255
    q = quantize(restored).numpy().transpose(1, 2, 0)
    sk_ssim = lambda a, b: skimage_metrics.structural_similarity(  # noqa: E731
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    sk_psnr = lambda a, b: skimage_metrics.peak_signal_noise_ratio(a, b, data_range=255)  # noqa: E731
    # STDAN: raw float output, PSNR shaved 4 px, SSIM on the whole frame
    p, s = get_protocol("stdan").score(restored, sharp)
    assert p == pytest.approx(sk_psnr(raw[4:-4, 4:-4], gt[4:-4, 4:-4]), abs=1e-6)
    assert s == pytest.approx(sk_ssim(raw, gt), abs=1e-6)
    # ERDN: 8-bit values, 4 px crop for both
    p, s = get_protocol("erdn").score(restored, sharp)
    assert p == pytest.approx(sk_psnr(q[4:-4, 4:-4], gt[4:-4, 4:-4]), abs=1e-6)
    assert s == pytest.approx(sk_ssim(q[4:-4, 4:-4], gt[4:-4, 4:-4]), abs=1e-6)
    # BSSTNet and DSTNet: 8-bit values, no crop; their SSIMs read higher than the per-channel one
    scores = {name: PROTOCOLS[name].score(restored, sharp) for name in PROTOCOLS}
    assert scores["bsstnet"][0] == scores["dstnet"][0] == pytest.approx(sk_psnr(q, gt), abs=1e-6)
    assert scores["bsstnet"][1] > sk_ssim(q, gt) and scores["dstnet"][1] > sk_ssim(q, gt)
    assert len({round(s, 9) for _, s in scores.values()}) == 4  # four protocols, four SSIMs


def test_dstnet_peak_rule_only_for_an_all_black_frame():
    black, sharp = torch.zeros(3, 24, 24), torch.full((3, 24, 24), 2 / 255)
    p, _ = get_protocol("dstnet").score(black, sharp)
    assert p == pytest.approx(10 * math.log10(1 / 4), abs=1e-12)  # peak 1 on the 8-bit scale
    p, _ = get_protocol("erdn").score(black, sharp)
    assert p == pytest.approx(10 * math.log10(255 ** 2 / 4), abs=1e-12)


@pytest.mark.parametrize("length,special", [(100, {52: (38, 45)}), (134, {86: (4, 45)}), (77, {29: (17, 45)})])
def test_bsstnet_clip_groups_reproduce_the_official_special_cases(length, special):
    """The official code hard-codes which frames the last clip scores for GoPro's and DVD's lengths;
    every frame 2 .. d-3 is scored once."""
    protocol = get_protocol("bsstnet")
    groups = protocol.groups(length)
    assert sorted(groups) == list(range(2, length - 2))
    starts = list(range(0, length - 48, 44)) + [length - 48]
    for c, start in enumerate(starts):
        local = [f - start for f, g in groups.items() if g == c]
        if start in special:
            assert (min(local), max(local)) == special[start]
        else:
            assert (min(local), max(local)) == (2 if start else 2, 45)


def test_summaries_average_over_frames_or_over_clips():
    from deblurlayers.metrics import FrameScores

    a = FrameScores("a", (2, 3, 4), (30.0, 31.0, 35.0), (0.9, 0.9, 0.96), (0, 0, 1))
    b = FrameScores("b", (2,), (40.0,), (0.99,), (0,))
    assert get_protocol("erdn").summarize([a, b])[0] == pytest.approx((30 + 31 + 35 + 40) / 4)
    # clips: (30.5, 35, 40) each weighing one third
    assert get_protocol("bsstnet").summarize([a, b])[0] == pytest.approx((30.5 + 35 + 40) / 3)


@pytest.mark.parametrize("call,match", [
    (lambda: psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 9)), r"y: expected the shape of x \(3, 8, 8\)"),
    (lambda: psnr(torch.rand(8, 8), torch.rand(8, 8)), r"x: expected images of shape \(\.\.\., C, H, W\)"),
    (lambda: psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 8), crop=4), r"crop: expected an int in \[0, 3\]"),
    (lambda: ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8)), r"x: SSIM 2d needs images of at least 11x11"),
    (lambda: ssim(torch.rand(3, 16, 16), torch.rand(3, 16, 16), kind="4d"), r"kind: expected one of"),
    (lambda: psnr(torch.rand(3, 16, 16), torch.rand(3, 16, 16), channel="lab"), r"channel: expected 'rgb' or 'y'"),
    (lambda: psnr(torch.rand(3, 16, 16), torch.rand(3, 16, 16), data_range=0), r"data_range: expected a positive"),
    (lambda: rgb_to_y(torch.rand(4, 16, 16)), r"x: expected RGB images"),
    (lambda: get_protocol("psnr"), r"protocol: expected one of"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_not_a_tensor():
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor"):
        psnr(np.zeros((3, 8, 8)), torch.zeros(3, 8, 8))
