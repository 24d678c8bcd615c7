"""Score a model on a paired test set under a paper's protocol, optionally across processes.

Each sequence is restored with :class:`~deblurlayers.pipeline.Restorer` and scored frame by frame
(:meth:`~deblurlayers.metrics.Protocol.score`), so memory stays flat; the per-frame scores are
combined once, by :meth:`~deblurlayers.metrics.Protocol.summarize`, which is why the result of
sequences sharded over ``torchrun`` processes equals the single-process one exactly.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..data.io import atomic_path, read_image, write_image
from ..data.layouts import VideoSequence
from ..metrics import FrameScores, Protocol
from ..models import ModelCard
from .progress import Progress
from .restore import FrameSource, Restorer

__all__ = ["score_sequence", "evaluation_report", "format_report", "write_report", "reported_for"]


def score_sequence(restorer: Restorer, sequence: VideoSequence, protocol: Protocol,
                   save_dir: Optional[Path] = None, progress: bool = True) -> FrameScores:
    """Restore ``sequence`` and score its frames under ``protocol``; with ``save_dir``, also
    write the restored frames to ``save_dir/<sequence>/<frame>.png``."""
    source = FrameSource.from_paths(sequence.blurry)
    groups = protocol.groups(len(sequence))
    out_dir = None
    if save_dir is not None:
        out_dir = Path(save_dir) / sequence.name
        out_dir.mkdir(parents=True, exist_ok=True)
    bar = Progress(len(sequence), sequence.name, enabled=progress)
    frames, psnrs, ssims, owners = [], [], [], []
    try:
        for index, restored in restorer.run(source, on_step=lambda step: bar.update(len(step.outputs))):
            if out_dir is not None:
                write_image(out_dir / f"{source.names[index]}.png", restored)
            if index in groups:
                sharp = read_image(sequence.sharp[index])
                if sharp.shape != restored.shape:
                    raise ValueError(f"{sequence.sharp[index]}: sharp frame {tuple(sharp.shape[-2:])} differs in size "
                                     f"from its blurry frame {tuple(restored.shape[-2:])}")
                p, s = protocol.score(restored, sharp)
                frames.append(index), psnrs.append(p), ssims.append(s), owners.append(groups[index])
    finally:
        bar.close()
    return FrameScores(sequence.name, tuple(frames), tuple(psnrs), tuple(ssims), tuple(owners))


def reported_for(card: ModelCard, dataset: str) -> list:
    """The paper's own rows for ``dataset`` (``"gopro"``, ``"dvd"``, ``"bsd"``) on the card."""
    return [r for r in card.reported if r.dataset.lower().replace("-", "").startswith(dataset)]


def evaluation_report(card: ModelCard, dataset: str, protocol: Protocol, scores: Sequence[FrameScores],
                      settings: Dict[str, object]) -> Dict[str, object]:
    """The JSON-ready report: per sequence and overall PSNR/SSIM, the paper's figures, settings."""
    psnr, ssim = protocol.summarize(scores)
    return {
        "model": card.name,
        "dataset": dataset,
        "protocol": asdict(protocol),
        "settings": settings,
        "sequences": [{"name": s.name, "scored_frames": len(s.frames), "psnr": s.mean_psnr, "ssim": s.mean_ssim,
                       "frames": {"index": list(s.frames), "psnr": list(s.psnr), "ssim": list(s.ssim),
                                  "group": list(s.groups)}}
                      for s in scores],
        "overall": {"psnr": psnr, "ssim": ssim, "scored_frames": sum(len(s.frames) for s in scores)},
        "paper": [{"dataset": r.dataset, "psnr": r.psnr, "ssim": r.ssim, "table": r.table}
                  for r in reported_for(card, dataset)],
    }


def format_report(report: Dict[str, object]) -> str:
    """The report as a table: one row per sequence, the overall row, the paper's row(s)."""
    protocol = report["protocol"]
    width = max([len(s["name"]) for s in report["sequences"]] + [len("overall")])
    lines = [f"{report['model']} on {report['dataset']}, protocol {protocol['name']!r} "
             f"({'mean of per-clip means' if protocol['average'] == 'clips' else 'mean over scored frames'})",
             f"{'sequence':<{width}}  {'scored':>6}  {'PSNR':>8}  {'SSIM':>7}"]
    for s in report["sequences"]:
        lines.append(f"{s['name']:<{width}}  {s['scored_frames']:>6}  {s['psnr']:>8.3f}  {s['ssim']:>7.4f}")
    overall = report["overall"]
    lines.append(f"{'overall':<{width}}  {overall['scored_frames']:>6}  {overall['psnr']:>8.3f}  {overall['ssim']:>7.4f}")
    for row in report["paper"]:
        lines.append(f"paper ({row['dataset']}, {row['table']}): PSNR {row['psnr']:.2f}  SSIM {row['ssim']:.4f}")
    if not report["paper"]:
        lines.append(f"paper: no figure for {report['model']} on {report['dataset']}")
    return "\n".join(lines)


def write_report(report: Dict[str, object], path: os.PathLike) -> None:
    """Write the report as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")


def sequence_order(sequences: List[VideoSequence], scores: List[FrameScores]) -> List[FrameScores]:
    order = {s.name: i for i, s in enumerate(sequences)}
    return sorted(scores, key=lambda s: order[s.name])
