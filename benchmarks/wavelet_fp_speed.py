"""WaveletFP forward on a 10-frame 256x256 clip: native ops vs DEBLURLAYERS_BACKEND=reference.

    python benchmarks/wavelet_fp_speed.py [--threads 2] [--frames 10] [--size 256] [--repeats 2]

The module is DSTNet's (C = P = 64, 15 ResBlocks per DTFF, 5 CWGDN, two Haar levels), applied to
(1, T, 64, size, size) features (what DSTNet's stem gives for a T x 3 x size x size clip), fp32,
inference (no_grad). Each backend runs in a fresh process: time = best of --repeats forwards,
extra memory = peak resident-set (VmHWM) growth over the module and input.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = """
import time, torch
from deblurlayers import WaveletFP
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
torch.set_num_threads({threads})
torch.manual_seed(0)
fp = WaveletFP().eval()
x = torch.randn(1, {frames}, 64, {size}, {size})
with torch.no_grad():
    fp(x[:, :2, :, :32, :32])  # builds/loads the native ops, warms up
    before = hwm_mb()
    times = []
    for _ in range({repeats}):
        start = time.perf_counter()
        fp(x)
        times.append(time.perf_counter() - start)
print(min(times), hwm_mb() - before)
"""


def run(backend: str, args) -> tuple:
    env = {**os.environ, "DEBLURLAYERS_BACKEND": backend}
    code = CHILD.format(threads=args.threads, frames=args.frames, size=args.size, repeats=args.repeats)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    seconds, extra_mb = map(float, out.stdout.split()[-2:])
    return seconds, extra_mb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    results = {backend: run(backend, args) for backend in ("native", "reference")}
    print(f"WaveletFP (DSTNet config) forward, 1x{args.frames}x64x{args.size}x{args.size}, fp32, "
          f"{args.threads} threads, no_grad\n")
    print("| backend | forward s | peak extra MB |")
    print("|---|---:|---:|")
    for backend, (seconds, mb) in results.items():
        print(f"| {backend} | {seconds:.2f} | {mb:.0f} |")
    (tn, mn), (tr, mr) = results["native"], results["reference"]
    print(f"| native vs reference | {tr / tn:.2f}× faster | {mr / max(mn, 1):.2f}× less |")


if __name__ == "__main__":
    main()
