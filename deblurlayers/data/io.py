"""Frames in and out: images through Pillow (``pip install deblurlayers[io]``), videos through PyAV
(``deblurlayers[video]``). Frames are float32 ``(3, H, W)`` tensors in [0, 1], RGB.

Every file is written under a temporary name in its destination folder and renamed into place
(``os.replace`` is atomic on POSIX and Windows), so an interrupted run never leaves a truncated
frame behind, and a frame that exists is complete.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
from pathlib import Path
from typing import Iterator, List, Tuple, Union

import numpy as np
import torch

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "natural_key", "list_frames", "read_image", "write_image", "to_uint8", "image_size",
           "count_video_frames",
           "read_video", "VideoWriter", "is_video", "atomic_path", "require"]

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v")
_EXTRAS = {"PIL": ("Pillow", "io"), "av": ("PyAV", "video"), "tqdm": ("tqdm", "progress")}


def require(module: str):
    """Import an optional dependency, or raise an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package, extra = _EXTRAS[module.split(".")[0]]
        raise ImportError(f"this needs {package}, an optional dependency: pip install 'deblurlayers[{extra}]' "
                          f"(or pip install {package})") from error


def natural_key(name: str):
    """Sort key that orders ``frame2`` before ``frame10`` (digits compared as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_frames(folder: PathLike) -> List[Path]:
    """The image files of ``folder`` in natural order (hidden and temporary files left out)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of frames")
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def is_video(path: PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_image(path: PathLike) -> torch.Tensor:
    """An image file as float32 ``(3, H, W)`` in [0, 1] (grey and RGBA images converted to RGB)."""
    image_module = require("PIL.Image")
    try:
        with image_module.open(path) as image:
            if image.mode not in ("RGB", "L", "RGBA", "P", "LA") or getattr(image, "bits", 8) != 8:
                raise ValueError(f"{path}: expected an 8-bit image, got mode {image.mode}")
            array = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError) as error:  # Pillow's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: not a readable image ({error})") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def image_size(path: PathLike) -> Tuple[int, int]:
    """``(H, W)`` of an image file, from its header (nothing decoded)."""
    image_module = require("PIL.Image")
    try:
        with image_module.open(path) as image:
            return image.height, image.width
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` in [0, 1] -> ``H×W×3`` uint8 (clamped, rounded half to even)."""
    if not isinstance(frame, torch.Tensor) or frame.dim() != 3 or frame.shape[0] != 3:
        shape = tuple(frame.shape) if isinstance(frame, torch.Tensor) else type(frame).__name__
        raise ValueError(f"frame: expected a tensor (3, H, W), got {shape}")
    return frame.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that is renamed to ``path`` when the block
    succeeds and removed when it fails."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_image(path: PathLike, frame: torch.Tensor) -> None:
    """Write ``(3, H, W)`` in [0, 1] as an 8-bit image (format from the suffix), atomically."""
    image_module = require("PIL.Image")
    array = to_uint8(frame)
    with atomic_path(path) as temporary:
        image_module.fromarray(array).save(temporary)


def read_video(path: PathLike) -> Iterator[torch.Tensor]:
    """The frames of a video file, decoded one at a time, as float32 ``(3, H, W)`` in [0, 1]."""
    av = require("av")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise ValueError(f"{path}: not a readable video ({error})") from error
    with container:
        for frame in container.decode(video=0):
            yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float().div_(255)


def count_video_frames(path: PathLike) -> int:
    """Frames in a video (the stream's count, or decoded and counted when the header has none)."""
    av = require("av")
    with av.open(str(path)) as container:
        frames = container.streams.video[0].frames
    return frames if frames > 0 else sum(1 for _ in read_video(path))


class VideoWriter:
    """Write frames to a video file, atomically: the file appears when :meth:`close` succeeds.

    Lossless-ish by default (H.264 at CRF 0 where available, else the container's default codec).
    Use as a context manager; an exception inside the block leaves no file.
    """

    def __init__(self, path: PathLike, fps: float = 24.0, codec: str = "libx264", crf: int = 0):
        self._av = require("av")
        self.path, self.fps, self.codec, self.crf = Path(path), fps, codec, crf
        self._temporary = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}")
        self._container = self._av.open(str(self._temporary), mode="w")
        self._stream = None

    def write(self, frame: torch.Tensor) -> None:
        array = to_uint8(frame)
        if self._stream is None:
            from fractions import Fraction

            self._stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.height, self._stream.width = array.shape[:2]
            self._stream.pix_fmt = "yuv444p" if self.codec == "libx264" else "yuv420p"
            if self.codec == "libx264":
                self._stream.options = {"crf": str(self.crf)}
        packet_frame = self._av.VideoFrame.from_ndarray(array, format="rgb24")
        for packet in self._stream.encode(packet_frame):
            self._container.mux(packet)

    def close(self, failed: bool = False) -> None:
        if self._stream is not None and not failed:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        if failed:
            self._temporary.unlink(missing_ok=True)
        else:
            os.replace(self._temporary, self.path)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(failed=kind is not None)
