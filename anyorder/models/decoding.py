"""Iterative unmasking: decode several hidden tokens in confidence order (LLaDA-style).

Every round predicts all still-hidden positions, keeps the most confident share of them
(``remaining / rounds_left``, so all are decoded after ``steps`` rounds) and re-masks the
rest (low-confidence remasking); later rounds condition on what earlier rounds revealed.
Predictions are constrained to the ids of each position's kind, so an object position
always decodes to an object.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from anyorder.data.layout import TokenKind
from anyorder.data.vocabulary import Vocabulary


def kind_constraints(vocab: Vocabulary) -> torch.Tensor:
    """bool ``[len(TokenKind), V]``: which ids a position of each kind may decode to."""
    allowed = torch.zeros(len(TokenKind), vocab.size, dtype=torch.bool)
    ids = {
        TokenKind.OBJECT: list(vocab.object_ids),
        TokenKind.COLOR: [*vocab.color_ids, vocab.color_none_id],
        TokenKind.STATE: [*vocab.state_ids, vocab.state_none_id],
        TokenKind.DIRECTION: list(vocab.direction_ids),
        TokenKind.ACTION: list(vocab.action_ids),
        TokenKind.MISSION: [*vocab.word_ids.values(), vocab.unk_id],
    }
    for kind, values in ids.items():
        allowed[kind, torch.as_tensor([int(v) for v in values])] = True
    allowed[TokenKind.PAD] = allowed[TokenKind.SPECIAL] = True
    return allowed


@torch.no_grad()
def iterative_unmask(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    query: torch.Tensor,
    kind: torch.Tensor,
    allowed: torch.Tensor,
    mask_id: int,
    steps: int = 4,
) -> torch.Tensor:
    """Ids with the ``query`` positions decoded in ``steps`` rounds; other positions untouched."""
    if steps < 1:
        raise ValueError(f"decoding needs at least one round, got {steps}")
    ids = input_ids.masked_fill(query, mask_id)
    remaining = query.clone()
    allowed = allowed.to(ids.device)
    for round_index in range(steps):
        if not remaining.any():
            break
        logits = logits_fn(ids).float()
        if logits.shape[-1] > allowed.shape[-1]:  # a pretrained model's embedding table may be padded
            allowed = torch.nn.functional.pad(allowed, (0, logits.shape[-1] - allowed.shape[-1]))
        logits = logits.masked_fill(~allowed[kind], float("-inf"))
        confidence, prediction = logits.softmax(dim=-1).max(dim=-1)
        confidence = confidence.masked_fill(~remaining, -1.0)
        share = torch.ceil(remaining.sum(dim=1) / (steps - round_index)).long()
        rank = confidence.argsort(dim=1, descending=True).argsort(dim=1)
        reveal = remaining & (rank < share[:, None])
        ids = torch.where(reveal, prediction, ids)
        remaining &= ~reveal
    return ids
