"""Deterministic masks that each pose one inference question about the last step of a window.

Training masks at random; evaluation asks specific questions of the same model: *policy*
(the last action hidden), *world model* (the last observation and what follows it hidden),
*inverse model* (the action between the last two observations hidden).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from anyorder.data.layout import TokenKind


def of_kinds(kind: torch.Tensor, kinds: Iterable[TokenKind]) -> torch.Tensor:
    """bool, like ``kind``: positions whose kind is one of ``kinds``. Compared on ``kind``'s own
    device: a lookup tensor built from a list would be a host-to-device copy, which stalls a
    GPU at every training step."""
    selected = torch.zeros_like(kind, dtype=torch.bool)
    for k in kinds:
        selected |= kind == k
    return selected


def last_step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """bool [B, L]: positions of each window's final (always real) step."""
    step = batch["step"]
    return step == step.max(dim=1, keepdim=True).values


def policy_query(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hide the final action: predict what the expert did given history and current view."""
    return last_step(batch) & (batch["kind"] == TokenKind.ACTION)


def world_model_query(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hide the final step entirely: predict the observation from everything before it."""
    return last_step(batch) & (batch["kind"] != TokenKind.PAD)


def inverse_target(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The action of the second-to-last step (windows with at least two real steps)."""
    step = batch["step"]
    target = step.max(dim=1, keepdim=True).values - 1
    return (step == target) & (target >= 0) & (batch["kind"] == TokenKind.ACTION)


def has_previous_step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """bool ``[B]``: windows whose last step follows a real step."""
    return inverse_target(batch).any(dim=1)


def inverse_query(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which action led from the previous observation to the last one: a_{T-1} hidden, and a_T
    too, so that the answer is inferred from the observations, not from the next action."""
    return inverse_target(batch) | (policy_query(batch) & has_previous_step(batch)[:, None])


OBSERVATION_KINDS = (TokenKind.OBJECT, TokenKind.COLOR, TokenKind.STATE, TokenKind.DIRECTION)
