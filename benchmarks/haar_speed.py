"""Haar DWT/IDWT: native kernel vs the plain-PyTorch formulations, in one run.

    python benchmarks/haar_speed.py [--threads 2] [--size 1 64 360 640]

Peers (all exact, all differentiable by autograd):
  slicing  -- four strided slices of x, butterfly of adds (inverse: stack + rearrange)
  einsum   -- rearrange into 2x2 blocks, einsum with the 4x2x2 filters
  conv     -- DSTNet's formulation: grouped 2x2 stride-2 conv / transposed conv
              (deblurlayers' reference)
Forward = the op alone; backward = autograd.grad of its outputs against random
gradients (forward excluded). Each cell is the best of --repeats interleaved
medians of torch.utils.benchmark runs, fp32: the peers' timings swing by up to
4x with the allocator's state (glibc's mmap threshold decides whether their
temporaries are fresh, page-faulting memory), so each side gets its best case.
"""
from __future__ import annotations

import argparse

import torch
from einops import rearrange
from torch.utils.benchmark import Timer

from deblurlayers import native_status
from deblurlayers.ops import haar_dwt2d, haar_dwt2d_reference, haar_idwt2d, haar_idwt2d_reference

SIGNS = torch.tensor([[[1, 1], [1, 1]], [[1, -1], [1, -1]], [[1, 1], [-1, -1]], [[1, -1], [-1, 1]]], dtype=torch.float32)


def _butterfly(a, b, c, d, s):
    st, sb, dt, db = a + b, c + d, a - b, c - d
    return (st + sb) * s, (dt + db) * s, (st - sb) * s, (dt - db) * s


def dwt_slicing(x):
    ll, *highs = _butterfly(x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2], 0.25)
    return ll, torch.cat(highs, dim=1)


def idwt_slicing(ll, highs):
    block = torch.stack(_butterfly(ll, *highs.chunk(3, dim=1), 1.0), dim=-1)
    return rearrange(block, "b c h w (p q) -> b c (h p) (w q)", p=2, q=2)


def dwt_einsum(x):
    bands = torch.einsum("bchpwq,kpq->bkchw", rearrange(x, "b c (h p) (w q) -> b c h p w q", p=2, q=2), SIGNS * 0.25)
    return bands[:, 0], rearrange(bands[:, 1:], "b k c h w -> b (k c) h w")


def idwt_einsum(ll, highs):
    bands = torch.cat([ll.unsqueeze(1), rearrange(highs, "b (k c) h w -> b k c h w", k=3)], dim=1)
    return rearrange(torch.einsum("bkchw,kpq->bchpwq", bands, SIGNS), "b c h p w q -> b c (h p) (w q)")


DWT = {"native": haar_dwt2d, "slicing": dwt_slicing, "einsum": dwt_einsum, "conv": haar_dwt2d_reference}
IDWT = {"native": haar_idwt2d, "slicing": idwt_slicing, "einsum": idwt_einsum, "conv": haar_idwt2d_reference}


def _time(stmt, threads, min_run_time, **env):
    return Timer(stmt, globals=env, num_threads=threads).blocked_autorange(min_run_time=min_run_time).median * 1e3


def run(shape, threads, min_run_time, repeats):
    rounds = [_run_once(shape, threads, min_run_time) for _ in range(repeats)]
    return {name: {col: min(r[name][col] for r in rounds) for col in rounds[0][name]} for name in rounds[0]}


def _run_once(shape, threads, min_run_time):
    torch.manual_seed(0)
    x = torch.randn(shape)
    ll, highs = haar_dwt2d(x)
    rows = {}
    for name in DWT:
        dwt, idwt = DWT[name], IDWT[name]
        torch.testing.assert_close(dwt(x)[1], highs, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(idwt(ll, highs), x, atol=1e-5, rtol=1e-5)
        xg = x.clone().requires_grad_()
        outs = dwt(xg)
        grads = [torch.randn_like(t) for t in outs]
        llg, hig = ll.clone().requires_grad_(), highs.clone().requires_grad_()
        rec = idwt(llg, hig)
        grad_x = torch.randn_like(rec)
        with torch.no_grad():
            dwt_fwd = _time("f(x)", threads, min_run_time, f=dwt, x=x)
            idwt_fwd = _time("f(a, b)", threads, min_run_time, f=idwt, a=ll, b=highs)
        dwt_bwd = _time("torch.autograd.grad(o, x, g, retain_graph=True)", threads, min_run_time,
                        torch=torch, o=outs, x=xg, g=grads)
        idwt_bwd = _time("torch.autograd.grad(o, (a, b), g, retain_graph=True)", threads, min_run_time,
                         torch=torch, o=rec, a=llg, b=hig, g=grad_x)
        rows[name] = dict(dwt_fwd=dwt_fwd, dwt_bwd=dwt_bwd, idwt_fwd=idwt_fwd, idwt_bwd=idwt_bwd)
    return rows


def report(rows, shape, threads):
    cols = ["dwt_fwd", "dwt_bwd", "idwt_fwd", "idwt_bwd"]
    best = {c: min((rows[n][c], n) for n in rows if n != "native") for c in cols}
    bytes_moved = 2 * 4 * torch.Size(shape).numel()  # read + write once, fp32
    lines = [f"Haar DWT/IDWT {'x'.join(map(str, shape))}, fp32, {threads} threads (ms, best of medians)", "",
             "| formulation | DWT fwd | DWT bwd | IDWT fwd | IDWT bwd |", "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    lines.append("| native speed-up vs fastest peer | " + " | ".join(
        f"{best[c][0] / rows['native'][c]:.2f}× ({best[c][1]})" for c in cols) + " |")
    lines.append("")
    lines.append(f"One pass moves {bytes_moved / 1e6:.0f} MB; native DWT fwd = "
                 f"{bytes_moved / rows['native']['dwt_fwd'] / 1e6:.1f} GB/s effective.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=4, default=[1, 64, 360, 640])
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("native:", native_status(load=True)["status"])
    print(report(run(args.size, args.threads, args.min_run_time, args.repeats), args.size, args.threads))


if __name__ == "__main__":
    main()
