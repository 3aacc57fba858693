"""A picture of what a strategy hides, for TensorBoard.

Each sample becomes a grid with one row for the mission and one per step, one column per
token of a step (49 cells x 3 attributes, direction, action): black = padding, grey =
visible, white = hidden. Cell masking shows as white triples, step masking as white rows,
action masking as a white last column.
"""

from __future__ import annotations

import torch

from anyorder.data.layout import STEP_LENGTH, TokenKind

PAD, VISIBLE, HIDDEN = 0.0, 0.35, 1.0


def mask_grid(batch: dict[str, torch.Tensor], samples: int = 4, scale: int = 4) -> torch.Tensor:
    """``[1, H, W]`` float image in [0, 1] of the first ``samples`` masks of ``batch``."""
    kind, step, mask = batch["kind"], batch["step"], batch["mask"]
    window = int(step.max().item()) + 1
    rows = []
    for b in range(min(samples, kind.shape[0])):
        grid = torch.full((window + 1, STEP_LENGTH), PAD)
        value = torch.where(mask[b], HIDDEN, VISIBLE).where(kind[b] != TokenKind.PAD, PAD).cpu()
        mission = (kind[b] == TokenKind.MISSION).cpu()
        grid[0, : int(mission.sum())] = value[mission]
        for s in range(window):
            here = (step[b] == s).cpu()
            if here.any():
                grid[s + 1] = value[here]
        rows.extend([grid, torch.full((1, STEP_LENGTH), PAD)])
    image = torch.cat(rows[:-1]) if rows else torch.zeros(1, STEP_LENGTH)
    return image.repeat_interleave(scale, 0).repeat_interleave(scale, 1)[None]
