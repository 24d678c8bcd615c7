"""Just-in-time build and registration of the native (C++/CUDA) op library.

Nothing here runs at import: the library is compiled, cached and loaded on the
first call of an op that can use it (see :func:`load`).
"""
from .build import load, native_state, source_root, sources
from .registry import OpSpec, define, specs

__all__ = ["load", "native_state", "source_root", "sources", "OpSpec", "define", "specs"]
