"""Multi-scale deformable attention: native kernel vs plain-PyTorch formulations, in one run.

    python benchmarks/deform_attn_speed.py [--threads 2] [--size 180 320] [--repeats 2]

STDANet's MMA size: C=128 (M=4 heads of D=32), L=3 frames (levels) of h x w, K=P=12 points,
Lq = 3*h*w queries, batch 1, fp32. Locations are the query's pixel centre plus Gaussian offsets
(sigma 4 px, about the spread of STDANet's initial offsets), weights a softmax over L*P.
Peers:
  per-level  -- one grid_sample per level, weighted and reduced over the points right away
                (deblurlayers' reference)
  stacked    -- Deformable-DETR's ms_deform_attn_core_pytorch: every level's samples are kept,
                stacked, then weighted and summed
  chunked    -- per-level over chunks of 8192 queries, so that the samples stay small and reused
Forward = the op alone; backward = autograd.grad to value, locations and weights (forward
excluded). Time: best of --repeats interleaved medians. Extra memory: peak resident-set growth of
a fresh process running forward (or forward + backward) once, over the inputs it already holds
(the high-water mark is reset after the inputs are built, via /proc/self/clear_refs).
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.benchmark import Timer

import _memory
from deblurlayers import native_status
from deblurlayers.ops import ms_deform_attn, ms_deform_attn_reference

HEADS, HEAD_DIM, FRAMES, POINTS = 4, 32, 3, 12


def stacked_core(value, levels, start, loc, weights):
    n = value.shape[0]
    values = value.split([h * w for h, w in levels], dim=1)
    grids = 2 * loc - 1
    samples = []
    for l, (h, w) in enumerate(levels):
        v = rearrange(values[l], "n (h w) m d -> (n m) d h w", h=h, w=w)
        grid = rearrange(grids[:, :, :, l], "n q m p xy -> (n m) q p xy")
        samples.append(F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = rearrange(weights, "n q m l p -> (n m) 1 q (l p)")
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)
    return rearrange(out, "(n m) d q -> n q (m d)", n=n)


def chunked_core(value, levels, start, loc, weights, chunk=8192):
    """Per-level grid_sample like the reference, over chunks of queries, so that the (N*M, D, q, P)
    samples of a chunk stay a few MB (reused by the allocator) instead of a fresh 1 GB per level:
    the fastest plain-PyTorch peer we could write at this size."""
    n, _, m, d = value.shape
    lq = loc.shape[1]
    planes = [rearrange(v, "n (h w) m d -> (n m) d h w", h=h, w=w)
              for v, (h, w) in zip(value.split([h * w for h, w in levels], dim=1), levels)]
    grids = rearrange(2 * loc - 1, "n q m l p xy -> l (n m) q p xy")
    weights = rearrange(weights, "n q m l p -> l (n m) q p 1")
    out = []
    for q0 in range(0, lq, chunk):
        acc = None
        for l, plane in enumerate(planes):
            sampled = F.grid_sample(plane, grids[l, :, q0:q0 + chunk], mode="bilinear", padding_mode="zeros",
                                    align_corners=False)  # (nm, d, q, p)
            level = torch.matmul(sampled.transpose(1, 2), weights[l, :, q0:q0 + chunk])  # (nm, q, d, 1)
            acc = level if acc is None else acc + level
        out.append(acc)
    return rearrange(torch.cat(out, dim=1), "(n m) q d 1 -> n q (m d)", n=n)


FORMULATIONS = {"native": ms_deform_attn, "per-level": ms_deform_attn_reference, "stacked": stacked_core,
                "chunked": chunked_core}


def make_inputs(h, w, requires_grad=False):
    torch.manual_seed(0)
    levels = [(h, w)] * FRAMES
    value = torch.randn(1, FRAMES * h * w, HEADS, HEAD_DIM)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    centres = torch.stack((xs.flatten() / w, ys.flatten() / h), -1).repeat(FRAMES, 1)  # (Lq, 2)
    offsets = torch.randn(1, FRAMES * h * w, HEADS, FRAMES, POINTS, 2) * 4
    loc = centres.view(1, -1, 1, 1, 1, 2) + offsets / torch.tensor([w, h])
    weights = torch.randn(1, FRAMES * h * w, HEADS, FRAMES * POINTS).softmax(-1).view(*loc.shape[:-1])
    tensors = [t.requires_grad_(requires_grad) for t in (value, loc, weights)]
    return tensors[0], levels, tensors[1], tensors[2]


def call(name, value, levels, loc, weights):
    return FORMULATIONS[name](value, levels, None, loc, weights)


def time_all(h, w, threads, min_run_time, repeats):
    value, levels, loc, weights = make_inputs(h, w)
    ref = call("native", value, levels, loc, weights)
    for name in FORMULATIONS:
        torch.testing.assert_close(call(name, value, levels, loc, weights), ref, atol=1e-4, rtol=1e-4)
    del ref
    rounds = []
    for _ in range(repeats):
        row = {}
        for name in FORMULATIONS:
            with torch.no_grad():
                fwd = Timer("f(n, v, s, l, a)", globals=dict(f=call, n=name, v=value, s=levels, l=loc, a=weights),
                            num_threads=threads)
                fwd_ms = fwd.blocked_autorange(min_run_time=min_run_time).median * 1e3
            inputs = [t.clone().requires_grad_() for t in (value, loc, weights)]
            out = call(name, inputs[0], levels, inputs[1], inputs[2])
            grad = torch.randn_like(out)
            bwd = Timer("torch.autograd.grad(o, i, g, retain_graph=True)",
                        globals=dict(torch=torch, o=out, i=inputs, g=grad), num_threads=threads)
            row[name] = (fwd_ms, bwd.blocked_autorange(min_run_time=min_run_time).median * 1e3)
            del out, grad, inputs
        rounds.append(row)
    return {name: tuple(min(r[name][i] for r in rounds) for i in range(2)) for name in FORMULATIONS}


def peak_extra_mb(name, h, w, backward):
    """Run in a fresh process: peak resident-set growth (MB) of one forward (+ backward)."""
    setup = f"""
    import torch
    from deform_attn_speed import call, make_inputs
    torch.set_num_threads(1)
    value, levels, loc, weights = make_inputs({h}, {w}, requires_grad={backward})
    call({name!r}, *make_inputs(4, 4, requires_grad={backward}))  # load libraries first
    """
    run = f"""
    out = call({name!r}, value, levels, loc, weights)
    if {backward}:
        torch.autograd.grad(out, (value, loc, weights), torch.ones_like(out))
    """
    return _memory.peak_extra_mb(setup, run)


def gathered_bytes(h, w):
    """Bytes the forward must read at least once per tap: 4 taps x D channels x 4 B per sample."""
    samples = FRAMES * h * w * HEADS * FRAMES * POINTS
    return samples * 4 * HEAD_DIM * 4


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"))
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=str, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("native:", native_status(load=True)["status"])
    h, w = args.size
    times = time_all(h, w, args.threads, args.min_run_time, args.repeats)
    memory = {name: (peak_extra_mb(name, h, w, False), peak_extra_mb(name, h, w, True)) for name in FORMULATIONS}
    best_fwd = min((times[n][0], n) for n in FORMULATIONS if n != "native")
    best_bwd = min((times[n][1], n) for n in FORMULATIONS if n != "native")
    best_mem = min((memory[n][0], n) for n in FORMULATIONS if n != "native")
    print(f"\nms_deform_attn, value 1x{FRAMES * h * w}x{HEADS}x{HEAD_DIM} ({FRAMES} levels of {h}x{w}), "
          f"Lq={FRAMES * h * w}, P={POINTS}, fp32, {args.threads} threads\n")
    print("| formulation | fwd ms | bwd ms | fwd extra MB | fwd+bwd extra MB |")
    print("|---|---:|---:|---:|---:|")
    for name in FORMULATIONS:
        print(f"| {name} | {times[name][0]:.0f} | {times[name][1]:.0f} | {memory[name][0]:.0f} | {memory[name][1]:.0f} |")
    print(f"| native vs fastest peer | {best_fwd[0] / times['native'][0]:.1f}× faster ({best_fwd[1]}) | "
          f"{best_bwd[0] / times['native'][1]:.1f}× faster ({best_bwd[1]}) | "
          f"{best_mem[0] / max(memory['native'][0], 1e-9):.1f}× less ({best_mem[1]}) | |")
    gb = gathered_bytes(h, w) / 1e9
    print(f"\nforward gathers {gb:.1f} GB of taps (4 taps x D x 4 B per sample): native "
          f"{gb / (times['native'][0] / 1e3):.1f} GB/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"times_ms": times, "extra_mb": memory}, f, indent=2)


if __name__ == "__main__":
    main()
