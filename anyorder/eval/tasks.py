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
from tqdm.auto import tqdm

from anyorder.data.layout import NUM_CELLS, TokenKind
from anyorder.data.tokenizer import TokenBatch
from anyorder.data.vocabulary import Vocabulary
from anyorder.eval.baselines import (
    OBSERVATION_LENGTH,
    BaselineEvaluator,
    PredictableSplit,
    TrainingPriors,
    impossible_cells,
)
from anyorder.eval.egomotion import EgoMotion
from anyorder.eval.metrics import ClusteredMetrics, cell_units, paired_difference
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


def revealed_in_order(
    module: AnyOrderModule, batch: TokenBatch, query: torch.Tensor, scored: torch.Tensor
) -> torch.Tensor:
    """Per ``scored`` position (row-major): -log p(x_i | the query's positions before i revealed,
    those from i on hidden). Summed over a window, the query's joint NLL by the chain rule."""
    rank = torch.where(query, query.long().cumsum(dim=1) - 1, -1)
    out = torch.zeros(query.shape, device=query.device)
    for r in range(int(rank.max()) + 1):
        here = (rank == r) & scored
        if here.any():
            out[here] = token_nll(module(batch, query & (rank >= r)), batch["input_ids"], here)
    return out[scored]


class TaskEvaluator(ClusteredMetrics):
    """Runs every task (and the robustness sweep of the policy task) over a dataloader.

    Every metric is a :class:`ClusteredMean` named ``task.key`` (its value in ``compute()[task][key]``,
    its 95% interval over episodes in ``compute()["intervals"]["task.key"]``). The world model is
    also scored apart on what the previous view determines (:class:`PredictableSplit`): cells
    ego-mapped from it, cells new in view, and windows at an episode's first step, with the
    share of each.
    """

    def __init__(
        self,
        module: AnyOrderModule,
        vocabulary: Vocabulary,
        decode_steps: int = 4,
        occlusion_fractions: Iterable[float] = (0.0, 0.1, 0.25, 0.5),
        inpaint_fraction: float = 0.25,
        seed: int = 0,
        priors: TrainingPriors | None = None,
        joint_nll_batches: int = 0,
    ) -> None:
        """``priors`` (the training split's frequencies) adds the trivial baselines to the results;
        ``joint_nll_batches``: batches on which the world model's chain-rule NLL is also measured
        (one forward per hidden token: 149 per batch)."""
        self.module = module.eval()
        self.joint_nll_batches = joint_nll_batches
        self.batches_seen = 0
        self.vocab = vocabulary
        self.decode_steps = decode_steps
        self.fractions = list(occlusion_fractions)
        self.inpaint_fraction = inpaint_fraction
        self.generator = torch.Generator().manual_seed(seed)
        self.allowed = kind_constraints(vocabulary)
        self.unseen_id = int(vocabulary.object_ids[0])
        self.egomotion = EgoMotion(vocabulary)
        super().__init__()
        self.baselines = BaselineEvaluator(priors, vocabulary) if priors is not None else None
        self.triples = priors.cell_triples if priors is not None else None  # joint decoding of cells

    # -- helpers ----------------------------------------------------------------------------
    def _action_prediction(
        self, batch: TokenBatch, query: torch.Tensor, scored: torch.Tensor | None = None
    ) -> torch.Tensor:
        """float per ``scored`` position (default: every ``query`` position): 1 where the argmax over
        the actions, with ``query`` hidden, is the true action."""
        scored = query if scored is None else scored
        logits = self.module(batch, query)[scored][:, self.module.action_ids]
        target = (batch["input_ids"][scored][:, None] == self.module.action_ids[None]).float().argmax(dim=1)
        return (logits.argmax(dim=1) == target).float()

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
        self.start_batch(batch)
        self.update_policy(batch)
        self.update_inverse(batch)
        self.update_world_model(batch)
        self.update_mission(batch)
        inpainting = hide_cells(batch, self.inpaint_fraction, self.unseen_id, last_step(batch), self.generator)
        self.update_inpainting(batch, inpainting)
        if self.baselines is not None:
            self.baselines.update(batch, inpainting=inpainting)
        self.update_robustness(batch)
        self.batches_seen += 1

    def update_policy(self, batch: TokenBatch) -> None:
        query = policy_query(batch)
        self._add_at("policy.accuracy", self._action_prediction(batch, query), query)

    def update_inverse(self, batch: TokenBatch) -> None:
        query = inverse_query(batch)
        if query.any():
            target = inverse_target(batch)
            self._add_at("inverse.accuracy", self._action_prediction(batch, query, target), target)

    def update_mission(self, batch: TokenBatch) -> None:
        targets = batch["input_ids"]
        query = mission_query(batch)
        decoded = self.decode(batch, query)
        rows = torch.arange(len(targets), device=targets.device)
        self._add_at("mission.token_accuracy", (decoded == targets)[query].float(), query)
        has_mission = query.any(dim=1)
        right = ((decoded == targets) | ~query).all(dim=1).float()
        self._add("mission.exact_match", right[has_mission], rows[has_mission])
        self._add_at("mission.nll_per_token", token_nll(self.module(batch, query), targets, query), query)

    def update_inpainting(self, batch: TokenBatch, query: torch.Tensor) -> None:
        if query.any():
            nll = token_nll(self.module(batch, query), batch["input_ids"], query)
            self._add_at("inpainting.nll_per_token", nll, query)
            self._add_cells("inpainting.exact_cell_accuracy", self.decode(batch, query), batch, query)

    def update_robustness(self, batch: TokenBatch) -> None:
        every_step = batch["step"] >= 0
        for fraction in self.fractions:
            occluded = hide_cells(batch, fraction, self.unseen_id, every_step, self.generator)
            masked = {**batch, "input_ids": batch["input_ids"].masked_fill(occluded, self.vocab.mask_id)}
            query = policy_query(batch)
            self._add_at(f"robustness_action_accuracy.{fraction}", self._action_prediction(masked, query), query)

    def world_model_nll(self, batch: TokenBatch, query: torch.Tensor, scored: torch.Tensor) -> dict[str, torch.Tensor]:
        """NLL per ``scored`` position by kind of likelihood, the model's own first: ``nll_per_token``
        all hidden at once (one shot, factorised); on the first ``joint_nll_batches`` batches also
        ``joint_nll_per_token``, the chain rule (the hidden tokens revealed one at a time in
        sequence order, each scored given the ones before it: the order a left-to-right model reads
        them in), and the one-shot NLL of the same windows (``nll_per_token_joint_windows``)."""
        one_shot = token_nll(self.module.query_logits(batch, query), batch["input_ids"], scored)
        out = {"nll_per_token": one_shot}
        if self.batches_seen < self.joint_nll_batches:
            out["joint_nll_per_token"] = revealed_in_order(self.module, batch, query, scored)
            out["nll_per_token_joint_windows"] = one_shot
        return out

    def update_world_model(self, batch: TokenBatch) -> None:
        """The last step hidden whole: NLL (one shot) and decoded exact cells, overall and split by
        what the previous view determines."""
        targets, kind = batch["input_ids"], batch["kind"]
        query = world_model_query(batch)
        scored = query & of_kinds(kind, OBSERVATION_KINDS)
        likelihoods = self.world_model_nll(batch, query, scored)
        for name, values in likelihoods.items():
            self._add_at(f"world_model.{name}", values, scored)
        native, nll = next(iter(likelihoods.items()))  # the model's own: one shot, else the chain rule
        cells = query & of_kinds(kind, CELL_KINDS)
        self._add("world_model.nll_per_cell", nll[of_kinds(kind[scored], CELL_KINDS)].view(-1, 3).sum(dim=1),
                  cells.nonzero()[::3, 0])  # fmt: skip
        decoded = self.decode(batch, query)
        self._add_cells("world_model.exact_cell_accuracy", decoded, batch, cells)
        if self.triples is not None:  # with joint decoding this must stay 0
            impossible = impossible_cells(decoded, cells, self.triples).float()
            self._add("world_model.impossible_cell_share", impossible, cells.nonzero()[::3, 0])
        # the windows that the copy baselines can answer
        after_step = cells & has_previous_step(batch)[:, None]
        self._add_cells("world_model.exact_cell_accuracy_after_a_step", decoded, batch, after_step)
        split = PredictableSplit.of(batch, self.egomotion, torch.zeros(OBSERVATION_LENGTH, dtype=torch.long))
        every_nll = torch.zeros_like(targets, dtype=nll.dtype).masked_scatter(scored, nll)
        for part in ("ego_mapped", "new_in_view", "first_step"):
            where = getattr(split, part)
            self._add_cells(f"world_model.exact_cell_accuracy_{part}", decoded, batch, where)
            self._add_at(f"world_model.{native}_{part}", every_nll[where], where)
        # the shares: of the cells after a step, those ego-mapped; of the windows, first steps
        self._add_at("world_model.share_ego_mapped", split.ego_mapped[after_step].float(), after_step)
        first = (~has_previous_step(batch)).float()
        self._add("world_model.share_first_step", first, torch.arange(len(first), device=first.device))

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, mean in self.means.items():
            task, key = name.split(".", 1)
            out.setdefault(task, {})[key] = mean.compute()
        out["intervals"] = {name: list(mean.interval()) for name, mean in self.means.items()}
        out["windows"] = self.windows
        if self.baselines is not None:
            out["baselines"] = self.baselines.compute()
            out["baseline_intervals"] = self.baselines.intervals()
            out["paired_differences"] = self.paired_differences()
        return out

    def paired_differences(self) -> dict[str, dict[str, list[float]]]:
        """``{metric: {baseline: [model - baseline, low, high]}}`` on the same episodes."""
        out: dict[str, dict[str, list[float]]] = {}
        for name, baseline in self.baselines.means.items() if self.baselines is not None else ():
            metric = name.split("/")[0]
            if metric in self.means:
                out.setdefault(metric, {})[name.split("/")[1]] = list(paired_difference(self.means[metric], baseline))
        return out

    def run(self, batches: Iterable[TokenBatch], max_batches: int | None = None, progress: bool = False) -> dict:
        for index, batch in enumerate(tqdm(batches, desc="tasks", disable=not progress, total=max_batches)):
            if max_batches is not None and index >= max_batches:
                break
            self.update(batch)
        return self.compute()
