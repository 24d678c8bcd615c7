"""Reference models of the papers, assembled from deblurlayers.layers."""

__all__ = []
