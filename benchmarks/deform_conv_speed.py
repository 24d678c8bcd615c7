"""Modulated deformable convolution (DCNv2): native kernel vs the plain-PyTorch formulation, in one run.

    python benchmarks/deform_conv_speed.py [--threads 2] [--sizes 180x320 360x640] [--repeats 2]

Setup (issue 4): 3x3 kernel, 64 -> 64 channels, 8 offset groups, padding 1, batch 1, fp32, ERDN's
DCNv2Pack shape. Offsets are Gaussian with sigma 2 px, masks uniform in [0, 1].
Peers:
  native     -- deblurlayers.ops.deform_conv2d (C++ kernel)
  reference  -- deform_conv2d_reference: every tap sampled with one grid_sample, then one GEMM
                (the fastest plain-PyTorch formulation we know)
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


def _peers():
    peers = {"native": deform_conv2d, "reference": deform_conv2d_reference}
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
        nat, ref = times["native"], times["reference"]
        print(f"\nnative vs reference: forward {ref[0] / nat[0]:.2f}x faster, backward {ref[1] / nat[1]:.2f}x "
              f"faster; extra memory {memory['reference'][0] / max(memory['native'][0], 1e-9):.1f}x less (fwd), "
              f"{memory['reference'][1] / max(memory['native'][1], 1e-9):.1f}x less (fwd+bwd)")
        print(f"native forward at {times['gemm'][0] / nat[0]:.2f} of the matmul rate, "
              f"{times['conv2d'][0] / nat[0]:.2f} of conv2d's speed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
