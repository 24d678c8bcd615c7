"""Optical flow estimators the models run (not part of their state dicts): ``RAFT`` (BSSTNet's)."""
from .raft import RAFT, CorrelationPyramid, convex_upsample

__all__ = ["RAFT", "CorrelationPyramid", "convex_upsample"]
