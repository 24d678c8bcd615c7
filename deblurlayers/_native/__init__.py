"""The native (C++/CUDA) op library: op definitions and its just-in-time build.

The ops are defined (schema, fake kernel, autograd, FLOP formula, autocast policy) when their
Python wrappers are imported (:func:`define`); nothing is compiled then: the kernel library is
built, cached and loaded on the first call of an op that can use it (see :func:`load`).
"""
from .build import load, native_state, source_root, sources
from .registry import OpSpec, define, specs

__all__ = ["load", "native_state", "source_root", "sources", "OpSpec", "define", "specs"]
