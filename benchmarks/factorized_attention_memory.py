"""FactorizedSTAttention vs a full non-local block: memory and time, and the largest clip in 8 GB.

    python benchmarks/factorized_attention_memory.py [--threads 2] [--repeats 3] [--budget-gb 8]

Size: T=5 frames, C=64, 64x64, batch 1, fp32, forward without autograd.
  factorized       -- deblurlayers.FactorizedSTAttention(64) (M=8, N=4), fuses into the centre frame
  non-local        -- Wang et al.'s embedded-Gaussian non-local block over all T*H*W positions
                      (1x1x1 theta/phi/g to C/2, softmax(theta^T phi) g, 1x1x1 back, residual), in
                      plain PyTorch: the (THW)^2 attention matrix is materialised
  non-local (SDPA) -- the same block through scaled_dot_product_attention, for context (on
                      this CPU build it measured as much memory as the plain block)
Time: best of --repeats interleaved forwards. Memory, in a fresh process each: "extra" = peak
resident-set growth over the inputs (high-water mark reset via /proc/self/clear_refs after
building them); "total" = inputs + extra, which is what must fit the budget.
Largest T*H*W in the budget (T=5, square frames): total memory is measured at three sizes, fitted
(quadratic in THW for the plain non-local block, linear for the others), solved for the budget,
then measured again at the predicted size (stepping down until it fits). The SDPA block is left
out of that search: its memory is linear but its time quadratic (hours at those sizes).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from deblurlayers import FactorizedSTAttention

FRAMES, CHANNELS = 5, 64
PEERS = ("factorized", "non-local", "non-local (SDPA)")
FIT_PEERS = ("factorized", "non-local")  # the SDPA block is bound by its quadratic time, not memory


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block over (T, H, W); input and output ``(B, C, T, H, W)``."""

    def __init__(self, channels: int, fused: bool = False) -> None:
        super().__init__()
        inner = channels // 2
        self.theta, self.phi, self.g = (nn.Conv3d(channels, inner, 1) for _ in range(3))
        self.out = nn.Conv3d(inner, channels, 1)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (f(x).flatten(2).transpose(1, 2) for f in (self.theta, self.phi, self.g))  # (B, THW, C/2)
        if self.fused:
            # 4-d (batch, heads, L, E): the layout CPU flash attention takes (3-d falls back to math)
            y = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]
        else:
            y = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
        return x + self.out(y.transpose(1, 2).reshape(x.shape[0], -1, *x.shape[2:]))


def make(peer: str, size: int):
    torch.manual_seed(0)
    if peer == "factorized":
        return FactorizedSTAttention(CHANNELS).eval(), torch.randn(1, FRAMES, CHANNELS, size, size)
    return NonLocalBlock(CHANNELS, fused="SDPA" in peer).eval(), torch.randn(1, CHANNELS, FRAMES, size, size)


def best_seconds(size: int, repeats: int) -> dict:
    models = {p: make(p, size) for p in PEERS}
    best = {p: float("inf") for p in PEERS}
    with torch.no_grad():
        for _ in range(repeats):
            for p, (model, x) in models.items():
                start = time.perf_counter()
                model(x)
                best[p] = min(best[p], time.perf_counter() - start)
    return best


def memory_mb(peer: str, size: int, threads: int) -> tuple:
    """(extra, total) MB of one forward in a fresh process."""
    code = f"""
import sys, torch
sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
from factorized_attention_memory import make
def status_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
torch.set_num_threads({threads})
with torch.no_grad():
    model, x = make({peer!r}, 8)
    model(x)  # load libraries first
    del x
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status_mb("VmRSS")
    model, x = make({peer!r}, {size})
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    held = status_mb("VmRSS")
    model(x)
peak = status_mb("VmHWM")
print(peak - held, peak - base)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    extra, total = proc.stdout.split()[-2:]
    return float(extra), float(total)


def largest_fit(peer: str, budget_mb: float, threads: int) -> tuple:
    """(THW, total MB) of the largest square T=5 clip measured to fit ``budget_mb``."""
    sizes = (32, 48, 64) if peer == "non-local" else (128, 256, 384)
    points = [(FRAMES * s * s, memory_mb(peer, s, threads)[1]) for s in sizes]
    n = torch.tensor([p[0] for p in points], dtype=torch.float64)
    mb = torch.tensor([p[1] for p in points], dtype=torch.float64)
    degree = 2 if peer == "non-local" else 1
    basis = torch.stack([n ** d for d in range(degree + 1)], dim=1)
    coef = torch.linalg.lstsq(basis, mb[:, None]).solution.flatten().tolist()
    if degree == 2:  # c2 n^2 + c1 n + c0 = budget
        c0, c1, c2 = coef
        n_max = (-c1 + (c1 * c1 - 4 * c2 * (c0 - budget_mb)) ** 0.5) / (2 * c2)
    else:
        n_max = (budget_mb - coef[0]) / coef[1]
    size = int((n_max / FRAMES) ** 0.5)
    for _ in range(20):
        total = memory_mb(peer, size, threads)[1]
        if total <= budget_mb:
            return FRAMES * size * size, size, total
        size = int(size * 0.98)
    raise RuntimeError(f"{peer}: no size found under {budget_mb} MB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--budget-gb", type=float, default=8.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seconds = best_seconds(args.size, args.repeats)
    memory = {p: memory_mb(p, args.size, args.threads) for p in PEERS}
    budget_mb = args.budget_gb * 1024
    fits = {p: largest_fit(p, budget_mb, args.threads) for p in FIT_PEERS}
    print(f"\nT={FRAMES}, C={CHANNELS}, {args.size}x{args.size}, batch 1, fp32, {args.threads} threads, no autograd\n")
    print(f"| block | fwd s | extra MB | total MB | largest T·H·W in {args.budget_gb:g} GB (T={FRAMES}, H=W) |")
    print("|---|---:|---:|---:|---:|")
    for p in PEERS:
        fit = f"{fits[p][0]:,} ({fits[p][1]}², {fits[p][2]:.0f} MB)" if p in fits else "(time-bound)"
        print(f"| {p} | {seconds[p]:.3f} | {memory[p][0]:.0f} | {memory[p][1]:.0f} | {fit} |")
    ours = memory["factorized"]
    print(f"\nnon-local / factorized: extra memory {memory['non-local'][0] / ours[0]:.0f}×, "
          f"time {seconds['non-local'] / seconds['factorized']:.0f}×; largest clip "
          f"{fits['factorized'][0] / fits['non-local'][0]:.0f}× more positions")


if __name__ == "__main__":
    main()
