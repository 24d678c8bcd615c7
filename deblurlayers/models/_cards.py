"""Model cards: the facts of each registered model in one place (torchvision's ``Weights.meta`` and
timm's ``pretrained_cfg`` are the models; a frozen dataclass is enough here).

A card is attached where the model is registered (``register_model(name, card=...)``) and read
back with :func:`get_model_card`. The benchmark's model rows, the model test cases and the docs
table read from it, and one test checks every card against its model (parameter count, frame
contract, size multiple).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Tuple

__all__ = ["ModelCard", "Checkpoint", "Reported", "TestPipeline", "OUTPUTS"]

# What a forward returns per clip: the centre frame, every frame, or the reference (centre) frame of
# a model that takes any number of frames.
OUTPUTS = ("centre", "clip", "reference")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint the authors released: its file name, the dataset it was trained on, the
    container key ``load_official`` reads (``None``: a flat state dict), where the authors put it,
    and the configuration to build the model with when it is not the default one."""

    file: str
    dataset: str
    param_key: Optional[str]
    where: str
    config: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Reported:
    """A row of the paper's own results table: PSNR (dB) and SSIM under the paper's protocol."""

    dataset: str
    psnr: float
    ssim: float
    table: str


@dataclass(frozen=True)
class TestPipeline:
    """How the official test code runs the model over a whole video (``spec_evaluation.md`` §2).

    Window models (``clip_frames=None``) restore each frame from the 5 frames around it, the video
    extended at both ends by a copy of its first two and last two frames in order (ERDN's
    ``--border``; STDAN never restores those frames). Clip models run clips of ``clip_frames``
    starting every ``clip_stride`` frames, the last clip ending with the video; each frame is kept
    from the first clip that holds it at least ``margin`` frames from the clip's inner ends.

    Attributes:
        clip_frames: frames per forward of a clip model (``None``: a window model).
        clip_stride: frames between clip starts (``None``: ``clip_frames``, no overlap).
        margin: see above.
        clip_frames_per_dataset: ``{dataset: clip_frames}`` where the official test differs.
        tile, overlap: the official spatial tiling (``None``: whole frames).
        precision: ``"fp32"`` or ``"fp16"`` (autocast), as the official test runs.
    """

    clip_frames: Optional[int] = None
    clip_stride: Optional[int] = None
    margin: int = 0
    clip_frames_per_dataset: Mapping[str, int] = field(default_factory=dict)
    tile: Optional[int] = None
    overlap: int = 0
    precision: str = "fp32"

    def frames_per_clip(self, dataset: Optional[str] = None) -> Optional[int]:
        return self.clip_frames_per_dataset.get(dataset, self.clip_frames)


@dataclass(frozen=True)
class ModelCard:
    """What a registered model is, takes, returns and reports.

    Attributes:
        name: the registered name.
        paper: title, venue and year.
        code: the official repository (``None``: no code released).
        frames_in: the frames a clip must have (``None``: any number from ``min_frames``).
        min_frames: the fewest frames a clip may have.
        output: ``"centre"``, ``"clip"`` or ``"reference"`` (see ``OUTPUTS``).
        output_type: what the forward returns, and with which flags a named type.
        size_multiple: frames are padded (reflect) to multiples of it and cropped back; any
            ``H×W`` is accepted.
        parameters: trainable parameters of the default configuration here.
        official_parameters: the official model's count (``None``: no official code), which may
            include frozen filters or modules its forward never calls (see the model's page).
        loss: the model's training loss, as its official code computes it.
        compute: the paper's own cost figures, as it states them.
        reported: the paper's results tables, per dataset.
        checkpoints: the released checkpoints (``docs/models/README.md``: where they are).
        manifest: the official key manifest a released checkpoint follows (``tests/data``).
        flops_frames: the clip length the paper counts its FLOPs at, where it differs.
        takes_flows: the forward accepts precomputed flows (its flow estimator is optional).
        protocol: the paper's evaluation protocol (:data:`deblurlayers.metrics.PROTOCOLS`;
            ``None``: no official evaluation code).
        test_pipeline: how the official test runs the model over a video.
    """

    name: str
    paper: str
    code: Optional[str]
    frames_in: Optional[int]
    min_frames: int
    output: str
    output_type: str
    size_multiple: int
    parameters: int
    official_parameters: Optional[int]
    loss: Optional[Callable]
    compute: str
    reported: Tuple[Reported, ...] = ()
    checkpoints: Tuple[Checkpoint, ...] = ()
    manifest: Optional[str] = None
    flops_frames: Optional[int] = None
    takes_flows: bool = False
    protocol: Optional[str] = None
    test_pipeline: TestPipeline = field(default_factory=TestPipeline)

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"output: expected one of {OUTPUTS}, got {self.output!r}")
        if self.frames_in is not None and self.frames_in != self.min_frames:
            raise ValueError(f"min_frames: a model of fixed frames_in={self.frames_in} has min_frames = frames_in, "
                             f"got {self.min_frames}")

    @property
    def frames_out(self) -> str:
        """``"T"`` for a clip model, else ``"1"``."""
        return "T" if self.output == "clip" else "1"
