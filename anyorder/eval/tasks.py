"""One model, many questions: each evaluation task hides a different part of held-out windows.

=============  =====================================================  ============================
task           hidden                                                 metrics
=============  =====================================================  ============================
policy         the last action                                        accuracy
world_model    the last step (observation and action)                 NLL per token / per cell,
                                                                      exact-cell accuracy (decoded)
inverse        the action before the last observation, and the last   accuracy (of the first)
               action (which would give it away)
mission        every mission word                                     token accuracy, exact match
inpainting     25% of the visible cells of the last observation       NLL, exact-cell accuracy
=============  =====================================================  ============================

Multi-token answers are decoded by iterative unmasking (:mod:`anyorder.models.decoding`).
Robustness repeats the policy question with a fraction f of the visible cells of every step
occluded (MASK tokens).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy
from tqdm.auto import tqdm

from anyorder.data.layout import NUM_CELLS, TokenKind
from anyorder.data.tokenizer import TokenBatch
from anyorder.data.vocabulary import Vocabulary
from anyorder.eval.baselines import BaselineEvaluator, TrainingPriors, impossible_cells
from anyorder.eval.metrics import ExactCellAccuracy, cell_units
from anyorder.masking.queries import (
    OBSERVATION_KINDS,
    has_previous_step,
    inverse_query,
    inverse_target,
    last_step,
    of_kinds,
    policy_query,
    world_model_query,
)
from anyorder.models.decoding import iterative_unmask, kind_constraints
from anyorder.models.module import AnyOrderModule
from anyorder.models.objective import token_nll

CELL_KINDS = (TokenKind.OBJECT, TokenKind.COLOR, TokenKind.STATE)


def mission_query(batch: TokenBatch) -> torch.Tensor:
    return batch["kind"] == TokenKind.MISSION


def hide_cells(
    batch: TokenBatch, fraction: float, unseen_id: int, steps: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """bool ``[B, L]``: all attributes of round(fraction * visible) visible cells per step."""
    units = cell_units(batch)
    objects = (batch["kind"] == TokenKind.OBJECT) & steps & (batch["input_ids"] != unseen_id)
    width = (int(batch["step"].max()) + 1) * NUM_CELLS
    visible = (
        torch.zeros(units.shape[0], width, device=units.device)
        .scatter_reduce(1, units.clamp(min=0), objects.float(), reduce="amax")
        .bool()
    )
    # drawn on the generator's device (the CPU) and moved: the same cells on every device
    keys = torch.rand(visible.shape, generator=generator).to(visible.device).masked_fill(~visible, 2.0)
    per_step = keys.view(keys.shape[0], -1, NUM_CELLS)
    count = torch.round(fraction * visible.view_as(per_step).sum(dim=2, keepdim=True))
    rank = per_step.argsort(dim=2).argsort(dim=2)
    hidden_units = (rank < count).view_as(visible) & visible
    return torch.gather(hidden_units, 1, units.clamp(min=0)) & (units >= 0) & steps


class TaskEvaluator:
    """Runs every task (and the robustness sweep of the policy task) over a dataloader."""

    def __init__(
        self,
        module: AnyOrderModule,
        vocabulary: Vocabulary,
        decode_steps: int = 4,
        occlusion_fractions: Iterable[float] = (0.0, 0.1, 0.25, 0.5),
        inpaint_fraction: float = 0.25,
        seed: int = 0,
        priors: TrainingPriors | None = None,
    ) -> None:
        """``priors`` (the training split's frequencies) adds the trivial baselines to the results."""
        self.module = module.eval()
        self.vocab = vocabulary
        self.decode_steps = decode_steps
        self.fractions = list(occlusion_fractions)
        self.inpaint_fraction = inpaint_fraction
        self.generator = torch.Generator().manual_seed(seed)
        self.allowed = kind_constraints(vocabulary)
        self.unseen_id = int(vocabulary.object_ids[0])
        # one process evaluates: a process group left by training in the same process (a
        # notebook, a test) must not make compute() gather across ranks
        local = {"sync_on_compute": False}
        actions = {"num_classes": len(vocabulary.action_ids), "average": "micro", **local}
        self.policy, self.inverse = MulticlassAccuracy(**actions), MulticlassAccuracy(**actions)
        self.robust = {f: MulticlassAccuracy(**actions) for f in self.fractions}
        self.world_nll, self.world_cell_nll = MeanMetric(**local), MeanMetric(**local)
        self.world_cells, self.world_cells_after_step = ExactCellAccuracy(**local), ExactCellAccuracy(**local)
        self.mission_tokens, self.mission_exact, self.mission_nll = (MeanMetric(**local) for _ in range(3))
        self.inpaint_nll, self.inpaint_cells = MeanMetric(**local), ExactCellAccuracy(**local)
        for metric in self.metrics():  # beside the model, which may be on a GPU
            metric.to(module.device)
        self.baselines = BaselineEvaluator(priors) if priors is not None else None
        self.triples = priors.cell_triples if priors is not None else None  # joint decoding of cells
        self.impossible = MeanMetric(**local).to(module.device)

    def metrics(self) -> list[Metric]:
        return [
            self.policy, self.inverse, *self.robust.values(), self.world_nll, self.world_cell_nll, self.world_cells,
            self.world_cells_after_step,
            self.mission_tokens, self.mission_exact, self.mission_nll, self.inpaint_nll, self.inpaint_cells,
        ]  # fmt: skip

    # -- helpers ----------------------------------------------------------------------------
    def _action_prediction(
        self, batch: TokenBatch, query: torch.Tensor, scored: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted and true action at ``scored`` (default: every ``query`` position) with ``query`` hidden."""
        scored = query if scored is None else scored
        logits = self.module(batch, query)[scored][:, self.module.action_ids]
        target = (batch["input_ids"][scored][:, None] == self.module.action_ids[None]).float().argmax(dim=1)
        return logits.argmax(dim=1), target

    def decode(self, batch: TokenBatch, query: torch.Tensor) -> torch.Tensor:
        """Ids with the ``query`` positions decoded by iterative unmasking, constrained by kind."""
        return iterative_unmask(
            lambda ids: self.module.backbone(ids, batch["attention_mask"]),
            batch["input_ids"],
            query,
            batch["kind"],
            self.allowed,
            self.vocab.mask_id,
            self.decode_steps,
            cell_unit=cell_units(batch),
            triples=self.triples,
        )

    # -- the tasks --------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, batch: TokenBatch) -> None:
        batch = {key: value.to(self.module.device) for key, value in batch.items()}
        targets, kind = batch["input_ids"], batch["kind"]

        self.policy.update(*self._action_prediction(batch, policy_query(batch)))

        query = inverse_query(batch)
        if query.any():
            self.inverse.update(*self._action_prediction(batch, query, inverse_target(batch)))

        query = world_model_query(batch)
        scored = query & of_kinds(kind, OBSERVATION_KINDS)
        nll = token_nll(self.module(batch, query), targets, scored)
        self.world_nll.update(nll)
        cells = query & of_kinds(kind, CELL_KINDS)
        self.world_cell_nll.update(nll[of_kinds(kind[scored], CELL_KINDS)].view(-1, 3).sum(dim=1))
        decoded = self.decode(batch, query)
        self.world_cells.update(decoded, targets, cells, cell_units(batch))
        if self.triples is not None:  # with joint decoding this must stay 0
            self.impossible.update(impossible_cells(decoded, cells, self.triples).float())
        # the windows that the copy-the-previous-observation baseline can answer
        after_step = cells & has_previous_step(batch)[:, None]
        self.world_cells_after_step.update(decoded, targets, after_step, cell_units(batch))

        query = mission_query(batch)
        decoded = self.decode(batch, query)
        right = (decoded == targets) | ~query
        self.mission_tokens.update((decoded == targets)[query].float())
        self.mission_exact.update(right.all(dim=1).float())
        self.mission_nll.update(token_nll(self.module(batch, query), targets, query))

        query = hide_cells(batch, self.inpaint_fraction, self.unseen_id, last_step(batch), self.generator)
        if query.any():
            self.inpaint_nll.update(token_nll(self.module(batch, query), targets, query))
            self.inpaint_cells.update(self.decode(batch, query), targets, query, cell_units(batch))
        if self.baselines is not None:
            self.baselines.update(batch, inpainting=query)

        every_step = batch["step"] >= 0
        for fraction, metric in self.robust.items():
            occluded = hide_cells(batch, fraction, self.unseen_id, every_step, self.generator)
            masked = {**batch, "input_ids": targets.masked_fill(occluded, self.vocab.mask_id)}
            prediction, target = self._action_prediction(masked, policy_query(batch))
            metric.update(prediction, target)

    def compute(self) -> dict[str, Any]:
        return {
            "policy": {"accuracy": float(self.policy.compute())},
            "world_model": {
                "nll_per_token": float(self.world_nll.compute()),
                "nll_per_cell": float(self.world_cell_nll.compute()),
                "exact_cell_accuracy": float(self.world_cells.compute()),
                "exact_cell_accuracy_after_a_step": float(self.world_cells_after_step.compute()),
            }
            | ({"impossible_cell_share": float(self.impossible.compute())} if self.triples is not None else {}),
            "inverse": {"accuracy": float(self.inverse.compute())},
            "mission": {
                "token_accuracy": float(self.mission_tokens.compute()),
                "exact_match": float(self.mission_exact.compute()),
                "nll_per_token": float(self.mission_nll.compute()),
            },
            "inpainting": {
                "nll_per_token": float(self.inpaint_nll.compute()),
                "exact_cell_accuracy": float(self.inpaint_cells.compute()),
            },
            "robustness_action_accuracy": {str(f): float(m.compute()) for f, m in self.robust.items()},
        } | ({"baselines": self.baselines.compute()} if self.baselines is not None else {})

    def run(self, batches: Iterable[TokenBatch], max_batches: int | None = None, progress: bool = False) -> dict:
        for index, batch in enumerate(tqdm(batches, desc="tasks", disable=not progress, total=max_batches)):
            if max_batches is not None and index >= max_batches:
                break
            self.update(batch)
        return self.compute()
