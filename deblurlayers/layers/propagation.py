"""Second-order recurrent propagation (BasicVSR++'s grid propagation), the loop BSSTNet's BBFP and
its flow refiner (ProPainter) share: one branch walks the clip forward or backward, and each frame's
new state is an aligned state (from the previous one or two) plus a backbone's update of every
feature the frame already has."""
from __future__ import annotations

from typing import Callable, List, Mapping, Sequence

import torch

from ..utils import cat_channels

__all__ = ["second_order_propagation"]

Align = Callable[[int, List[torch.Tensor]], torch.Tensor]
Update = Callable[[torch.Tensor], torch.Tensor]


def second_order_propagation(features: Mapping[str, Sequence[torch.Tensor]], backward: bool, align: Align,
                             update: Update) -> List[torch.Tensor]:
    """One propagation branch over the frames of a clip.

    Frames are visited ``T-1 … 0`` (``backward``) or ``0 … T-1``. At frame ``t`` the state is zero
    for the first frame visited, else ``align(t, states)`` (``states``: those of the frames visited
    so far, most recent last: the caller aligns ``states[-1]`` and, when there is one,
    ``states[-2]``, with whatever flows or guidance it holds). The branch's output at ``t`` is
    ``state + update(cat(features[k][t] for every k, state))`` along the channels.

    Args:
        features: per name, the ``T`` feature maps ``(B, C_k, H, W)`` the backbone sees (the
            input, then the earlier branches' outputs, in order); the last one's shape is the
            state's.
        backward: the direction.
        align, update: the branch's alignment and backbone.

    Returns:
        The branch's ``T`` outputs in time order.
    """
    last = list(features.values())[-1]
    order = range(len(last) - 1, -1, -1) if backward else range(len(last))
    states: List[torch.Tensor] = []
    for t in order:
        state = align(t, states) if states else torch.zeros_like(last[t])
        states.append(state + update(cat_channels([f[t] for f in features.values()] + [state], dim=1)))
    return states[::-1] if backward else states
