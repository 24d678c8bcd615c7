"""Python-side registrations of each native op.

The schema of every op lives once in ``csrc/deblurlayers.cpp``; its kernels
register per backend in C++. What the dispatcher also needs -- a fake (meta)
kernel for FakeTensor/``torch.compile``/``torch.export``, an autograd formula
and a FLOP formula -- is declared next to each op's Python wrapper with
:func:`define`, and applied by :func:`register_all` right after the shared
library is loaded (it cannot be earlier: the op does not exist before that).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch.utils.flop_counter import register_flop_formula

NAMESPACE = "deblurlayers"


@dataclass(frozen=True)
class OpSpec:
    """What Python registers for one native op.

    Attributes:
        name: op name inside the ``deblurlayers`` namespace.
        fake: shape-only implementation (``torch.library.register_fake``).
        flops: FLOP formula over input shapes (``register_flop_formula``);
            called with the ops' arguments, tensors replaced by their shapes,
            plus ``out_shape``.
        backward, setup_context: autograd formula
            (``torch.library.register_autograd``); the backward must itself be
            made of dispatcher ops (usually this op's ``*_backward`` op).
    """

    name: str
    fake: Callable
    flops: Optional[Callable] = None
    backward: Optional[Callable] = None
    setup_context: Optional[Callable] = None

    @property
    def qualname(self) -> str:
        return f"{NAMESPACE}::{self.name}"


_SPECS: Dict[str, OpSpec] = {}


def define(name: str, *, fake: Callable, flops: Optional[Callable] = None,
           backward: Optional[Callable] = None, setup_context: Optional[Callable] = None) -> OpSpec:
    """Declare the Python-side registrations of native op ``deblurlayers::<name>``."""
    if name in _SPECS:
        raise RuntimeError(f"native op {name!r} declared twice")
    if (backward is None) != (setup_context is None):
        raise ValueError(f"native op {name!r}: backward and setup_context go together")
    spec = OpSpec(name, fake, flops, backward, setup_context)
    _SPECS[name] = spec
    return spec


def specs() -> Dict[str, OpSpec]:
    """Every declared native op, by name."""
    return dict(_SPECS)


def register_all() -> None:
    """Apply every declared registration; called once, after the library loads."""
    for spec in _SPECS.values():
        if not hasattr(torch.ops.deblurlayers, spec.name):
            raise RuntimeError(f"{spec.qualname} is declared in Python but has no schema in csrc/deblurlayers.cpp")
        torch.library.register_fake(spec.qualname)(spec.fake)
        if spec.backward is not None:
            torch.library.register_autograd(spec.qualname, spec.backward, setup_context=spec.setup_context)
        if spec.flops is not None:
            register_flop_formula(getattr(torch.ops.deblurlayers, spec.name))(spec.flops)


def has_kernel(name: str, dispatch_key: str) -> bool:
    """Whether ``deblurlayers::<name>`` has a kernel for ``dispatch_key`` (e.g. ``"CPU"``)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{name}", dispatch_key)
