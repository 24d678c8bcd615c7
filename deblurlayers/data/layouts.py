"""The folder layouts of GoPro, DVD and BSD as the papers' code reads them (``spec_evaluation.md``
§3), found automatically under a dataset root.

================  ========================================================================
dataset           layouts recognised (``<seq>``: one folder per video)
================  ========================================================================
``gopro``         ``<root>/<split>/<seq>/{blur_gamma|blur, sharp}/`` (GOPRO_Large as released;
                  ``blur_gamma`` first, as STDAN) or ``<root>/<split>/{blur, GT|gt}/<seq>/``
``dvd``           ``<root>/<split>/{blur, GT|gt}/<seq>/``, ``<root>/Test/{blur, gt}/<seq>/``
                  (ERDN) or ``<root>/<seq>/{input, GT}/`` (quantitative_datasets as released;
                  the split is the ten official test videos)
``bsd``           ``<root>/<split>/<seq>/{Blur, Sharp}/RGB/`` (as released) or
                  ``<root>/<split>/{blur, GT|gt}/<seq>/``
================  ========================================================================

Frames are paired by their position in natural order, as every official loader pairs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .io import PathLike, image_size, list_frames, natural_key

__all__ = ["VideoSequence", "find_sequences", "DATASETS", "DVD_TEST"]

DATASETS = ("gopro", "dvd", "bsd")
DVD_TEST = ("720p_240fps_2", "IMG_0003", "IMG_0021", "IMG_0030", "IMG_0031", "IMG_0032", "IMG_0033", "IMG_0037",
            "IMG_0039", "IMG_0049")


@dataclass(frozen=True)
class VideoSequence:
    """One video: its name, its blurry frames and (for a paired set) its sharp frames, in order."""

    name: str
    blurry: Tuple[Path, ...]
    sharp: Optional[Tuple[Path, ...]] = None

    def __len__(self) -> int:
        return len(self.blurry)

    def frame_size(self) -> Tuple[int, int]:
        """``(H, W)`` of the sequence, after checking from the files' headers (nothing decoded)
        that every blurry and sharp frame has it."""
        size = image_size(self.blurry[0])
        for path in self.blurry + (self.sharp or ()):
            if image_size(path) != size:
                raise ValueError(f"{path}: frame of size {image_size(path)} in sequence {self.name!r}, whose first "
                                 f"blurry frame is {size}; expected every frame the same size")
        return size


def find_sequences(root: PathLike, dataset: str, split: str = "test") -> List[VideoSequence]:
    """The paired sequences of ``dataset``'s ``split`` under ``root``, in natural order of names.

    Raises:
        ValueError: ``dataset`` unknown; no known layout under ``root`` (the message lists them);
            a sequence whose blurry and sharp folders hold different numbers of frames, or none.
        FileNotFoundError: ``root`` does not exist.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {dataset!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found (dataset={dataset!r})")
    for describe, finder in _LAYOUTS[dataset]:
        pairs = finder(root, split)
        if pairs:
            return [_paired(name, blur, sharp) for name, (blur, sharp) in sorted(pairs.items(),
                                                                                 key=lambda kv: natural_key(kv[0]))]
    expected = "\n".join(f"  {describe(root, split)}" for describe, _ in _LAYOUTS[dataset])
    raise ValueError(f"{root}: no {dataset} layout found for split {split!r}; expected one of:\n{expected}")


Pairs = Dict[str, Tuple[Path, Path]]


def _per_sequence(blur_names: Tuple[str, ...], sharp_names: Tuple[str, ...], sub: str = "") -> Callable:
    """``<root>/<split>/<seq>/<blur>/<sub>`` beside ``<seq>/<sharp>/<sub>``."""
    def find(root: Path, split: str) -> Pairs:
        base = root / split
        pairs = {}
        for seq in sorted(base.iterdir()) if base.is_dir() else ():
            blur = _first_dir(seq, blur_names, sub)
            sharp = _first_dir(seq, sharp_names, sub)
            if blur and sharp:
                pairs[seq.name] = (blur, sharp)
        return pairs
    return find


def _per_kind(split_names: Tuple[str, ...], blur_names: Tuple[str, ...], sharp_names: Tuple[str, ...]) -> Callable:
    """``<root>/<split>/<blur>/<seq>`` beside ``<root>/<split>/<sharp>/<seq>``."""
    def find(root: Path, split: str) -> Pairs:
        for split_name in split_names or ("{split}",):
            base = root / split_name.format(split=split, Split=split.capitalize())
            blur, sharp = _first_dir(base, blur_names), _first_dir(base, sharp_names)
            if blur and sharp:
                return {seq.name: (seq, sharp / seq.name) for seq in sorted(blur.iterdir()) if seq.is_dir()}
        return {}
    return find


def _dvd_release(root: Path, split: str) -> Pairs:
    """quantitative_datasets: ``<root>/<seq>/{input, GT}``; the split comes from the official list."""
    pairs = {}
    for seq in sorted(root.iterdir()):
        if (seq / "input").is_dir() and (seq / "GT").is_dir():
            if (seq.name in DVD_TEST) == (split == "test"):
                pairs[seq.name] = (seq / "input", seq / "GT")
    return pairs


def _first_dir(base: Path, names: Tuple[str, ...], sub: str = "") -> Optional[Path]:
    for name in names:
        if (base / name / sub).is_dir():
            return base / name / sub
    return None


def _paired(name: str, blur: Path, sharp: Path) -> VideoSequence:
    if not sharp.is_dir():
        raise ValueError(f"{sharp}: sequence {name!r} has blurry frames in {blur} but no sharp folder")
    blurry, sharp_frames = tuple(list_frames(blur)), tuple(list_frames(sharp))
    if not blurry:
        raise ValueError(f"{blur}: sequence {name!r} has no frames")
    if len(blurry) != len(sharp_frames):
        raise ValueError(f"sequence {name!r}: {len(blurry)} blurry frames in {blur} but {len(sharp_frames)} sharp "
                         f"frames in {sharp}; expected the same number")
    return VideoSequence(name, blurry, sharp_frames)


_BLUR, _GT = ("blur",), ("GT", "gt")
_LAYOUTS = {
    "gopro": [
        (lambda r, s: f"{r}/{s}/<seq>/{{blur_gamma|blur, sharp}}/  (GOPRO_Large)",
         _per_sequence(("blur_gamma", "blur"), ("sharp",))),
        (lambda r, s: f"{r}/{s}/{{blur, GT|gt}}/<seq>/", _per_kind((), _BLUR, _GT)),
    ],
    "dvd": [
        (lambda r, s: f"{r}/{s}/{{blur, GT|gt}}/<seq>/  (or {r}/{s.capitalize()}/{{blur, gt}}/<seq>/, ERDN)",
         _per_kind(("{split}", "{Split}"), _BLUR, _GT)),
        (lambda r, s: f"{r}/<seq>/{{input, GT}}/  (quantitative_datasets; {s} = the official list)", _dvd_release),
    ],
    "bsd": [
        (lambda r, s: f"{r}/{s}/<seq>/{{Blur, Sharp}}/RGB/  (BSD as released)",
         _per_sequence(("Blur",), ("Sharp",), "RGB")),
        (lambda r, s: f"{r}/{s}/{{blur, GT|gt}}/<seq>/", _per_kind((), _BLUR, _GT)),
    ],
}
