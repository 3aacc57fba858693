"""Left-to-right attention and targets over padded rows, for the autoregressive baseline.

The suite's windows are padded on the left and inside the mission field, so "the previous
token" of a position is the previous *real* one, and the model predicts token i from the
output at that position (the usual one-position shift, skipping padding).
"""

from __future__ import annotations

import torch


def causal_blocked(keep: torch.Tensor) -> torch.Tensor:
    """bool ``[B, L, L]``, True where query i may *not* attend to key j: keys after i, and
    padded keys other than i itself (a padded position attends to itself, so that no row of
    the attention is empty and no NaN reaches the real positions through it)."""
    length = keep.shape[1]
    later = torch.ones(length, length, dtype=torch.bool, device=keep.device).triu(1)
    itself = torch.eye(length, dtype=torch.bool, device=keep.device)
    return later[None] | (~keep[:, None, :] & ~itself[None])


def previous_real(keep: torch.Tensor) -> torch.Tensor:
    """long ``[B, L]``: the index of the last real position before each position (-1: none)."""
    positions = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
    real_at = torch.where(keep, positions, torch.full_like(positions, -1))
    last_real_up_to = real_at.cummax(dim=1).values
    return torch.cat([torch.full_like(last_real_up_to[:, :1], -1), last_real_up_to[:, :-1]], dim=1)


def shift_to_targets(logits: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits moved onto the token they predict: ``out[b, i]`` = ``logits[b, j]`` with j
    the previous real position of i; and bool ``[B, L]``, where there is one (real positions only)."""
    source = previous_real(keep)
    predicted = keep & (source >= 0)
    gathered = logits.gather(1, source.clamp(min=0)[..., None].expand_as(logits))
    return gathered, predicted
