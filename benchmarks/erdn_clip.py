"""ERDN on a whole clip: one model call per 5-frame window (the official inference) vs
``ERDN.restore_clip``, which computes every stage-1 window once.

    python benchmarks/erdn_clip.py [--threads 2] [--frames 6] [--size 256] [--repeats 2]

Both restore every frame of a (1, T, 3, size, size) clip with the official border extension (the
first and last two frames copied). Reported per restored frame: stage passes (counted with forward
hooks), GMACs (meta device, also for a 30-frame 720p clip) and CPU time (best of --repeats,
native kernels, fp32, ``torch.inference_mode``). The two outputs are compared as well.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from deblurlayers.flops import count_flops
from deblurlayers.models import ERDN


class PerWindow(nn.Module):
    """The official inference: the model on every window of the border-extended clip."""

    def __init__(self, model: ERDN) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        indices = list(range(clip.shape[1]))
        indices = indices[:2] + indices + indices[-2:]
        return torch.stack([self.model(clip[:, indices[i:i + 5]]) for i in range(len(indices) - 4)], dim=1)


class Reuse(nn.Module):
    def __init__(self, model: ERDN) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model.restore_clip(clip)


def count_stage_passes(model: ERDN, runner: nn.Module, clip: torch.Tensor) -> int:
    passes = [0]
    hooks = [stage.register_forward_hook(lambda m, args, out: passes.__setitem__(0, passes[0] + args[0].shape[0]))
             for stage in model.stages]
    with torch.inference_mode():
        runner(clip[..., :16, :16])
    for hook in hooks:
        hook.remove()
    return passes[0]


def best_time(runner: nn.Module, clip: torch.Tensor, repeats: int):
    best, out = float("inf"), None
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            out = runner(clip)
            best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ERDN().eval()
    clip = torch.rand(1, args.frames, 3, args.size, args.size)
    with torch.inference_mode():
        model.restore_clip(clip[:, :2, :, :32, :32])  # builds/loads the native ops
    t = args.frames
    print(f"ERDN (two stages), clip 1x{t}x3x{args.size}x{args.size}, {args.threads} threads, fp32, native ops")
    print("| inference | stage passes / frame | GMACs / frame (this clip) | GMACs / frame (30 x 720p) | "
          "CPU s / frame |")
    print("|---|---:|---:|---:|---:|")
    outputs = {}
    for name, runner in (("per window (official)", PerWindow(model)), ("restore_clip (stage-1 reuse)", Reuse(model))):
        passes = count_stage_passes(model, runner, clip) / t
        gmacs = count_flops(runner, clip).gmacs / t
        gmacs_720p = count_flops(runner, torch.zeros(1, 30, 3, 720, 1280)).gmacs / 30
        seconds, outputs[name] = best_time(runner, clip, args.repeats)
        print(f"| {name} | {passes:.2f} | {gmacs:,.0f} | {gmacs_720p:,.0f} | {seconds / t:.2f} |")
    first, second = outputs.values()
    print(f"max |difference| of the two outputs: {(first - second).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
