"""Every registered model has a card, and every card tells the truth about its model (issue 21):
parameter count, official count, frame contract, size multiple, loss; the docs table agrees."""
import math
import re
from pathlib import Path

import pytest
import torch

from deblurlayers.models import get_model, get_model_card, list_models

from helpers import count_parameters
from model_cases import manifest, small

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models" / "README.md"


def test_every_registered_model_has_a_card():
    for name in list_models():
        assert get_model_card(name).name == name
    with pytest.raises(ValueError, match="name: expected one of"):
        get_model_card("nope")


@pytest.mark.parametrize("name", list_models())
def test_parameters_are_the_cards(name):
    card = get_model_card(name)
    with torch.device("meta"):
        model = get_model(name)
    assert count_parameters(model, trainable_only=True) == card.parameters
    if card.manifest is not None:
        assert manifest(card.manifest)["parameters"] == card.official_parameters


@pytest.mark.parametrize("name", list_models())
def test_frame_contract_is_the_cards(name):
    card, model = get_model_card(name), small(name).eval()
    frames = card.frames_in or card.min_frames + 1
    with torch.no_grad():
        out = model(torch.rand(2, frames, 3, 16, 16))
    assert out.shape == ((2, frames, 3, 16, 16) if card.output == "clip" else (2, 3, 16, 16))
    refused = [card.min_frames - 1] + ([card.frames_in + 1] if card.frames_in else [])
    for t in refused:
        if t >= 1:
            with pytest.raises(ValueError, match="frames"):
                model(torch.rand(1, t, 3, 16, 16))


@pytest.mark.parametrize("name", list_models())
def test_frames_are_padded_to_the_cards_size_multiple(name):
    card, model = get_model_card(name), small(name).eval()
    seen = []
    estimator = getattr(model, "flow_estimator", None)
    skip = set(estimator.modules()) if estimator is not None else set()
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[-2:]))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) and m not in skip]
    h, w = card.size_multiple + 1, 2 * card.size_multiple + 3
    with torch.no_grad():
        out = model(torch.rand(1, card.frames_in or card.min_frames, 3, h, w))
    for hook in hooks:
        hook.remove()
    assert out.shape[-2:] == (h, w)
    multiple = card.size_multiple
    assert max(s[0] for s in seen) == math.ceil(h / multiple) * multiple
    assert max(s[1] for s in seen) == math.ceil(w / multiple) * multiple


@pytest.mark.parametrize("name", list_models())
def test_card_facts_are_complete(name):
    card = get_model_card(name)
    assert card.paper and card.compute and card.reported
    assert (card.loss is None) == (card.code is None)  # only the derived FSTANet has neither
    for checkpoint in card.checkpoints:
        assert checkpoint.file and checkpoint.where and checkpoint.dataset


def test_the_docs_table_agrees_with_the_cards():
    table = DOCS.read_text().split("| name | class | frames in → out | parameters | page |")[1].split("\n\n")[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", table, re.M)}
    assert set(rows) == set(list_models())
    for name, row in rows.items():
        card = get_model_card(name)
        cells = [c.strip() for c in row.strip("|").split("|")]
        frames = f"{card.frames_in or f'T (T ≥ {card.min_frames})'} → {'T' if card.output == 'clip' else card.output}"
        assert cells[2] == frames, (name, cells[2], frames)
        assert cells[3].startswith(f"{card.parameters:,}"), (name, cells[3])


@pytest.mark.parametrize("name", list_models())
def test_protocol_and_test_pipeline_fit_the_model(name):
    """A card's protocol is a known one (only the derived FSTANet has none); clip models run
    clips, window models do not, and a clip model's official clip is at least its fewest frames."""
    from deblurlayers.metrics import PROTOCOLS

    card = get_model_card(name)
    assert card.protocol in PROTOCOLS or (card.protocol is None and card.code is None)
    pipeline = card.test_pipeline
    assert (pipeline.clip_frames is not None) == (card.output == "clip")
    if pipeline.clip_frames is not None:
        assert min([pipeline.clip_frames, *pipeline.clip_frames_per_dataset.values()]) >= card.min_frames
        assert 2 * pipeline.margin < pipeline.clip_frames
    if pipeline.tile is not None:
        assert 0 <= pipeline.overlap < pipeline.tile and pipeline.tile % card.size_multiple == 0
