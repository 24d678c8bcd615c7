"""The native DCN alone at 180x320 (ERDN's DCNv2Pack setup): best forward and backward time of N calls.

    python benchmarks/deform_conv_native_time.py [threads] [calls]      # prints one JSON line

For A/B runs of two kernel versions: one process per version and run, alternated (issue 22's
before/after figures in RESULTS.md came from this with the two commits' csrc/ checked out in turn;
each version's build is cached under its own source hash).
"""
import json
import sys
import time

import torch

from deblurlayers.ops import deform_conv2d
from deblurlayers.utils.env import use_backend

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
calls = int(sys.argv[2]) if len(sys.argv) > 2 else 25
torch.set_num_threads(threads)
gen = torch.Generator().manual_seed(0)
h, w = 180, 320
x = torch.randn(1, 64, h, w, generator=gen, requires_grad=True)
offset = (2 * torch.randn(1, 2 * 8 * 9, h, w, generator=gen)).requires_grad_()
mask = torch.rand(1, 8 * 9, h, w, generator=gen, requires_grad=True)
weight = (0.05 * torch.randn(64, 64, 3, 3, generator=gen)).requires_grad_()
bias = torch.zeros(64, requires_grad=True)
forward, backward = [], []
with use_backend("native"):
    for _ in range(calls):
        start = time.perf_counter()
        out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
        forward.append(time.perf_counter() - start)
        grad = torch.ones_like(out)
        start = time.perf_counter()
        torch.autograd.grad(out, (x, offset, mask, weight, bias), grad)
        backward.append(time.perf_counter() - start)
print(json.dumps({"threads": threads, "fwd_ms": round(1e3 * min(forward), 2), "bwd_ms": round(1e3 * min(backward), 2)}))
