"""Tiny synthetic deblurring datasets, made on the fly in the layouts of GoPro, DVD and BSD.

Sharp frames show shapes moving over a textured background; each blurry frame is the mean of
``sub_frames`` sharp sub-frames rendered along the motion, as GoPro was made from 240 fps video.
"""
from pathlib import Path

import torch

from deblurlayers.data import write_image


def render(t: float, height: int, width: int, seed: int) -> torch.Tensor:
    """The scene at time ``t`` (in frames): ``(3, H, W)`` in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float64).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float64).view(1, -1)
    base = torch.rand(3, 1, 1, generator=gen, dtype=torch.float64)
    frame = (0.25 + 0.2 * base * torch.sin(xs / 3.0 + ys / 5.0)).expand(3, height, width).clone()
    for _ in range(3):
        colour = torch.rand(3, 1, 1, generator=gen, dtype=torch.float64)
        cy, cx = (torch.rand(2, generator=gen, dtype=torch.float64) * torch.tensor([height, width])).tolist()
        vy, vx = ((torch.rand(2, generator=gen, dtype=torch.float64) - 0.5) * 6).tolist()
        radius = 3 + 5 * torch.rand((), generator=gen).item()
        inside = ((ys - cy - vy * t) ** 2 + (xs - cx - vx * t) ** 2) <= radius ** 2
        frame = torch.where(inside, colour.expand_as(frame), frame)
    return frame.float()


def sequence(length: int, height: int, width: int, seed: int, sub_frames: int = 5):
    """``(blurry, sharp)``: two ``(T, 3, H, W)`` tensors in [0, 1]."""
    sharp = torch.stack([render(float(t), height, width, seed) for t in range(length)])
    blurry = torch.stack([torch.stack([render(t + (k - sub_frames // 2) / sub_frames, height, width, seed)
                                       for k in range(sub_frames)]).mean(0) for t in range(length)])
    return blurry, sharp


def write_frames(folder: Path, frames: torch.Tensor, pattern: str = "{:06d}.png", first: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        write_image(folder / pattern.format(first + i), frame)


def make_dataset(root: Path, layout: str, names=("seqA", "seqB"), lengths=(7, 9), height=32, width=48,
                 split: str = "test") -> Path:
    """Write a paired test set in ``layout``: ``gopro`` (GOPRO_Large), ``dvd`` (quantitative_datasets),
    ``bsd`` (BSD), or ``kind_first`` (``<split>/{blur, GT}/<seq>``, BSSTNet's and DSTNet's copies)."""
    for i, (name, length) in enumerate(zip(names, lengths)):
        blurry, sharp = sequence(length, height, width, seed=100 + i)
        if layout == "gopro":
            write_frames(root / split / name / "blur_gamma", blurry, first=1)
            write_frames(root / split / name / "sharp", sharp, first=1)
        elif layout == "dvd":
            write_frames(root / name / "input", blurry, "{:05d}.jpg")
            write_frames(root / name / "GT", sharp, "{:05d}.jpg")
        elif layout == "bsd":
            write_frames(root / split / name / "Blur" / "RGB", blurry, "{:08d}.png")
            write_frames(root / split / name / "Sharp" / "RGB", sharp, "{:08d}.png")
        elif layout == "kind_first":
            write_frames(root / split / "blur" / name, blurry)
            write_frames(root / split / "GT" / name, sharp)
        else:
            raise ValueError(layout)
    return root
