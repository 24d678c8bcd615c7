"""Restore throughput of every model through the ``restore`` pipeline, and its memory over long videos.

    python benchmarks/restore_speed.py [--models dstnet stdanet ...] [--sizes 256 720] [--frames 6]
                                       [--threads 2] [--memory-frames 25 50 100] [--skip-memory]

Throughput: :class:`deblurlayers.pipeline.Restorer` with each model's official test pipeline
(BSSTNet: 256² tiles, 64 px overlap), full-size default configuration, random weights (speed does
not depend on them), fp32, on a synthetic video of ``--frames`` frames (``--frames + 4`` for window
models' border frames are not extra work: the ends are copies) at 256² and 720p (1280×720).
Frames/s counts restored frames over wall time, frame reading included (frames are generated in
memory: no disk). At 720p, clip models run clips of ``--frames`` frames, not the official 30/48
(memory and time on 2 cores), which the table says.

Memory: the peak extra resident memory (``VmHWM``, fresh process per row) of restoring videos of
each of ``--memory-frames`` lengths at 128², frames generated on the fly: flat in the length when
the pipeline streams.
"""
from __future__ import annotations

import argparse
import time

import torch

from _memory import peak_extra_mb
from deblurlayers.models import get_model, get_model_card, list_models
from deblurlayers.pipeline import FrameSource, Restorer

SIZES = {256: (256, 256), 720: (720, 1280)}


def synthetic_source(length: int, height: int, width: int) -> FrameSource:
    """A video whose frames are made when read (so the source itself holds nothing)."""
    def read(i):
        return torch.rand(3, height, width, generator=torch.Generator().manual_seed(i))
    return FrameSource(length, [str(i) for i in range(length)], read, False, str)


def throughput(name: str, size: int, frames: int):
    card = get_model_card(name)
    torch.manual_seed(0)
    model = get_model(name)
    height, width = SIZES[size]
    official = card.test_pipeline.frames_per_clip()
    clip = None if card.output != "clip" else (official if size == 256 and official <= frames else frames)
    kwargs = {} if card.output != "clip" else {"frames_per_clip": min(clip, frames)}
    restorer = Restorer(model, card, **kwargs)
    source = synthetic_source(frames, height, width)
    start = time.perf_counter()
    count = sum(1 for _ in restorer.run(source))
    seconds = time.perf_counter() - start
    return count / seconds, seconds, kwargs.get("frames_per_clip"), restorer.tile


MEMORY_SETUP = """
import torch
from deblurlayers.models import get_model, get_model_card
from deblurlayers.pipeline import FrameSource, Restorer
torch.manual_seed(0)
name = {name!r}
card = get_model_card(name)
restorer = Restorer(get_model(name), card, **({kwargs!r}))
def source(n):
    read = lambda i: torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(i))
    return FrameSource(n, [str(i) for i in range(n)], read, False, str)
for _ in restorer.run(source(12)):  # warm up: native ops loaded, allocator primed
    pass
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list_models())
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 720], choices=sorted(SIZES))
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-frames", nargs="+", type=int, default=[25, 50, 100])
    parser.add_argument("--memory-models", nargs="+", default=["dstnet", "stdanet", "erdn"])
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"## Restore throughput, {args.threads} threads, fp32, {args.frames}-frame videos\n")
    print("| model | size | frames/clip | tile | frames/s | s/frame |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        for name in args.models:
            fps, seconds, clip, tile = throughput(name, size, args.frames)
            print(f"| {name} | {SIZES[size][1]}×{SIZES[size][0]} | {clip or 'window 5'} | {tile or 'whole'} | "
                  f"{fps:.3f} | {seconds / args.frames:.2f} |", flush=True)

    if args.skip_memory:
        return
    print("\n## Peak extra memory restoring a video at 128×128 (MB), by video length\n")
    print("| model | " + " | ".join(f"{n} frames" for n in args.memory_frames) + " |")
    print("|---|" + "---|" * len(args.memory_frames))
    for name in args.memory_models:
        kwargs = {"frames_per_clip": 10} if get_model_card(name).output == "clip" else {}
        setup = MEMORY_SETUP.format(name=name, kwargs=kwargs) + f"\ntorch.set_num_threads({args.threads})\n"
        peaks = [peak_extra_mb(setup, f"for _ in restorer.run(source({n})):\n    pass\n") for n in args.memory_frames]
        print(f"| {name}{' (10-frame clips)' if kwargs else ''} | " + " | ".join(f"{p:.0f}" for p in peaks) + " |",
              flush=True)


if __name__ == "__main__":
    main()
