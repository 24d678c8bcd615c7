"""tiled_inference: exact where the model's reach fits the overlap, the untiled call when one tile
covers the frame, averaging, temporal chunks, clip-to-frame models, bad arguments."""
import pytest
import torch
from torch import nn

from deblurlayers.models import DSTNet, STDANet, tiled_inference
from deblurlayers.models._tiling import _spans
from model_cases import clip


class PerFrameConvs(nn.Module):
    """A clip-to-clip model whose output at a pixel sees 2 pixels each way (two 3x3 convs),
    plus its neighbouring frames (a temporal mean over 3 frames, replicated at the ends)."""

    def __init__(self, temporal=False):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.temporal = temporal

    def forward(self, x):
        b, t = x.shape[:2]
        y = self.net(x.flatten(0, 1)).unflatten(0, (b, t))
        if self.temporal:
            padded = torch.cat((y[:, :1], y, y[:, -1:]), dim=1)
            y = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3
        return y


def frames(t=5, h=37, w=45, seed=1):
    return clip(batch=1, frames=t, height=h, width=w, seed=seed)


def test_spans_cover_the_axis_and_split_overlaps_in_the_middle():
    spans = _spans(45, 16, 6)
    assert [s[:2] for s in spans] == [(0, 16), (10, 26), (20, 36), (29, 45)]
    assert [s[2:] for s in spans] == [(0, 13), (13, 23), (23, 32), (32, 45)]
    assert _spans(10, 16, 6) == [(0, 10, 0, 10)]


def test_crop_blend_is_exact_when_the_reach_fits_half_the_overlap():
    model, x = PerFrameConvs(), frames()
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(tiled_inference(model, x, tile=16, overlap=4, blend="crop"), full)
        # a reach of 2 pixels needs overlap >= 4: with 2, the seams show
        assert not torch.allclose(tiled_inference(model, x, tile=16, overlap=2), full)


def test_temporal_chunks_are_exact_when_the_reach_fits_half_the_frame_overlap():
    model, x = PerFrameConvs(temporal=True), frames(t=9)
    with torch.no_grad():
        full = model(x)
        out = tiled_inference(model, x, tile=20, overlap=6, frames_per_clip=4, frame_overlap=2)
        # a reach of one frame fits frame_overlap // 2; the clip's own ends replicate as untiled
        torch.testing.assert_close(out, full)


def test_average_blend_of_a_pointwise_model_is_exact():
    torch.manual_seed(0)
    model = nn.Conv3d(3, 3, 1)
    def clip_model(x):  # noqa: E306
        return model(x.transpose(1, 2)).transpose(1, 2)
    x = frames()
    with torch.no_grad():
        torch.testing.assert_close(tiled_inference(clip_model, x, tile=16, overlap=5, blend="average",
                                                   frames_per_clip=3, frame_overlap=1), clip_model(x))


def test_one_tile_is_the_untiled_call_of_real_models():
    dstnet = DSTNet(num_feat=8, num_blocks=1, num_cwgdn=1).eval()
    stdanet = STDANet(channels=8, num_points=2).eval()
    with torch.no_grad():
        x = frames(t=3, h=30, w=34)
        assert torch.equal(tiled_inference(dstnet, x, tile=64, overlap=16), dstnet(x))
        assert torch.equal(tiled_inference(stdanet, x, tile=64, overlap=16), stdanet(x))
        # a clip-to-frame model on several tiles: shape of one frame, every pixel written
        out = tiled_inference(stdanet, x, tile=16, overlap=8)
        assert out.shape == (1, 3, 30, 34) and torch.isfinite(out).all()


def test_bad_arguments():
    model, x = PerFrameConvs(), frames()
    with pytest.raises(ValueError, match=r"overlap: expected an int in \[0, tile=16\)"):
        tiled_inference(model, x, tile=16, overlap=16)
    with pytest.raises(ValueError, match=r"tile: expected an int >= 1"):
        tiled_inference(model, x, tile=0)
    with pytest.raises(ValueError, match=r"frame_overlap: expected an int in \[0, frames_per_clip=3\)"):
        tiled_inference(model, x, frames_per_clip=3, frame_overlap=3)
    with pytest.raises(ValueError, match=r"blend: expected one of"):
        tiled_inference(model, x, blend="max")
    with pytest.raises(ValueError, match=r"frames: expected a 5-d tensor"):
        tiled_inference(model, x[0])
    stdanet = STDANet(channels=8, num_points=2).eval()
    real_calls = []
    stdanet.register_forward_hook(lambda m, args, out: real_calls.append(args[0].device) if not args[0].is_meta else None)
    with pytest.raises(ValueError, match=r"frames_per_clip: only for models that return every frame"):
        tiled_inference(stdanet, frames(t=5), frames_per_clip=3, frame_overlap=1)
    assert real_calls == []  # refused before the first real tile (a meta probe)
    with pytest.raises(ValueError, match=r"model: expected an output"):
        tiled_inference(lambda f: f[:, :, :, :2], x)


class FlowTaker(nn.Module):
    """Returns, for every frame, the mean of its side input (on a grid 4 times coarser), upsampled."""

    def forward(self, x, flows):
        pairs = torch.cat((flows, flows[:, -1:]), dim=1).mean(2, keepdim=True)
        return pairs.repeat_interleave(4, -2).repeat_interleave(4, -1).expand(-1, -1, 3, -1, -1)


def test_side_inputs_are_cropped_with_every_tile_and_chunk():
    x = frames(t=6, h=40, w=48)
    flows = torch.randn(1, 5, 2, 10, 12)
    whole = FlowTaker()(x, flows)
    tiled = tiled_inference(FlowTaker(), x, tile=16, overlap=8, frames_per_clip=3, frame_overlap=2,
                            side_inputs={"flows": (flows, 4)})
    # the crop blend never keeps a chunk's last frame unless it is the clip's: all exact
    torch.testing.assert_close(tiled, whole)


def test_side_input_errors():
    x = frames(t=3, h=40, w=48)
    with pytest.raises(TypeError, match=r"side_inputs\['flows'\]: expected a \(tensor, scale\) pair"):
        tiled_inference(FlowTaker(), x, tile=16, overlap=8, side_inputs={"flows": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"side_inputs\['flows'\]: expected shape \(B=1, T=3 or 2"):
        tiled_inference(FlowTaker(), x, tile=16, overlap=8, side_inputs={"flows": (torch.zeros(1, 2, 2, 9, 12), 4)})
    with pytest.raises(ValueError, match=r"tile edges .* must be multiples of scale=4"):
        tiled_inference(FlowTaker(), x, tile=18, overlap=8, side_inputs={"flows": (torch.zeros(1, 2, 2, 10, 12), 4)})
