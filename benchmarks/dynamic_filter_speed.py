"""Pixel dynamic filter: native kernel vs the plain-PyTorch formulations, in one run.

    python benchmarks/dynamic_filter_speed.py [--threads 2] [--size 1 64 360 640]

C=64 per-channel 3x3 kernels (DSTNet's D_p), fp32. Peers:
  unfold   -- the official code: F.unfold x, multiply by the kernel map, sum the taps
  shifted  -- nine shifted multiply-adds over the zero-padded input
Both take a full-resolution kernel map; for the 1/8-resolution case they are
preceded by F.interpolate(..., size=(H, W), mode="bilinear") ("upsample-then-filter").
Forward = the op alone; backward = autograd.grad to x and the kernel map
(forward excluded). Time: best of --repeats interleaved medians. Extra memory:
peak resident-set growth of a fresh process running forward (or forward +
backward) once, over the inputs it already holds.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.benchmark import Timer

from deblurlayers import native_status
from deblurlayers.ops import pixel_dynamic_filter, pixel_dynamic_filter_reference

K = 3


def _full_res(kernels, x):
    if kernels.shape[-2:] != x.shape[-2:]:
        kernels = F.interpolate(kernels, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return kernels


def unfold_filter(x, kernels):
    return pixel_dynamic_filter_reference(x, _full_res(kernels, x), K)


def shifted_filter(x, kernels):
    b, c, h, w = x.shape
    weights = rearrange(_full_res(kernels, x), "b (c t) h w -> b c t h w", t=K * K)
    padded = F.pad(x, (K // 2,) * 4)
    out = weights[:, :, 0] * padded[..., :h, :w]
    for t in range(1, K * K):
        ky, kx = divmod(t, K)
        out = out + weights[:, :, t] * padded[..., ky:ky + h, kx:kx + w]
    return out


def native_filter(x, kernels):
    return pixel_dynamic_filter(x, kernels, K)


FORMULATIONS = {"native": native_filter, "unfold": unfold_filter, "shifted": shifted_filter}


def make_inputs(shape, down, requires_grad=False):
    torch.manual_seed(0)
    b, c, h, w = shape
    x = torch.randn(shape, requires_grad=requires_grad)
    kernels = torch.randn(b, c * K * K, h // down, w // down, requires_grad=requires_grad)
    return x, kernels


def time_all(shape, down, threads, min_run_time, repeats):
    x, kernels = make_inputs(shape, down)
    ref = native_filter(x, kernels)
    for fn in FORMULATIONS.values():
        torch.testing.assert_close(fn(x, kernels), ref, atol=1e-4, rtol=1e-4)
    rounds = []
    for _ in range(repeats):
        row = {}
        for name, fn in FORMULATIONS.items():
            with torch.no_grad():
                fwd = Timer("f(x, k)", globals=dict(f=fn, x=x, k=kernels), num_threads=threads)
                fwd_ms = fwd.blocked_autorange(min_run_time=min_run_time).median * 1e3
            xg, kg = x.clone().requires_grad_(), kernels.clone().requires_grad_()
            out = fn(xg, kg)
            grad = torch.randn_like(out)
            bwd = Timer("torch.autograd.grad(o, (x, k), g, retain_graph=True)",
                        globals=dict(torch=torch, o=out, x=xg, k=kg, g=grad), num_threads=threads)
            row[name] = (fwd_ms, bwd.blocked_autorange(min_run_time=min_run_time).median * 1e3)
            del out, grad, xg, kg
        rounds.append(row)
    return {name: tuple(min(r[name][i] for r in rounds) for i in range(2)) for name in FORMULATIONS}


def peak_extra_mb(name, shape, down, backward):
    """Run in a fresh process: peak resident-set growth (MB) of one forward (+ backward)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    code = f"""
import torch, sys
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
from dynamic_filter_speed import FORMULATIONS, make_inputs
torch.set_num_threads(1)
x, k = make_inputs({list(shape)!r}, {down}, requires_grad={backward})
fn = FORMULATIONS[{name!r}]
fn(torch.zeros(1, 1, {8 * down}, {8 * down}), torch.zeros(1, 9, 8, 8))  # load libraries first
before = hwm_mb()
out = fn(x, k)
if {backward}:
    torch.autograd.grad(out, (x, k), torch.ones_like(out))
print(hwm_mb() - before)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(proc.stdout.split()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=4, default=[1, 64, 360, 640])
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=str, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("native:", native_status(load=True)["status"])
    results = {}
    for down, label in [(1, "full-resolution kernels"), (8, "kernels at 1/8 resolution")]:
        times = time_all(args.size, down, args.threads, args.min_run_time, args.repeats)
        memory = {name: (peak_extra_mb(name, args.size, down, False), peak_extra_mb(name, args.size, down, True))
                  for name in FORMULATIONS}
        results[label] = {"times_ms": times, "extra_mb": memory}
        best_fwd = min((times[n][0], n) for n in FORMULATIONS if n != "native")
        best_bwd = min((times[n][1], n) for n in FORMULATIONS if n != "native")
        print(f"\n{label}: {'x'.join(map(str, args.size))}, k=3, fp32, {args.threads} threads\n")
        print("| formulation | fwd ms | bwd ms | fwd extra MB | fwd+bwd extra MB |")
        print("|---|---:|---:|---:|---:|")
        for name in FORMULATIONS:
            print(f"| {name} | {times[name][0]:.1f} | {times[name][1]:.1f} | {memory[name][0]:.0f} | {memory[name][1]:.0f} |")
        print(f"| native speed-up vs fastest | {best_fwd[0] / times['native'][0]:.2f}× ({best_fwd[1]}) | "
              f"{best_bwd[0] / times['native'][1]:.2f}× ({best_bwd[1]}) | | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
