"""``load_official``: load a released checkpoint into a library model.

The generic part lives here: reading the file, unwrapping the training frameworks' containers and
``DataParallel``'s ``module.`` prefix. What a paper's checkpoint calls its tensors is that paper's
knowledge: each model file registers a converter (:func:`register_converter`) that maps the
official names (and, where the library stores a tensor differently, the official layout) onto the
model's ``state_dict``.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Type, Union

import torch
from torch import nn

__all__ = ["load_official", "register_converter", "OfficialLoadResult", "verify_checkpoint", "CheckpointReport"]

StateDict = Dict[str, torch.Tensor]
# A converter returns the state dict in the model's names and the official keys it discarded
# on purpose (modules the library does not hold), each with the reason.
Converter = Callable[[nn.Module, StateDict], Tuple[StateDict, Dict[str, str]]]

_CONVERTERS: Dict[Type[nn.Module], Converter] = {}

# Containers the official training codes save: BasicSR ({'params': ...}, {'params_ema': ...}),
# STDAN's training checkpoints ({'deblurnet_state_dict': ...}), generic ({'state_dict': ...}).
WRAPPER_KEYS = ("params", "params_ema", "deblurnet_state_dict", "state_dict", "model")


class OfficialLoadResult(NamedTuple):
    """What :func:`load_official` did not map: keys the model lacks, keys the checkpoint lacks, and
    official keys the converter discarded on purpose (``{key: reason}``)."""

    missing_keys: List[str]
    unexpected_keys: List[str]
    discarded_keys: Dict[str, str]


class CheckpointReport(NamedTuple):
    """What :func:`verify_checkpoint` found; ``ok`` when the file loads strictly into the model.

    ``mismatched_shapes`` maps a key to ``(shape in the checkpoint, shape the model expects)``;
    ``error`` is a converter's refusal (say, DSTNet's fixed Haar filters holding other values).
    ``str(report)`` is a readable summary."""

    name: str
    ok: bool
    tensors: int
    missing_keys: List[str]
    unexpected_keys: List[str]
    mismatched_shapes: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]]
    discarded_keys: Dict[str, str]
    error: str

    def __str__(self) -> str:
        verdict = "ok: loads strictly" if self.ok else "NOT the expected checkpoint"
        lines = [f"{self.name}: {verdict} ({self.tensors} tensors, {len(self.discarded_keys)} discarded on purpose)"]
        if self.error:
            lines.append(f"  refused by the converter: {self.error}")
        if self.missing_keys:
            lines.append(f"  missing keys ({len(self.missing_keys)}): {_abridged(self.missing_keys)}")
        if self.unexpected_keys:
            lines.append(f"  unexpected keys ({len(self.unexpected_keys)}): {_abridged(self.unexpected_keys)}")
        for key, (got, want) in list(self.mismatched_shapes.items())[:20]:
            lines.append(f"  {key}: shape {list(got)} in the checkpoint, {list(want)} expected")
        if len(self.mismatched_shapes) > 20:
            lines.append(f"  and {len(self.mismatched_shapes) - 20} more shape mismatches")
        return "\n".join(lines)


def register_converter(model_type: Type[nn.Module]) -> Callable[[Converter], Converter]:
    """Register the official-checkpoint converter of ``model_type`` (and its subclasses)."""

    def decorate(converter: Converter) -> Converter:
        _CONVERTERS[model_type] = converter
        return converter

    return decorate


def load_official(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping[str, object]],
                  strict: bool = True, param_key: Optional[str] = None) -> OfficialLoadResult:
    """Load a released checkpoint of the paper's official code into ``model``.

    1. ``checkpoint`` is a path (read with ``torch.load(weights_only=True)`` onto the CPU) or a dict.
    2. Training containers are unwrapped: ``param_key`` if given, else the first of ``params``,
       ``params_ema``, ``deblurnet_state_dict``, ``state_dict``, ``model`` that is present.
    3. A ``module.`` prefix (``DataParallel``) is stripped.
    4. The model's converter maps the official names onto the model's ``state_dict`` and discards
       the tensors of modules the library does not hold (reported in ``discarded_keys``).

    Args:
        model: a model of :mod:`deblurlayers.models` built with the checkpoint's configuration.
        checkpoint: path or (wrapped) state dict.
        strict: raise if any model key is missing or any checkpoint key is left over; nothing is
            loaded then.
        param_key: the container key to read (e.g. ``"params_ema"``).

    Returns:
        :class:`OfficialLoadResult` (all lists empty after a complete load).

    Raises:
        TypeError: ``model`` has no converter, or ``checkpoint`` is not a path or a dict.
        KeyError: ``param_key`` is not in the checkpoint.
        RuntimeError: ``strict`` and the keys do not match (the message lists them), or a shape
            differs.

    Example:
        >>> from deblurlayers.models import DSTNet, load_official
        >>> model = DSTNet()
        >>> result = load_official(model, "DSTNet_GOPRO.pth")  # doctest: +SKIP
    """
    converter = _converter_for(model)
    converted, discarded = converter(model, _official_state(checkpoint, param_key))
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    if strict and (missing or unexpected):
        raise RuntimeError(f"load_official: the checkpoint does not match {type(model).__name__}:\n"
                           f"  missing keys ({len(missing)}): {_abridged(missing)}\n"
                           f"  unexpected keys ({len(unexpected)}): {_abridged(unexpected)}")
    mismatched = _shape_mismatches(converted, own)
    if mismatched:  # checked before anything is copied: a failed load leaves the model as it was
        raise RuntimeError(f"load_official: {len(mismatched)} tensor(s) of the checkpoint have other shapes than "
                           f"{type(model).__name__}'s (another configuration of the model?); nothing was loaded:\n"
                           + "\n".join(f"  {key}: {list(got)} in the checkpoint, {list(want)} in the model"
                                       for key, (got, want) in list(mismatched.items())[:20]))
    model.load_state_dict({k: v for k, v in converted.items() if k in own}, strict=False)
    return OfficialLoadResult(missing, unexpected, discarded)


def verify_checkpoint(checkpoint: Union[str, os.PathLike, Mapping[str, object]], name: str,
                      param_key: Optional[str] = None, **model_kwargs) -> CheckpointReport:
    """Whether ``checkpoint`` is a released checkpoint of the model registered as ``name``.

    The model is built on the meta device (no memory, no weights), the checkpoint read and
    converted as :func:`load_official` does, and its keys and shapes compared with the model's:
    a downloaded file can be checked before anything is loaded. Nothing is downloaded.

    Args:
        checkpoint: path or (wrapped) state dict.
        name: a name of :func:`~deblurlayers.models.list_models`, or ``"raft"`` (BSSTNet's flow
            estimator, ``raft-things.pth``).
        param_key: the container key to read (e.g. ``"params_ema"``).
        **model_kwargs: the configuration, when the checkpoint is of a non-default one.

    Returns:
        :class:`CheckpointReport`; ``print(report)`` explains a mismatch.

    Example:
        >>> from deblurlayers.models import verify_checkpoint
        >>> print(verify_checkpoint("experiments/GOPRO.pth", "dstnet"))  # doctest: +SKIP
        dstnet: ok: loads strictly (292 tensors, 1 discarded on purpose)
    """
    model = _meta_model(name, model_kwargs)
    try:
        state = _official_state(checkpoint, param_key)
    except ValueError as exc:  # a truncated or corrupt download, or not a checkpoint at all
        return CheckpointReport(name, False, 0, [], [], {}, {}, f"could not read the checkpoint: {exc}")
    own = model.state_dict()
    try:
        converted, discarded = _converter_for(model)(model, dict(state))
    except (ValueError, KeyError, RuntimeError) as exc:
        return CheckpointReport(name, False, len(state), [], [], {}, {}, str(exc))
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    mismatched = _shape_mismatches(converted, own)
    ok = not (missing or unexpected or mismatched)
    return CheckpointReport(name, ok, len(state), missing, unexpected, mismatched, discarded, "")


def _meta_model(name: str, model_kwargs) -> nn.Module:
    from ._registry import get_model, list_models
    from .flow import RAFT

    if name != "raft" and name not in list_models():
        raise ValueError(f"name: expected one of {list_models() + ['raft']}, got {name!r}")
    with torch.device("meta"):
        return RAFT(**model_kwargs) if name == "raft" else get_model(name, **model_kwargs)


def _official_state(checkpoint, param_key: Optional[str]) -> StateDict:
    state = _unwrap(_read(checkpoint), param_key)
    return {_strip_module(key): value for key, value in state.items()}


def _shape_mismatches(converted: StateDict, own: StateDict) -> Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]]:
    return {key: (tuple(value.shape), tuple(own[key].shape)) for key, value in converted.items()
            if key in own and tuple(value.shape) != tuple(own[key].shape)}


def rename_prefixes(state: StateDict, renames: Mapping[str, str]) -> StateDict:
    """``state`` with each key's first matching prefix in ``renames`` replaced (others kept)."""
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def _abridged(keys: List[str], shown: int = 20) -> str:
    return str(keys) if len(keys) <= shown else f"{keys[:shown]} and {len(keys) - shown} more"


def _converter_for(model: nn.Module) -> Converter:
    for cls in type(model).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls]
    known = sorted(cls.__name__ for cls in _CONVERTERS)
    raise TypeError(f"model: expected one of {known} (a model with an official checkpoint format), "
                    f"got {type(model).__name__}")


def _read(checkpoint) -> Mapping[str, object]:
    if isinstance(checkpoint, Mapping):
        return checkpoint
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint: expected a path or a state dict, got {type(checkpoint).__name__}")
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint: no file {os.fspath(checkpoint)!r} (nothing is downloaded: "
                                "docs/models/README.md says where each paper's weights are)")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(checkpoint):  # torch.save writes zip archives (and legacy tensor files)
            raise ValueError(f"checkpoint: {os.fspath(checkpoint)!r} is not a PyTorch checkpoint (a torch.save "
                             f"file); reading it failed with {str(exc).splitlines()[0]}") from exc
        # torch.load's weights-only unpickler refuses arbitrary objects, e.g. a whole pickled model.
        raise ValueError(f"checkpoint: {os.fspath(checkpoint)!r} holds pickled Python objects, not tensors (a "
                         "whole model saved with torch.save(model)?); deblurlayers does not unpickle code. If "
                         "you trust the file, load it yourself with torch.load(path, weights_only=False) and pass "
                         f"its .state_dict() to load_official. ({str(exc).splitlines()[0]})") from exc
    except Exception as exc:  # not a zip or legacy torch file: its own errors are KeyError 101 and the like
        raise ValueError(f"checkpoint: {os.fspath(checkpoint)!r} is not a PyTorch checkpoint (a torch.save file); "
                         f"reading it failed with {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                         ) from exc
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint: {os.fspath(checkpoint)!r} holds a {type(state).__name__}, expected a state "
                         "dict (a mapping of names to tensors, possibly in a training container)")
    return state


def _unwrap(checkpoint: Mapping[str, object], param_key: Optional[str]) -> StateDict:
    if param_key is not None:
        if param_key not in checkpoint:
            raise KeyError(f"param_key: {param_key!r} is not in the checkpoint (keys: {sorted(checkpoint)[:10]})")
        return dict(checkpoint[param_key])
    for key in WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            return dict(checkpoint[key])
    return {key: value for key, value in checkpoint.items() if isinstance(value, torch.Tensor)}


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key
