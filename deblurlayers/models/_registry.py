"""A light, explicit model registry (torchvision's ``register_model`` / ``get_model`` style).

Each model file registers its builders with :func:`register_model`; nothing is discovered by
scanning files and there is no config system: a name maps to a function that builds the model.
"""
from __future__ import annotations

from typing import Callable, Dict, List, TypeVar

from torch import nn

__all__ = ["register_model", "list_models", "get_model"]

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}
Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name`` (a decorator); names are unique."""

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"name: a model named {name!r} is already registered")
        _BUILDERS[name] = builder
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
