"""BlurAwareSparseAttention vs dense spatio-temporal window attention, against the clip length T.

    python benchmarks/bsst_scaling.py [--frames 12 24 48 60] [--threads 2] [--repeats 2]
                                      [--plot benchmarks/results/bsst_scaling.png]

BSSTNet's size: one layer, 32x32 tokens per frame (a 256x256 crop), 512-d tokens, 4 heads, 8x8
windows enlarged to 16x16, 8x8 pooled tokens, batch 1, fp32, forward without autograd.
Synthetic blur map: the 4 top-left windows (a quarter) blurry (level 1) in half the frames
(t mod 4 in {0, 1}, so both parities), every other token level 0.05.
  sparse -- the layer as BSSTNet uses it (theta 0.3, parity 0, Kq = Kkv = T/4)
  dense  -- the same layer with every frame of every window selected as query and key/value
            (parity None, theta None, Kq = Kkv = T): window attention over all T frames, each
            frame's window attending to every frame's 16x16 region and pooled tokens
FLOPs: deblurlayers.flops.count_flops on the meta device (1 MAC = 2 FLOPs). Time: best of
--repeats interleaved single forwards. Peak memory: resident-set growth of a fresh process over
the inputs it holds (high-water mark reset via /proc/self/clear_refs after building them).
The plot needs matplotlib (optional: pip install matplotlib); the table does not.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import _memory
from deblurlayers import BlurAwareSparseAttention
from deblurlayers.flops import count_flops

TOKENS, DIM = 32, 512
VARIANTS = ("sparse", "dense")


def make_layer(variant: str, frames: int) -> BlurAwareSparseAttention:
    torch.manual_seed(0)
    if variant == "sparse":
        return BlurAwareSparseAttention(DIM).eval()
    return BlurAwareSparseAttention(DIM, theta=None, parity=None, num_query_frames=frames,
                                    num_kv_frames=frames).eval()


def make_inputs(frames: int):
    torch.manual_seed(1)
    tokens = torch.randn(1, frames, TOKENS, TOKENS, DIM)
    blur = torch.full((1, frames, 1, TOKENS, TOKENS), 0.05)
    blurry = [t for t in range(frames) if t % 4 < 2]
    blur[0, blurry, 0, :16, :16] = 1.0
    return tokens, blur


def forward_seconds(frames: int, repeats: int) -> dict:
    tokens, blur = make_inputs(frames)
    layers = {v: make_layer(v, frames) for v in VARIANTS}
    best = {v: float("inf") for v in VARIANTS}
    with torch.no_grad():
        for _ in range(repeats):
            for v in VARIANTS:  # interleaved, so machine drift hits both alike
                start = time.perf_counter()
                layers[v](tokens, blur)
                best[v] = min(best[v], time.perf_counter() - start)
    return best


def peak_extra_mb(variant: str, frames: int, threads: int) -> float:
    setup = f"""
    import torch
    from bsst_scaling import make_inputs, make_layer
    torch.set_num_threads({threads})
    layer = make_layer({variant!r}, {frames})
    torch.set_grad_enabled(False)
    make_layer({variant!r}, 4)(*make_inputs(4))  # load libraries first
    tokens, blur = make_inputs({frames})
    """
    return _memory.peak_extra_mb(setup, "layer(tokens, blur)")


def plot(rows, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: no plot written to {path})")
        return
    frames = [r["T"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, key, label in zip(axes, ("gflops", "seconds", "peak_mb"),
                              ("GFLOPs (forward)", "forward time (s)", "peak extra memory (MB)")):
        for v, style in zip(VARIANTS, ("o-", "s--")):
            ax.plot(frames, [r[v][key] for r in rows], style, label=v)
        ax.set_xlabel("frames T")
        ax.set_title(label)
        ax.set_xticks(frames)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("BlurAwareSparseAttention vs dense window attention (32x32 tokens, 512-d, 1 layer)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 24, 48, 60])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plot", type=str, default="benchmarks/results/bsst_scaling.png")
    parser.add_argument("--json", type=str, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for frames in args.frames:
        tokens, blur = make_inputs(frames)
        flops = {v: count_flops(make_layer(v, frames), tokens, blur).flops / 1e9 for v in VARIANTS}
        del tokens, blur
        seconds = forward_seconds(frames, args.repeats)
        memory = {v: peak_extra_mb(v, frames, args.threads) for v in VARIANTS}
        rows.append({"T": frames, **{v: {"gflops": flops[v], "seconds": seconds[v], "peak_mb": memory[v]}
                                     for v in VARIANTS}})
        print(f"T={frames}: done", flush=True)
    print(f"\nBSST layer vs dense, 32x32 tokens x 512, batch 1, fp32, {args.threads} threads, no autograd\n")
    print("| T | GFLOPs sparse | GFLOPs dense | ratio | fwd s sparse | fwd s dense | ratio "
          "| peak MB sparse | peak MB dense | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s, d = r["sparse"], r["dense"]
        print(f"| {r['T']} | {s['gflops']:.1f} | {d['gflops']:.1f} | {s['gflops'] / d['gflops']:.2f} "
              f"| {s['seconds']:.2f} | {d['seconds']:.2f} | {s['seconds'] / d['seconds']:.2f} "
              f"| {s['peak_mb']:.0f} | {d['peak_mb']:.0f} | {s['peak_mb'] / d['peak_mb']:.2f} |")
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
