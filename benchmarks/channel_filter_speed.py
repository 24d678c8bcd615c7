"""Channel-wise dynamic filtering (CWGDN's D_c): grouped convolution vs the native pixel filter.

    python benchmarks/channel_filter_speed.py [--threads 2]

Both compute out[b, c] = conv2d(x[b, c], K[b, c]) with a 3x3 kernel per (sample, channel):
  grouped -- F.conv2d over x viewed as (1, B*C, H, W) with B*C groups (the official code)
  native  -- deblurlayers' pixel_dynamic_filter with a 1x1 kernel map (a constant per-pixel kernel)
The faster one backs deblurlayers.ops.channel_dynamic_filter. fp32, medians, forward and
autograd backward (to x and the kernels).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from deblurlayers.ops import pixel_dynamic_filter

SHAPES = [(10, 256, 64, 64), (4, 256, 90, 160), (1, 64, 360, 640)]


def grouped(x, k):
    b, c, h, w = x.shape
    return F.conv2d(x.reshape(1, b * c, h, w), k.reshape(b * c, 1, 3, 3), padding=1, groups=b * c).view(b, c, h, w)


def native(x, k):
    b, c = x.shape[:2]
    return pixel_dynamic_filter(x, k.reshape(b, c * 9, 1, 1), 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| (B, C, H, W) | grouped fwd ms | native fwd ms | grouped bwd ms | native bwd ms |")
    print("|---|---:|---:|---:|---:|")
    for shape in SHAPES:
        torch.manual_seed(0)
        x, k = torch.randn(shape), torch.randn(shape[0], shape[1], 3, 3)
        torch.testing.assert_close(grouped(x, k), native(x, k), atol=1e-4, rtol=1e-4)
        row = []
        for fn in (grouped, native):
            with torch.no_grad():
                row.append(Timer("f(x, k)", globals=dict(f=fn, x=x, k=k), num_threads=args.threads)
                           .blocked_autorange(min_run_time=1).median * 1e3)
        for fn in (grouped, native):
            xg, kg = x.clone().requires_grad_(), k.clone().requires_grad_()
            out = fn(xg, kg)
            row.append(Timer("torch.autograd.grad(o, (x, k), g, retain_graph=True)",
                             globals=dict(torch=torch, o=out, x=xg, k=kg, g=torch.randn_like(out)),
                             num_threads=args.threads).blocked_autorange(min_run_time=1).median * 1e3)
        print(f"| {shape} | " + " | ".join(f"{v:.1f}" for v in row) + " |")


if __name__ == "__main__":
    main()
