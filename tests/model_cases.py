"""Small configurations of every registered model, with inputs and a loss, for the model tests.

Keeping them beside the registry's names means a newly registered model without a case here fails
``test_every_registered_model_has_a_case`` instead of silently escaping the model tests.
"""
import json
from pathlib import Path

import torch

from deblurlayers.models import (bsstnet_loss, dstnet_loss, erdn_loss, get_model, get_model_card, stdanet_loss,
                                 stdanet_stack_loss)

# Every width scaled down; RAFT keeps its fixed architecture (2 iterations). theta = 0 makes every
# window with any blur active, so that every BSST layer's pooled tokens are used on small clips.
BSSTNET_SMALL = dict(channels=16, mid_channels=24, token_dim=32, num_heads=2, hidden_dim=50, rstb_heads=2,
                     refine_channels=16, flow_iters=2, theta=0.0)
ERDN_SMALL = dict(n_feat=4, n_resblock=1, align_channels=8, deformable_groups=2, num_extract_blocks=1,
                  num_reconstruct_blocks=1)

# name -> small kwargs and the clip length T of the tests
_SMALL = {
    "stdanet": (dict(channels=8, num_points=2), 3),
    "stdanet_stack": (dict(channels=8, num_points=2), 5),
    "dstnet": (dict(num_feat=8, num_blocks=1, num_cwgdn=1), 3),
    "dstnet_l": (dict(num_feat=8, prop_feat=12, num_blocks=1, num_cwgdn=1), 3),
    "fstanet": (dict(channels=8, growth=8, spatial_maps=4, temporal_maps=2), 5),
    "erdn": (ERDN_SMALL, 5),
    "erdn_single": (ERDN_SMALL, 3),
    "bsstnet": (BSSTNET_SMALL, 3),
}
# name -> (small kwargs, input frames T, full-size manifest or None); the manifest and the frame
# contract come from the model cards.
CASES = {name: (kwargs, frames, get_model_card(name).manifest) for name, (kwargs, frames) in _SMALL.items()}

# Models that restore every frame of the clip (the others restore the centre frame).
CLIP_MODELS = tuple(name for name in CASES if get_model_card(name).output == "clip")
# The fewest frames a model takes, where it is not fixed.
MIN_FRAMES = {name: get_model_card(name).min_frames for name in CASES
              if get_model_card(name).frames_in is None and get_model_card(name).min_frames > 1}


def training_loss(name, model, blurry, sharp):
    """The model's own training loss on a (blurry, sharp) clip pair of the case's length."""
    if name == "stdanet":
        return stdanet_loss(model(blurry, return_details=True), sharp)
    if name == "stdanet_stack":
        return stdanet_stack_loss(model(blurry, return_details=True), sharp)
    if name.startswith("dstnet"):
        return dstnet_loss(model(blurry), sharp)
    if name.startswith("erdn"):
        return erdn_loss(model(blurry, return_details=True), sharp)
    if name == "bsstnet":
        return bsstnet_loss(model(blurry), sharp)
    out = model(blurry)
    return torch.nn.functional.l1_loss(out, sharp[:, sharp.shape[1] // 2])


def perturb_zero_init(model, std=0.02):
    """Zero-initialised heads (STDANet's motion_out, offset heads) stop gradients to what feeds
    them; give them small random values so a gradient test sees every parameter."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(std * torch.randn(p.shape, generator=gen))


# -- the helpers every model test uses ---------------------------------------------------------
DATA = Path(__file__).parent / "data"


def manifest(name):
    """The official key manifest ``tests/data/<name>.json`` (vendored from shared/official_keys)."""
    return json.loads((DATA / f"{name}.json").read_text())


def small(name, seed=0, **overrides):
    """The model registered as ``name`` in its small test configuration."""
    torch.manual_seed(seed)
    return get_model(name, **{**CASES[name][0], **overrides})


def clip(name=None, batch=2, frames=None, height=18, width=22, seed=1):
    """A random ``(batch, T, 3, height, width)`` clip; T defaults to the case's."""
    t = frames if frames is not None else CASES[name][1]
    return torch.rand(batch, t, 3, height, width, generator=torch.Generator().manual_seed(seed))


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


def official_state_dict(facts, seed=0, device=None):
    """A state dict with every key and shape of an official manifest: random values (``device="meta"``:
    none), except DSTNet's fixed Haar filters, which its converter checks."""
    gen = torch.Generator().manual_seed(seed)
    state = {key: (torch.empty(entry["shape"], device="meta") if device == "meta"
                   else torch.randn(entry["shape"], generator=gen)) for key, entry in facts["entries"].items()}
    if "wave.haar_weights" in state:
        state["wave.haar_weights"] = official_haar_weights(state["wave.haar_weights"].shape[0] // 4)
    return state
