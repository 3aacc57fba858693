"""A picture of what a strategy hides, for TensorBoard.

One panel per sample, one row for the mission and one per step, one column per token of a
step (49 cells x 3 attributes, direction, action). Each token kind has a colour: strong where
the token is hidden, pale where it is visible; padding (no token there) is dark grey, a shade
no kind uses. Cell masking shows as strong triples, step masking as strong rows, the
next-action question as one strong last column.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from anyorder.data.layout import STEP_LENGTH, TokenKind

KIND_COLOURS = {  # RGB of a hidden token of each kind
    TokenKind.MISSION: (0.55, 0.25, 0.75),
    TokenKind.OBJECT: (0.85, 0.15, 0.15),
    TokenKind.COLOR: (0.95, 0.6, 0.1),
    TokenKind.STATE: (0.2, 0.6, 0.2),
    TokenKind.DIRECTION: (0.1, 0.45, 0.85),
    TokenKind.ACTION: (0.0, 0.65, 0.65),
}
PADDING = (0.3, 0.3, 0.3)
PALE = 0.8  # a visible token: its kind's colour mixed this far toward white


def mask_rgb(batch: dict[str, torch.Tensor], samples: int = 4) -> np.ndarray:
    """``[samples, 1 + window, STEP_LENGTH, 3]`` float RGB: mission row, then one row per step."""
    kind, step, mask = (batch[key].cpu() for key in ("kind", "step", "mask"))
    window = int(step.max().item()) + 1
    count = min(samples, kind.shape[0])
    image = np.empty((count, window + 1, STEP_LENGTH, 3))
    image[:] = PADDING
    for b in range(count):
        colours = np.zeros((kind.shape[1], 3))
        for token_kind, rgb in KIND_COLOURS.items():
            here = (kind[b] == token_kind).numpy()
            hidden = mask[b].numpy()
            colours[here & hidden] = rgb
            colours[here & ~hidden] = PALE + (1 - PALE) * np.asarray(rgb)
        mission = (kind[b] == TokenKind.MISSION).numpy()
        image[b, 0, : int(mission.sum())] = colours[mission]
        for s in range(window):
            here = (step[b] == s).numpy()
            if here.any():
                image[b, s + 1] = colours[here]
    return image


def mask_figure(batch: dict[str, torch.Tensor], samples: int = 4) -> Figure:
    """The masks of the first ``samples`` windows, one panel each, with a legend of the kinds."""
    image = mask_rgb(batch, samples)
    figure = Figure(figsize=(12, 0.55 * image.shape[1] * len(image) + 1.2))
    axes = figure.subplots(len(image), 1, squeeze=False)[:, 0]
    for index, (axis, panel) in enumerate(zip(axes, image, strict=True)):
        axis.imshow(panel, aspect="auto", interpolation="nearest")
        axis.set_yticks(range(panel.shape[0]), ["mission", *(f"step {s}" for s in range(panel.shape[0] - 1))])
        axis.set_xticks([73, 148], ["49 cells x (object, colour, state)", "direction, action"], fontsize=7)
        axis.get_xticklabels()[-1].set_horizontalalignment("right")  # the last columns' label ends at the edge
        axis.set_title(f"sample {index}", fontsize=8, loc="left")
    handles = [Patch(color=rgb, label=f"{kind.name.lower()} hidden") for kind, rgb in KIND_COLOURS.items()]
    handles += [Patch(color=(0.9, 0.9, 0.9), label="pale: visible"), Patch(color=PADDING, label="padding")]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure
