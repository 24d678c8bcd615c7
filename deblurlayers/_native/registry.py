"""Registration of every native op with PyTorch's dispatcher, at import.

Each op is declared once, beside its Python wrapper in :mod:`deblurlayers.ops`, with
:func:`define`: its schema (defined here, in Python, in the ``deblurlayers`` namespace), a fake
kernel (shapes only: FakeTensor, the meta device, ``torch.compile``, ``torch.export``), its autograd
formula, its FLOP formula and its autocast policy. All of that is registered the moment the op
module is imported -- before anything is compiled -- so a ``FlopCounterMode`` or a tracer opened
before the first call sees complete ops, and an op declared later (by a later import) is
registered as completely as the first.

The C++/CUDA library (``csrc/``) provides only the kernels, through ``TORCH_LIBRARY_IMPL``; it is
built and loaded on the first native call (:mod:`deblurlayers._native.build`), and registering
kernels for schemas that already exist is all it has to do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch.utils.flop_counter import register_flop_formula

NAMESPACE = "deblurlayers"
# Under autocast the ops run in fp32 on these devices (see ``define``'s ``autocast``).
AUTOCAST_DEVICES = ("cpu", "cuda")

_LIBRARY = torch.library.Library(NAMESPACE, "DEF")


@dataclass(frozen=True)
class OpSpec:
    """What is registered for one native op.

    Attributes:
        name: op name inside the ``deblurlayers`` namespace.
        schema: its full schema, ``name(args) -> returns``.
        fake: shape-only implementation (``torch.library.register_fake``).
        flops: FLOP formula over input shapes (``register_flop_formula``);
            called with the ops' arguments, tensors replaced by their shapes,
            plus ``out_shape``.
        backward, setup_context: autograd formula
            (``torch.library.register_autograd``); the backward must itself be
            made of dispatcher ops (usually this op's ``*_backward`` op).
        autocast: whether the op runs in fp32 inside ``torch.autocast``.
    """

    name: str
    schema: str
    fake: Callable
    flops: Optional[Callable] = None
    backward: Optional[Callable] = None
    setup_context: Optional[Callable] = None
    autocast: bool = False

    @property
    def qualname(self) -> str:
        return f"{NAMESPACE}::{self.name}"


_SPECS: Dict[str, OpSpec] = {}


def define(schema: str, *, fake: Callable, flops: Optional[Callable] = None, backward: Optional[Callable] = None,
           setup_context: Optional[Callable] = None, autocast: bool = False) -> OpSpec:
    """Define native op ``deblurlayers::<name>`` from its schema and register everything but kernels.

    Args:
        schema: ``"name(Tensor x, float scale) -> Tensor"``.
        fake, flops, backward, setup_context: see :class:`OpSpec`.
        autocast: inside ``torch.autocast`` (CPU and CUDA), cast the op's floating inputs to fp32
            and run it there, as torchvision does for its sampling ops: the kernels accumulate in
            fp32 anyway, sampling positions and offsets must not be rounded to 8 or 11 bits, and
            the inputs of one op often come out of layers in different precisions. Forward ops
            only: their backward sees the fp32 tensors they saved.
    """
    name = schema.split("(", 1)[0].strip()
    if name in _SPECS:
        raise RuntimeError(f"native op {name!r} declared twice")
    if (backward is None) != (setup_context is None):
        raise ValueError(f"native op {name!r}: backward and setup_context go together")
    spec = OpSpec(name, schema, fake, flops, backward, setup_context, autocast)
    _LIBRARY.define(schema)
    torch.library.register_fake(spec.qualname, fake, lib=_LIBRARY)
    if backward is not None:
        torch.library.register_autograd(spec.qualname, backward, setup_context=setup_context, lib=_LIBRARY)
    if flops is not None:
        register_flop_formula(getattr(torch.ops.deblurlayers, name))(flops)
    if autocast:
        for device_type in AUTOCAST_DEVICES:
            if torch.amp.is_autocast_available(device_type):
                torch.library.register_autocast(spec.qualname, device_type, torch.float32, lib=_LIBRARY)
    _SPECS[name] = spec
    return spec


def specs() -> Dict[str, OpSpec]:
    """Every declared native op, by name."""
    return dict(_SPECS)


def has_kernel(name: str, dispatch_key: str) -> bool:
    """Whether ``deblurlayers::<name>`` has a kernel for ``dispatch_key`` (e.g. ``"CPU"``)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{name}", dispatch_key)
