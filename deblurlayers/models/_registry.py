"""A light, explicit model registry (torchvision's ``register_model`` / ``get_model`` style).

Each model file registers its builders with :func:`register_model`; nothing is discovered by
scanning files and there is no config system: a name maps to a function that builds the model.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, TypeVar

from torch import nn

from ._cards import ModelCard

__all__ = ["register_model", "list_models", "get_model", "get_model_card"]

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}
_CARDS: Dict[str, ModelCard] = {}
Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


def register_model(name: str, card: Optional[ModelCard] = None) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name`` (a decorator), with its model card; names are unique."""

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"name: a model named {name!r} is already registered")
        if card is not None and card.name != name:
            raise ValueError(f"card: the card of {name!r} is named {card.name!r}")
        _BUILDERS[name] = builder
        if card is not None:
            _CARDS[name] = card
        return builder

    return decorate


def list_models() -> List[str]:
    """The registered model names, sorted."""
    return sorted(_BUILDERS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name``; ``kwargs`` go to its builder.

    Example:
        >>> model = get_model("dstnet", num_blocks=1)
    """
    if name not in _BUILDERS:
        raise ValueError(f"name: expected one of {list_models()}, got {name!r}")
    return _BUILDERS[name](**kwargs)


def get_model_card(name: str) -> ModelCard:
    """The :class:`~deblurlayers.models.ModelCard` of the model registered as ``name``.

    Example:
        >>> get_model_card("dstnet").size_multiple
        16
    """
    if name not in _CARDS:
        raise ValueError(f"name: expected one of {sorted(_CARDS)}, got {name!r}")
    return _CARDS[name]
