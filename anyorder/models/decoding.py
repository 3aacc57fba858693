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


def cell_scores(
    log_probs: torch.Tensor, ids: torch.Tensor, hidden: torch.Tensor, kind: torch.Tensor, triples: torch.Tensor
) -> torch.Tensor:
    """``[B, L, T]``: each cell attribute's log-probability of triple ``t``'s value at that attribute
    (0 / -inf for a visible attribute that matches / contradicts it); 0 at other positions."""
    attribute = (kind - TokenKind.OBJECT).clamp(0, 2)
    is_cell = (kind >= TokenKind.OBJECT) & (kind <= TokenKind.STATE)
    values = triples.T.to(ids.device)[attribute]  # [B, L, T]: the id each triple puts here
    scores = log_probs.gather(2, values)
    visible = torch.where(ids[..., None] == values, 0.0, float("-inf"))
    scores = torch.where(hidden[..., None], scores, visible)
    return scores.masked_fill(~is_cell[..., None], 0.0)


@torch.no_grad()
def iterative_unmask(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    query: torch.Tensor,
    kind: torch.Tensor,
    allowed: torch.Tensor,
    mask_id: int,
    steps: int = 4,
    cell_unit: torch.Tensor | None = None,
    triples: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ids with the ``query`` positions decoded in ``steps`` rounds; other positions untouched.

    Each round reveals the most confident share of what is left. With ``triples`` (long
    ``[T, 3]``: the (object, colour, state) ids that occur in the data) and ``cell_unit``
    (``[B, L]``: a cell id per attribute position, -1 elsewhere), a cell's attributes are
    decoded jointly: the cell takes the possible triple of highest joint probability given
    its visible attributes, so a prediction is never an impossible cell (a wall with a
    colour of "none", a door without a state).
    """
    if steps < 1:
        raise ValueError(f"decoding needs at least one round, got {steps}")
    ids = input_ids.masked_fill(query, mask_id)
    remaining = query.clone()
    allowed = allowed.to(ids.device)
    joint = triples is not None and cell_unit is not None
    for round_index in range(steps):
        if not remaining.any():
            break
        logits = logits_fn(ids).float()
        if logits.shape[-1] > allowed.shape[-1]:  # a pretrained model's embedding table may be padded
            allowed = torch.nn.functional.pad(allowed, (0, logits.shape[-1] - allowed.shape[-1]))
        log_probs = logits.masked_fill(~allowed[kind], float("-inf")).log_softmax(dim=-1)
        confidence, prediction = log_probs.max(dim=-1)
        if joint:
            units = cell_unit.clamp(min=0)
            per_cell = torch.zeros(*units.shape[:1], units.shape[1], triples.shape[0], device=ids.device)
            per_cell.scatter_add_(1, units[..., None].expand(-1, -1, triples.shape[0]), cell_scores(
                log_probs, ids, remaining, kind, triples
            ))  # fmt: skip
            best_score, best = per_cell.max(dim=-1)  # [B, L] indexed by unit
            in_cell = cell_unit >= 0
            attribute = (kind - TokenKind.OBJECT).clamp(0, 2)
            cell_value = triples.to(ids.device)[best.gather(1, units), attribute]
            prediction = torch.where(in_cell, cell_value, prediction)
            confidence = torch.where(in_cell, best_score.gather(1, units), confidence)
        confidence = confidence.masked_fill(~remaining, float("-inf"))
        share = torch.ceil(remaining.sum(dim=1) / (steps - round_index)).long()
        rank = confidence.argsort(dim=1, descending=True).argsort(dim=1)
        reveal = remaining & (rank < share[:, None])
        ids = torch.where(reveal, prediction, ids)
        remaining &= ~reveal
    return ids
