"""Draw which windows and frames BSST layers 0 and 1 select for a synthetic clip.

    python docs/figures/bsst_selection.py      # writes docs/figures/bsst_selection.png

Needs matplotlib (optional, not a dependency of deblurlayers).
"""
from __future__ import annotations

import os

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from deblurlayers.layers import BlurAwareSparseTransformer  # noqa: E402
from deblurlayers.layers.bsst import window_blur_levels  # noqa: E402

FRAMES, TOKENS, WINDOW = 8, 32, 8


def synthetic_blur() -> torch.Tensor:
    """Token blur (1, T, 1, 32, 32): a blurry blob drifting right across the clip, strongest in
    frames 2 and 5, plus a short blurry burst at the bottom in frame 3."""
    ys, xs = torch.meshgrid(torch.arange(TOKENS), torch.arange(TOKENS), indexing="ij")
    blur = torch.zeros(1, FRAMES, 1, TOKENS, TOKENS)
    for t in range(FRAMES):
        strength = 0.95 if t in (2, 5) else 0.45 if t in (1, 3, 6) else 0.25
        centre = (10.0, 4.0 + 3.0 * t)
        blob = torch.exp(-((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) / 60.0)
        blur[0, t, 0] = 0.05 + strength * blob
    blur[0, 3, 0, 24:, 8:16] = 0.8
    return blur


def main(path: str = os.path.join(os.path.dirname(__file__), "bsst_selection.png")) -> None:
    blur = synthetic_blur()
    layers = BlurAwareSparseTransformer(dim=32, depth=2, num_heads=2, hidden_dim=200).transformer
    levels = window_blur_levels(blur, WINDOW)[0]  # (T, 4, 4)
    grid = levels.shape[-1]
    fig, axes = plt.subplots(2, FRAMES, figsize=(2.0 * FRAMES, 4.9))
    for row, layer in enumerate(layers):
        selection = layer.select(blur)
        for t in range(FRAMES):
            ax = axes[row, t]
            ax.imshow(blur[0, t, 0], cmap="magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            candidate = t % 2 == layer.parity
            ax.set_title(f"t={t}" + ("" if candidate else " (other parity)"), fontsize=9,
                         color="black" if candidate else "grey")
            for n in range(grid * grid):
                i, j = divmod(n, grid)
                box = dict(xy=(j * WINDOW - 0.5, i * WINDOW - 0.5), width=WINDOW, height=WINDOW, fill=False)
                ax.add_patch(Rectangle(**box, edgecolor="white", linewidth=0.3, alpha=0.5))
                if not bool(selection.active[0, n]):
                    continue
                if t in selection.query_frames[0, n].tolist():
                    ax.add_patch(Rectangle(**box, edgecolor="#00e5ff", linewidth=2.2))
                if t in selection.kv_frames[0, n].tolist():
                    ax.add_patch(Rectangle(**box, edgecolor="#7CFC00", linewidth=2.2, linestyle="--"))
        axes[row, 0].set_ylabel(f"layer {row}\n(parity {layer.parity})", fontsize=10)
    fig.suptitle("BSST selection, T = 8, 4x4 windows, theta = 0.3, Kq = Kkv = 2: "
                 "cyan = query frames of an active window (blurriest), "
                 "green dashed = its key/value frames (sharpest)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(path)


if __name__ == "__main__":
    main()
