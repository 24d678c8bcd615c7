"""``python -m deblurlayers restore`` and ``python -m deblurlayers evaluate``.

Everything a command can refuse (model name, configuration, weights, input, layout, tiling) is
checked before the first frame is restored or the first file written.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..data.io import VIDEO_SUFFIXES, VideoWriter, is_video, list_frames, require, write_image
from ..data.layouts import DATASETS, find_sequences
from ..metrics import PROTOCOLS, get_protocol
from ..models import get_model, get_model_card, list_models, load_official
from .evaluate import evaluation_report, format_report, score_sequence, sequence_order, write_report
from .progress import Progress
from .restore import DTYPES, OFFICIAL, FrameSource, Restorer

__all__ = ["add_restore_parser", "add_evaluate_parser", "run_restore", "run_evaluate", "CommandError"]

CommandError = (ValueError, TypeError, FileNotFoundError, ImportError, KeyError, RuntimeError)

# --memory-format -> Restorer's channels_last
MEMORY_FORMATS = {"auto": None, "channels-last": True, "contiguous": False}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=f"registered model: {', '.join(list_models())}")
    parser.add_argument("--weights", help="a released checkpoint (read by load_official)")
    parser.add_argument("--param-key", default=None, help="the checkpoint's container key (default: found)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="builder argument, a Python literal (repeatable), e.g. --config num_feat=96")
    parser.add_argument("--tile", type=int, default=None,
                        help="tile size in pixels (default: the official test's, else whole frames; 0: whole frames)")
    parser.add_argument("--overlap", type=int, default=None, help="pixels shared by neighbouring tiles")
    parser.add_argument("--frames-per-clip", type=int, default=None,
                        help="clip models: frames per forward pass (default: the official test's; 0: the whole video)")
    parser.add_argument("--batch", type=int, default=None,
                        help="window models: windows per forward pass (default 1; ERDN 8, reusing its first stage)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="fp32, or bf16/fp16 autocast")
    parser.add_argument("--memory-format", default="auto", choices=MEMORY_FORMATS,
                        help="the network's layout (auto: channels-last on a CPU, where convolutions are faster)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights when no --weights is given")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_restore_parser(sub) -> None:
    parser = sub.add_parser("restore", help="restore a folder of frames or a video file")
    _common(parser)
    parser.add_argument("input", help="a folder of frames or a video file")
    parser.add_argument("output", help="a folder for PNG frames, or a video file (.mp4, .mkv: needs PyAV)")
    parser.add_argument("--resume", action="store_true", help="skip frames OUTPUT already holds")
    parser.add_argument("--fps", type=float, default=None, help="video output: frame rate (default: 24)")


def add_evaluate_parser(sub) -> None:
    parser = sub.add_parser("evaluate", help="score a model on a test set with its paper's protocol")
    _common(parser)
    parser.add_argument("root", help="the dataset's root folder")
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--split", default="test")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                        help="default: the model's paper's")
    parser.add_argument("--save", default=None, help="also write the restored frames under DIR/<sequence>/")
    parser.add_argument("--report", default=None,
                        help="JSON report path (default: <model>_<dataset>_<protocol>.json, in --save if given)")


def run_restore(args: argparse.Namespace) -> int:
    card = get_model_card(args.model)
    config = _parse_config(args.config)
    source = _open_input(args.input)
    output = Path(args.output)
    to_video = is_video(output)
    if to_video:
        require("av")
        if args.resume:
            raise ValueError("--resume: only for a folder of frames; a video is written whole")
    elif output.exists() and not output.is_dir():
        raise ValueError(f"output: {output} exists and is not a folder")
    restorer = _restorer(args, card, config)
    steps = restorer.plan(len(source))  # refuses a video too short for the model before any output
    out_paths = [output / f"{name}.png" for name in source.names]
    done = (lambda step: all(out_paths[f].exists() for f in step.outputs)) if args.resume else None
    skipped = sum(len(s.outputs) for s in steps if done and done(s))
    bar = Progress(len(source) - skipped, f"restore {card.name}", enabled=not args.quiet)
    start = time.perf_counter()
    count = 0
    try:
        if to_video:
            with VideoWriter(output, fps=args.fps or 24.0) as writer:
                for _, frame in restorer.run(source):
                    writer.write(frame)
                    count += 1
                    bar.update(1)
        else:
            output.mkdir(parents=True, exist_ok=True)
            for index, frame in restorer.run(source, skip=done):
                write_image(out_paths[index], frame)
                count += 1
                bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    print(f"restored {count} frames{f' ({skipped} already there)' if skipped else ''} to {output} in "
          f"{seconds:.1f} s ({count / max(seconds, 1e-9):.2f} frames/s)", file=sys.stderr)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    card = get_model_card(args.model)
    config = _parse_config(args.config)
    name = args.protocol or card.protocol
    if name is None:
        raise ValueError(f"--protocol: {card.name} has no official evaluation code; choose one of {sorted(PROTOCOLS)}")
    protocol = get_protocol(name)
    sequences = find_sequences(args.root, args.dataset, args.split)
    rank, world = _init_distributed(args)
    try:
        restorer = _restorer(args, card, config, dataset=args.dataset)
        for seq in sequences:  # every sequence is checked before any is restored
            restorer.plan(len(seq))
            seq.frame_size()
        mine = [score_sequence(restorer, seq, protocol, args.save, progress=not args.quiet)
                for seq in sequences[rank::world]]
        scores = _gather(mine, rank, world)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()
    if rank != 0:
        return 0
    settings = {"weights": args.weights, "config": config, "tile": restorer.tile, "overlap": restorer.overlap,
                "frames_per_clip": restorer.frames_per_clip if restorer.is_clip_model else None,
                "dtype": args.dtype, "device": str(restorer.device), "processes": world, "split": args.split,
                "root": str(args.root)}
    report = evaluation_report(card, args.dataset, protocol, sequence_order(sequences, scores), settings)
    path = Path(args.report) if args.report else Path(args.save or ".") / f"{card.name}_{args.dataset}_{name}.json"
    write_report(report, path)
    print(format_report(report))
    print(f"report: {path}")
    return 0


def _restorer(args, card, config, dataset: Optional[str] = None) -> Restorer:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {args.device!r} requested, but CUDA is not available")
    torch.manual_seed(args.seed)  # an untrained model is the same on every run (and every rank)
    model = get_model(card.name, **config)
    if args.weights:
        load_official(model, args.weights, param_key=args.param_key)
    else:
        print(f"warning: no --weights: {card.name} runs with random (untrained) weights; its output is not a "
              f"restoration", file=sys.stderr)
    tile = OFFICIAL if args.tile is None else (args.tile or None)
    overlap = OFFICIAL if args.overlap is None else args.overlap
    frames_per_clip = OFFICIAL if args.frames_per_clip is None else (args.frames_per_clip or None)
    return Restorer(model, card, tile=tile, overlap=overlap, frames_per_clip=frames_per_clip,
                    windows_per_pass=args.batch, device=device, dtype=args.dtype, dataset=dataset,
                    channels_last=MEMORY_FORMATS[args.memory_format])


def _open_input(path: str) -> FrameSource:
    path = Path(path)
    if path.is_dir():
        frames = list_frames(path)
        if not frames:
            raise ValueError(f"input: {path} holds no image files")
        return FrameSource.from_paths(frames)
    if path.is_file() and is_video(path):
        return FrameSource.from_video(path)
    if path.exists():
        raise ValueError(f"input: {path} is neither a folder of frames nor a video file ({', '.join(VIDEO_SUFFIXES)})")
    raise FileNotFoundError(f"input: {path} not found")


def _parse_config(items: List[str]) -> Dict[str, object]:
    config = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--config: expected KEY=VALUE, got {item!r}")
        try:
            config[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            config[key] = value
    return config


def _init_distributed(args):
    """``(rank, world size)``; under ``torchrun`` the process group is started (NCCL on GPUs, gloo
    on the CPU) and each process restores every ``world``-th sequence."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _gather(mine, rank: int, world: int):
    if world == 1:
        return mine
    import torch.distributed as dist

    gathered = [None] * world if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    return [s for part in gathered for s in part] if rank == 0 else []
