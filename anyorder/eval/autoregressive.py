"""The evaluator's queries answered by a left-to-right model (:mod:`anyorder.models.autoregressive`).

Same windows, same metrics, same baselines as :class:`~anyorder.eval.tasks.TaskEvaluator`;
what changes is how each question is put to a model that reads left to right:

* policy: the action after the prefix (the last token: nothing follows it);
* world model: the next observation's NLL by the chain rule (teacher forcing; exact for this
  model, reported as ``joint_nll_per_token`` on the windows where the any-order model's is
  measured, and on every window — a one-shot NLL does not exist), and its cells
  decoded greedily, left to right (:func:`greedy_decode_cached`, or :func:`greedy_decode`
  for a backbone without a key/value cache);
* inverse: by Bayes over the actions, ``argmax_a log p(a | past) + log p(next view | past, a)``,
  one teacher-forced pass per candidate;
* mission and in-painting of interior cells: not answerable left to right (what they ask
  about lies before what they are given), so not scored; the results say so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from anyorder.data.tokenizer import TokenBatch
from anyorder.eval.tasks import TaskEvaluator
from anyorder.masking.queries import OBSERVATION_KINDS, inverse_target, last_step, of_kinds
from anyorder.models.causal import previous_real
from anyorder.models.objective import token_nll

# the tasks a left-to-right model cannot be asked (the tables print "not answerable" for them)
NOT_ANSWERABLE = ("mission", "inpainting")


@torch.no_grad()
def greedy_decode(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    query: torch.Tensor,
    kind: torch.Tensor,
    allowed: torch.Tensor,
) -> torch.Tensor:
    """Ids with the ``query`` positions decoded greedily left to right (each the most likely
    token of its kind given the decoded ones before it), by Jacobi iteration: predict every
    query position at once from the current ids, repeat until nothing changes.

    Exact: after round k the first k query positions are the greedy ones (each depends only on
    those before it), and a fixed point is the greedy sequence; it is reached in at most as
    many rounds as there are query positions, usually far fewer. ``logits_fn(ids)`` must give
    next-token logits moved onto the token they predict, without looking ahead.
    """
    ids = input_ids.clone()
    allowed = allowed.to(ids.device)
    for _ in range(int(query.sum(dim=1).max()) + 1):
        logits = logits_fn(ids).float()
        if logits.shape[-1] > allowed.shape[-1]:  # a pretrained model's embedding table may be padded
            allowed = torch.nn.functional.pad(allowed, (0, logits.shape[-1] - allowed.shape[-1]))
        prediction = logits.masked_fill(~allowed[kind], float("-inf")).argmax(dim=-1)
        updated = torch.where(query, prediction, ids)
        if torch.equal(updated, ids):
            break
        ids = updated
    return ids


@runtime_checkable
class IncrementalDecoder(Protocol):
    """A causal backbone that keeps its keys and values (:class:`~anyorder.models.backbones.PreNormEncoder`)."""

    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, Any]: ...

    def decode_step(self, token_ids: torch.Tensor, keep: torch.Tensor, cache: Any) -> torch.Tensor: ...


@torch.no_grad()
def greedy_decode_cached(
    backbone: IncrementalDecoder,
    batch: TokenBatch,
    query: torch.Tensor,
    allowed: torch.Tensor,
) -> torch.Tensor:
    """:func:`greedy_decode`'s answer with a key/value cache: the prefix before the first query
    position in one forward, then one position at a time, each query position set to its most
    likely token of its kind (the other positions keep their given token)."""
    ids, keep, kind = batch["input_ids"].clone(), batch["attention_mask"].bool(), batch["kind"]
    columns = query.any(dim=0).nonzero()[:, 0]
    if len(columns) == 0:
        return ids
    first, last = int(columns[0]), int(columns[-1])
    if first == 0:
        raise ValueError("greedy decoding needs a token before the first query position")
    logits, cache = backbone.start_decoding(ids[:, :first], keep[:, :first])
    source = previous_real(keep)[:, first].clamp(min=0)  # as shift_to_targets: position 0 where nothing is real
    upcoming = logits[torch.arange(len(ids), device=ids.device), source].float()  # predicts position `first`
    allowed = allowed.to(ids.device)
    if upcoming.shape[-1] > allowed.shape[-1]:  # an embedding table wider than the vocabulary
        allowed = torch.nn.functional.pad(allowed, (0, upcoming.shape[-1] - allowed.shape[-1]))
    for position in range(first, last + 1):
        choice = upcoming.masked_fill(~allowed[kind[:, position]], float("-inf")).argmax(dim=-1)
        ids[:, position] = torch.where(query[:, position], choice, ids[:, position])
        if position < last:
            here = keep[:, position]
            step = backbone.decode_step(ids[:, position], here, cache).float()
            upcoming = torch.where(here[:, None], step, upcoming)  # a padded position predicts nothing
    return ids


class AutoregressiveEvaluator(TaskEvaluator):
    """:class:`TaskEvaluator` for an :class:`~anyorder.models.autoregressive.AutoregressiveModule`."""

    def decode(self, batch: TokenBatch, query: torch.Tensor) -> torch.Tensor:
        """Greedy, left to right: with the backbone's key/value cache where it has one, else by
        Jacobi iteration (the same answer, up to one whole forward per query position)."""
        if isinstance(self.module.backbone, IncrementalDecoder):
            return greedy_decode_cached(self.module.backbone, batch, query, self.allowed)
        visible = torch.zeros_like(query)
        return greedy_decode(
            lambda ids: self.module({**batch, "input_ids": ids}, visible),
            batch["input_ids"],
            query,
            batch["kind"],
            self.allowed,
        )

    def world_model_nll(self, batch: TokenBatch, query: torch.Tensor, scored: torch.Tensor) -> dict[str, torch.Tensor]:
        """The chain rule by teacher forcing on every window (``joint_nll_per_token_all_windows``: no
        one-shot NLL exists), and on the first ``joint_nll_batches`` batches under the any-order
        model's key, so that the two models' joint NLLs are read on the same windows."""
        chain = token_nll(self.module.query_logits(batch, query), batch["input_ids"], scored)
        out = {"joint_nll_per_token_all_windows": chain}
        if self.batches_seen < self.joint_nll_batches:
            out["joint_nll_per_token"] = chain
        return out

    def update_inverse(self, batch: TokenBatch) -> None:
        target = inverse_target(batch)
        if not target.any():
            return
        next_view = last_step(batch) & of_kinds(batch["kind"], OBSERVATION_KINDS)
        visible = torch.zeros_like(target)
        scores = []
        for action in self.module.action_ids:
            ids = torch.where(target, action, batch["input_ids"])
            log_probs = self.module({**batch, "input_ids": ids}, visible).float().log_softmax(dim=-1)
            chosen = log_probs.gather(2, ids[..., None]).squeeze(-1)
            scores.append((chosen * (target | next_view)).sum(dim=1))
        prediction = torch.stack(scores, dim=1).argmax(dim=1)  # [B]: an index into action_ids
        truth = (batch["input_ids"][:, :, None] == self.module.action_ids).float().argmax(dim=2)  # [B, L]
        right = (prediction[:, None] == truth).float()
        self._add_at("inverse.accuracy", right[target], target)

    def update_mission(self, batch: TokenBatch) -> None:
        """Not answerable left to right: the mission comes first."""

    def update_inpainting(self, batch: TokenBatch, query: torch.Tensor) -> None:
        """Not answerable left to right: the hidden cells come before what shows them."""
