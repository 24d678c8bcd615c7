"""Helpers shared by the tests."""
import torch

# fp16/bf16 are compared with an fp32 reference computed from the same rounded inputs.
TOLERANCES = {
    torch.float64: dict(atol=1e-12, rtol=1e-12),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
