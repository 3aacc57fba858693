"""Figures people would rather look at than read: observations, predictions, rollouts, curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from minigrid.core.grid import Grid
from PIL import Image

from anyorder.data.layout import VIEW_SIZE

AGENT_VIEW_POS = (VIEW_SIZE // 2, VIEW_SIZE - 1)
UP = 3


def render_observation(image: np.ndarray, tile_size: int = 24) -> np.ndarray:
    """RGB of an egocentric 7x7 observation with minigrid's own renderer (agent at the bottom, facing up)."""
    grid, visible = Grid.decode(np.asarray(image, dtype=np.uint8))
    return grid.render(tile_size, agent_pos=AGENT_VIEW_POS, agent_dir=UP, highlight_mask=~visible)


def mark_cells(image: np.ndarray, wrong: np.ndarray, tile_size: int = 24, width: int = 3) -> np.ndarray:
    """``image`` (a :func:`render_observation`) with a red frame on each cell where ``wrong``
    (bool ``[7, 7]``, indexed like minigrid's image: ``[x, y]``) is set."""
    marked = image.copy()
    for x, y in zip(*np.nonzero(wrong), strict=True):
        top, left = y * tile_size, x * tile_size
        tile = marked[top : top + tile_size, left : left + tile_size]
        tile[:width], tile[-width:], tile[:, :width], tile[:, -width:] = RED, RED, RED, RED
    return marked


RED = np.array([230, 30, 30], dtype=np.uint8)


def side_by_side(*images: np.ndarray, gap: int = 8) -> np.ndarray:
    height = max(image.shape[0] for image in images)
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts = []
    for image in images:
        padded = np.full((height, image.shape[1], 3), 255, dtype=np.uint8)
        padded[: image.shape[0]] = image
        parts.extend([padded, spacer])
    return np.concatenate(parts[:-1], axis=1)


def save_png(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_gif(frames: list[np.ndarray], path: Path, milliseconds_per_frame: int = 250) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=milliseconds_per_frame, loop=0)
    return path


def robustness_figure(fractions: list[float], success: list[float], accuracy: list[float], windows: str) -> plt.Figure:
    """Success and action accuracy against the share of visible cells hidden; ``windows``: the split
    whose windows the action accuracy was measured on."""
    figure, axis = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    axis.plot(fractions, success, "o-", label="success rate (closed loop)")
    axis.plot(fractions, accuracy, "s--", label=f"action accuracy ({windows} windows)")
    axis.set_xlabel("fraction of visible cells hidden")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
