"""Environment variables that steer deblurlayers (all optional).

- ``DEBLURLAYERS_BACKEND``: ``auto`` (default), ``native`` or ``reference``.
- ``DEBLURLAYERS_BUILD_DIR``: root of the native build cache (default
  ``$TORCH_EXTENSIONS_DIR/deblurlayers`` or ``~/.cache/deblurlayers``).
- ``DEBLURLAYERS_BUILD_TIMEOUT``: seconds to wait for another process's build
  (default 1800).
- ``DEBLURLAYERS_VERBOSE_BUILD``: ``1`` prints the compiler commands.
- ``DEBLURLAYERS_QUIET_BUILD``: ``1`` silences the two lines a first build prints to stderr.
- ``DEBLURLAYERS_SANITIZE``: ``address`` builds the native library with AddressSanitizer, into a
  cache entry of its own (the process must preload libasan: see docs/testing.md).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

BACKENDS = ("auto", "native", "reference")
SANITIZERS = ("", "address")
_override: Optional[str] = None


def backend() -> str:
    """The backend in force: :func:`use_backend`'s, else ``DEBLURLAYERS_BACKEND``'s, else ``auto``."""
    if _override is not None:
        return _override
    value = os.environ.get("DEBLURLAYERS_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"DEBLURLAYERS_BACKEND: expected one of {BACKENDS}, got {value!r}")
    return value


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block with another backend (``auto``, ``native`` or ``reference``).

    Eager calls only: under ``torch.compile`` the choice is made once, when
    the graph is traced.
    """
    global _override
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    previous, _override = _override, name
    try:
        yield
    finally:
        _override = previous


def build_root() -> str:
    explicit = os.environ.get("DEBLURLAYERS_BUILD_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    extensions_dir = os.environ.get("TORCH_EXTENSIONS_DIR")
    if extensions_dir:
        return os.path.join(os.path.abspath(os.path.expanduser(extensions_dir)), "deblurlayers")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "deblurlayers")


def build_timeout() -> float:
    return float(os.environ.get("DEBLURLAYERS_BUILD_TIMEOUT", "1800"))


def verbose_build() -> bool:
    return os.environ.get("DEBLURLAYERS_VERBOSE_BUILD", "0") not in ("", "0", "false", "False")


def sanitizer() -> str:
    """``address`` when ``DEBLURLAYERS_SANITIZE=address`` asks for an AddressSanitizer build, else ``""``."""
    value = os.environ.get("DEBLURLAYERS_SANITIZE", "").strip().lower()
    if value not in SANITIZERS:
        raise ValueError(f"DEBLURLAYERS_SANITIZE: expected 'address' or nothing, got {value!r}")
    return value


def quiet_build() -> bool:
    return os.environ.get("DEBLURLAYERS_QUIET_BUILD", "0") not in ("", "0", "false", "False")
