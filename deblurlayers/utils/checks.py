"""Input validation shared by every op and layer.

Errors name the argument, the expected layout and what was given, so that a
bad call fails at the top of the public function rather than deep inside a
kernel or through a silent broadcast.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["check_shape", "check_input", "check_floating", "check_same_device", "autocast_enabled", "to_pair",
           "conv_output_size", "IntPair"]


def check_shape(
    x: torch.Tensor,
    layout: str,
    *,
    name: str,
    sizes: Optional[Mapping[str, int]] = None,
) -> Dict[str, int]:
    """Check that ``x`` has the named ``layout`` and return the size of each name.

    Costs nothing on the good path and never specialises a dynamic shape: sizes are compared, not
    converted to Python ints, and the message is built only when the check fails. Under
    ``torch.compile(dynamic=True)`` a comparison of two symbolic sizes records that they are equal,
    not what they are, so a new H x W reuses the graph.

    Args:
        x: the tensor to check.
        layout: space-separated dimension names, e.g. ``"B T C H W"``. A name
            may be an integer literal (``"B 2 H W"``) for a fixed size.
        name: the argument's name, used in the error message.
        sizes: sizes already known for some names (e.g. from another argument);
            a mismatch is an error. Repeated names within ``layout`` must agree.

    Returns:
        ``{name: size}`` for every named dimension (integer literals excluded).

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong rank, wrong fixed size, or a size that disagrees with
            ``sizes`` or a repeated name.

    Example:
        >>> dims = check_shape(torch.zeros(2, 5, 3, 8, 8), "B T C H W", name="x")
        >>> dims["T"]
        5
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape ({_fmt(layout)}), got {type(x).__name__}")
    names = _parse(layout)
    if x.dim() != len(names):
        raise ValueError(f"{name}: expected a {len(names)}-d tensor of shape ({_expected(names, sizes)}), "
                         f"got shape {tuple(x.shape)}")
    found: Dict[str, int] = {}
    for dim_name, size in zip(names, x.shape):
        if isinstance(dim_name, int):
            want = dim_name
        elif sizes is not None and dim_name in sizes:
            want = sizes[dim_name]
        elif dim_name in found:
            want = found[dim_name]
        else:
            found[dim_name] = size
            continue
        if size != want:
            raise ValueError(f"{name}: expected shape ({_expected(names, sizes)}) with {dim_name}={want}, "
                             f"got shape {tuple(x.shape)}")
        if not isinstance(dim_name, int):
            found[dim_name] = size
    return found


def check_input(x: torch.Tensor, layout: str, *, name: str, like: Optional[nn.Module] = None,
                sizes: Optional[Mapping[str, int]] = None, minimum: Optional[Mapping[str, int]] = None
                ) -> Dict[str, int]:
    """:func:`check_shape`, plus what every layer's main input needs.

    - the device of ``like``'s parameters (``ValueError``: a clip on another device would fail deep
      inside, or, on the meta device, silently return a meta tensor);
    - a floating dtype (``TypeError`` otherwise), the dtype of ``like``'s parameters outside
      ``torch.autocast`` (``TypeError``: the first conv would fail deep inside otherwise);
    - each ``minimum`` size (``ValueError`` naming the dimension and the minimum), e.g.
      ``{"H": 1, "W": 1}``; a batch of 0 is allowed (layers return an empty result).
    """
    dims = check_shape(x, layout, name=name, sizes=sizes)
    check_floating(x, name=name)
    weight = next(like.parameters(), None) if like is not None else None
    if weight is not None and x.device != weight.device:
        raise ValueError(f"{name}: expected a tensor on {weight.device} (the device of the parameters), got {x.device}")
    if weight is not None and x.dtype != weight.dtype and not autocast_enabled(x.device.type):
        raise TypeError(f"{name}: expected dtype {weight.dtype} (that of the parameters; or run under "
                        f"torch.autocast), got {x.dtype}")
    for dim_name, least in (minimum or {}).items():
        if dims[dim_name] < least:
            raise ValueError(f"{name}: expected {dim_name} >= {least} in ({_fmt(layout)}), got shape {tuple(x.shape)}")
    return dims


def check_floating(x: torch.Tensor, *, name: str) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``x`` is a floating-point tensor."""
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")


def check_same_device(x: torch.Tensor, ref: torch.Tensor, *, name: str, ref_name: str) -> None:
    """Raise ``ValueError`` unless ``x`` lives on ``ref``'s device."""
    if x.device != ref.device:
        raise ValueError(f"{name}: expected a tensor on {ref.device} (the device of {ref_name}), got {x.device}")


def autocast_enabled(device_type: str) -> bool:
    """``torch.is_autocast_enabled(device_type)``, False for devices autocast does not know (meta)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def _parse(layout: str) -> Tuple[Union[str, int], ...]:
    return tuple(int(n) if n.isdigit() else n for n in layout.split())


def _expected(names, sizes) -> str:
    sizes = sizes or {}
    return ", ".join(f"{n}={sizes[n]}" if n in sizes else str(n) for n in names)


def _fmt(layout: str) -> str:
    return ", ".join(layout.split())


IntPair = Union[int, Tuple[int, int]]


def to_pair(value: IntPair, name: str, minimum: int = 0) -> Tuple[int, int]:
    """``value`` (an int or a pair of ints, as ``conv2d``'s ``stride`` etc.) as an ``(h, w)`` tuple.

    Raises:
        TypeError: ``value`` is neither an int nor a pair of ints.
        ValueError: an entry is below ``minimum``.

    Example:
        >>> to_pair(3, "kernel_size", minimum=1)
        (3, 3)
    """
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {value!r}")
    return pair


def conv_output_size(size: IntPair, kernel_size: IntPair, stride: IntPair = 1, padding: IntPair = 0,
                     dilation: IntPair = 1) -> Tuple[int, int]:
    """``(Ho, Wo)`` of a convolution over an ``(H, W)`` map, as ``conv2d`` computes it (may be < 1)."""
    # ``size`` may hold symbolic sizes (torch.compile(dynamic=True)), which are no ints: not validated
    sizes = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                 zip(sizes, to_pair(kernel_size, "kernel_size"), to_pair(stride, "stride"),
                     to_pair(padding, "padding"), to_pair(dilation, "dilation")))
