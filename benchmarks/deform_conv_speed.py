"""Modulated deformable convolution (DCNv2): native kernel vs the plain-PyTorch formulation, in one run.

    python benchmarks/deform_conv_speed.py [--threads 2] [--sizes 180x320 360x640] [--repeats 2]

Setup (issue 4): 3x3 kernel, 64 -> 64 channels, 8 offset groups, padding 1, batch 1, fp32, ERDN's
DCNv2Pack shape. Offsets are Gaussian with sigma 2 px, masks uniform in [0, 1].
Peers:
  native     -- deblurlayers.ops.deform_conv2d (C++ kernel)
  reference  -- deform_conv2d_reference: every tap sampled with one grid_sample, then one GEMM
                (the library's oracle: any stride, dilation and weight groups)
  grouped    -- grouped_sample_gemm: the same algorithm written for this setup only, without any
                copy between grid_sample and the GEMM (the fastest plain-PyTorch peer we could write)
  torchvision.ops.deform_conv2d, if torchvision is installed (it is not a dependency)
For scale: a plain 3x3 conv2d of the same size, and the GEMM alone ((64 x 576) @ (576 x H*W)),
i.e. the machine's matmul rate on this problem.
Forward = the op alone; backward = autograd.grad to input, offset, mask, weight and bias (forward
excluded). Time: best of --repeats interleaved medians. GFLOP/s counts the convolution's
2*Cout*Cin*9*H*W FLOPs only. Extra memory: peak resident-set growth of a fresh process running
forward (or forward + backward) once, over the inputs it holds (benchmarks/_memory.py).
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import _memory
from deblurlayers import native_status
from deblurlayers.ops import deform_conv2d, deform_conv2d_reference

CHANNELS, GROUPS, K = 64, 8, 3


def grouped_sample_gemm(input, offset, weight, bias, padding=1, mask=None):
    """The fastest plain-PyTorch formulation we could write for this setup (stride 1, dilation 1,
    one weight group): one grid_sample of the (N*OG, Cin/OG, H, W) input at every tap, the mask
    product in place of a copy, and the (OG, C, K) column order left as it is, since it already
    is the weight's (Cin, KH*KW) order, so one GEMM without any permutation; autograd backward."""
    n, cin, h, w = input.shape
    cout, _, kh, kw = weight.shape
    taps = kh * kw
    og = offset.shape[1] // (2 * taps)
    ho, wo = offset.shape[-2:]
    ky, kx = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing="ij")
    base_y = (torch.arange(ho).view(1, -1, 1) - padding + ky.reshape(-1, 1, 1)).to(input.dtype)
    base_x = (torch.arange(wo).view(1, 1, -1) - padding + kx.reshape(-1, 1, 1)).to(input.dtype)
    delta = offset.view(n, og, taps, 2, ho, wo)
    grid = torch.stack(((2 * (base_x + delta[:, :, :, 1]) + 1) / w - 1,
                        (2 * (base_y + delta[:, :, :, 0]) + 1) / h - 1), dim=-1)
    sampled = F.grid_sample(input.view(n * og, cin // og, h, w), grid.view(n * og, taps * ho, wo, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(n, og, cin // og, taps, ho * wo)
    if mask is not None:
        sampled = sampled * mask.view(n, og, 1, taps, ho * wo)
    out = torch.matmul(weight.view(cout, cin * taps), sampled.view(n, cin * taps, ho * wo))
    return (out + bias.view(1, -1, 1)).view(n, cout, ho, wo)


def _peers():
    peers = {"native": deform_conv2d, "reference": deform_conv2d_reference, "grouped": grouped_sample_gemm}
    try:
        import torchvision.ops

        peers["torchvision"] = torchvision.ops.deform_conv2d
    except ImportError:
        pass
    return peers


PEERS = _peers()


def make_inputs(h, w, requires_grad=False):
    torch.manual_seed(0)
    tensors = dict(input=torch.randn(1, CHANNELS, h, w), offset=2 * torch.randn(1, 2 * GROUPS * K * K, h, w),
                   weight=torch.randn(CHANNELS, CHANNELS, K, K) / 24, bias=torch.randn(CHANNELS),
                   mask=torch.rand(1, GROUPS * K * K, h, w))
    return {k: v.requires_grad_(requires_grad) for k, v in tensors.items()}


def call(name, t):
    return PEERS[name](t["input"], t["offset"], t["weight"], t["bias"], padding=1, mask=t["mask"])


def _median_ms(stmt, threads, min_run_time, **env):
    return Timer(stmt, globals=env, num_threads=threads).blocked_autorange(min_run_time=min_run_time).median * 1e3


def time_all(h, w, threads, min_run_time, repeats):
    t = make_inputs(h, w)
    want = call("native", t)
    for name in PEERS:
        torch.testing.assert_close(call(name, t), want, atol=1e-3, rtol=1e-3)
    del want
    cols = torch.randn(K * K * CHANNELS, h * w)
    weight2d = t["weight"].view(CHANNELS, -1)
    rounds = []
    for _ in range(repeats):
        row = {}
        with torch.no_grad():
            row["conv2d"] = (_median_ms("f(x, w, b, padding=1)", threads, min_run_time, f=F.conv2d,
                                        x=t["input"], w=t["weight"], b=t["bias"]), float("nan"))
            row["gemm"] = (_median_ms("torch.mm(a, b)", threads, min_run_time, torch=torch, a=weight2d, b=cols),
                           float("nan"))
        for name in PEERS:
            with torch.no_grad():
                fwd = _median_ms("f(n, t)", threads, min_run_time, f=call, n=name, t=t)
            inputs = {k: v.clone().requires_grad_() for k, v in t.items()}
            out = call(name, inputs)
            bwd = _median_ms("torch.autograd.grad(o, i, g, retain_graph=True)", threads, min_run_time, torch=torch,
                             o=out, i=list(inputs.values()), g=torch.randn_like(out))
            row[name] = (fwd, bwd)
            del out, inputs
        rounds.append(row)
    return {name: tuple(min(r[name][i] for r in rounds) for i in range(2)) for name in rounds[0]}


def memory_mb(name, h, w, backward, threads):
    setup = f"""
    import torch
    torch.set_num_threads({threads})
    from deform_conv_speed import call, make_inputs
    t = make_inputs({h}, {w}, requires_grad={backward})
    call({name!r}, make_inputs(8, 8, requires_grad={backward}))  # load libraries and kernels first
    """
    run = f"""
    out = call({name!r}, t)
    if {backward}:
        torch.autograd.grad(out, list(t.values()), torch.ones_like(out))
    """
    return _memory.peak_extra_mb(setup, run)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["180x320", "360x640"])
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=str, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("native:", native_status(load=True)["status"], "| peers:", ", ".join(PEERS))
    results = {}
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        times = time_all(h, w, args.threads, args.min_run_time, args.repeats)
        memory = {name: (memory_mb(name, h, w, False, args.threads), memory_mb(name, h, w, True, args.threads))
                  for name in PEERS}
        gflop = 2 * CHANNELS * CHANNELS * K * K * h * w / 1e9
        results[size] = {"times_ms": times, "extra_mb": memory, "gflop": gflop}
        print(f"\n{size}: 3x3 DCNv2, {CHANNELS}->{CHANNELS}, {GROUPS} offset groups, fp32, {args.threads} threads, "
              f"{gflop:.2f} GFLOP per forward\n")
        print("| formulation | fwd ms | fwd GFLOP/s | bwd ms | fwd extra MB | fwd+bwd extra MB |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in ("gemm", "conv2d"):
            label = "GEMM alone (matmul rate)" if name == "gemm" else "plain conv2d 3x3"
            print(f"| {label} | {times[name][0]:.1f} | {gflop / times[name][0] * 1e3:.0f} | | | |")
        for name in PEERS:
            fwd, bwd = times[name]
            print(f"| {name} | {fwd:.1f} | {gflop / fwd * 1e3:.0f} | {bwd:.1f} | {memory[name][0]:.0f} | "
                  f"{memory[name][1]:.0f} |")
        nat = times["native"]
        for i, what in enumerate(("forward", "backward")):
            peer = min((n for n in PEERS if n != "native"), key=lambda n: times[n][i])
            print(f"native vs the fastest peer ({peer}), {what}: {times[peer][i] / nat[i]:.2f}x faster")
        peer = min((n for n in PEERS if n != "native"), key=lambda n: memory[n][1])
        print(f"extra memory vs the leanest peer ({peer}): {memory[peer][0] / max(memory['native'][0], 1e-9):.1f}x "
              f"less (fwd), {memory[peer][1] / max(memory['native'][1], 1e-9):.1f}x less (fwd+bwd)")
        print(f"native forward at {times['gemm'][0] / nat[0]:.2f} of the matmul rate, "
              f"{times['conv2d'][0] / nat[0]:.2f} of conv2d's speed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
