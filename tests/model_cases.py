"""Small configurations of every registered model, with inputs and a loss, for the model tests.

Keeping them beside the registry's names means a newly registered model without a case here fails
``test_every_registered_model_has_a_case`` instead of silently escaping the model tests.
"""
import torch

from deblurlayers.models import (bsstnet_loss, dstnet_loss, erdn_loss, get_model_card, stdanet_loss,
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
