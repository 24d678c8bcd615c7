"""How much the four papers' protocols move PSNR/SSIM on the same restored frames.

    python benchmarks/protocol_spread.py [--frames 100] [--size 256]

A "video" of ``--frames`` crops sliding over scikit-image's astronaut (2 px per frame) is the
ground truth; the "restored" video is it blurred (Gaussian σ = 0.8), with noise (σ = 2 grey levels)
and a 1 % overshoot out of [0, 1] (as an unclamped network output has), about 32 dB like the papers'
outputs. Each protocol scores the same frames its way; the other rows isolate one factor each.
Needs scikit-image (the test extra).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from deblurlayers.metrics import PROTOCOLS, FrameScores, gaussian_taps, psnr, quantize, ssim


def video(frames: int, size: int):
    from skimage import data

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    sharp = torch.stack([image[:, 40 + i % 100:40 + i % 100 + size, 2 * i % 200:2 * i % 200 + size]
                         for i in range(frames)])
    sharp = quantize(sharp).float() / 255  # ground truth is read from 8-bit files
    taps = gaussian_taps(7, 0.8).float()
    kernel = (taps[:, None] * taps[None, :]).expand(3, 1, 7, 7)
    blurred = F.conv2d(F.pad(sharp, (3, 3, 3, 3), mode="replicate"), kernel, groups=3)
    noise = torch.randn(sharp.shape, generator=torch.Generator().manual_seed(0)) * (2 / 255)
    restored = (blurred - 0.5) * 1.01 + 0.5 + noise
    return restored, sharp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    restored, sharp = video(args.frames, args.size)

    print(f"## One restored {args.frames}-frame {args.size}² video, scored by each paper's protocol\n")
    print("| protocol | frames scored | PSNR (dB) | SSIM |")
    print("|---|---|---|---|")
    for name, protocol in PROTOCOLS.items():
        groups = protocol.groups(args.frames)
        scores = [protocol.score(restored[f], sharp[f]) for f in sorted(groups)]
        summary = protocol.summarize([FrameScores("video", tuple(sorted(groups)), tuple(p for p, _ in scores),
                                                  tuple(s for _, s in scores), tuple(groups[f] for f in sorted(groups)))])
        print(f"| {name} | {len(groups)} | {summary[0]:.3f} | {summary[1]:.4f} |")

    q, gt = quantize(restored), quantize(sharp)
    raw = restored.double() * 255
    print("\n## One factor at a time (all frames, mean over frames)\n")
    print("| what | PSNR (dB) | SSIM-2d | SSIM-bsst | SSIM-3d |")
    print("|---|---|---|---|---|")
    rows = [("8-bit, no crop", q, 0), ("raw float (no clamp, no rounding), no crop", raw, 0), ("8-bit, 4 px crop", q, 4)]
    for label, x, crop in rows:
        values = [psnr(x, gt, 255, crop=crop).mean().item()] + [ssim(x, gt, 255, crop=crop, kind=k).mean().item()
                                                                for k in ("2d", "bsst", "3d")]
        print(f"| {label} | {values[0]:.3f} | " + " | ".join(f"{v:.4f}" for v in values[1:]) + " |")


if __name__ == "__main__":
    main()
