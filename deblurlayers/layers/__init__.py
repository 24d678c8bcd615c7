"""nn.Modules built on deblurlayers.ops (one file per layer family)."""

__all__ = []
