"""Trivial baselines beside every metric: a number means something only above what no model gets.

=================================  ==============================================================
metric                             baseline(s)
=================================  ==============================================================
success rate                       a uniformly random policy on the same seeds
action / inverse accuracy          the training split's majority action
world-model NLL (token, cell)      a per-kind unigram model of the training split
world-model exact cells            the unigram's most frequent value per attribute kind; and,
                                   on windows with a real previous step, *copying* the previous
                                   observation (the standard world-model baseline)
mission exact / token accuracy     the training split's most frequent mission
in-painting exact cells            the unigram's mode; copying the previous observation
=================================  ==============================================================

Each baseline answers the same query windows as the model (the split's windows, or the
closed-loop seeds for success). :func:`compare` flags every metric that does not beat its
strongest baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from anyorder.data.datamodule import EpisodeTable
from anyorder.data.layout import CELL_KINDS, NUM_CELLS, STEP_LENGTH, Layout, TokenKind
from anyorder.data.tokenizer import TokenBatch
from anyorder.data.vocabulary import Vocabulary
from anyorder.eval.metrics import cell_units, exact_cells
from anyorder.masking.queries import (
    OBSERVATION_KINDS,
    has_previous_step,
    inverse_target,
    last_step,
    of_kinds,
    policy_query,
    world_model_query,
)
from anyorder.models.decoding import kind_constraints

SMOOTHING = 0.5  # add-half counts over each kind's possible values: no value has probability zero


@dataclass(frozen=True)
class TrainingPriors:
    """What a model that ignores its input would know: the training split's frequencies."""

    log_unigram: torch.Tensor  # float [len(TokenKind), V]: log p(id | kind); -inf outside a kind's values
    majority_action: int
    mission: torch.Tensor  # long [M]: the most frequent mission's ids
    cell_triples: torch.Tensor  # long [T, 3]: every (object, colour, state) that occurs: the possible cells

    @classmethod
    def from_table(cls, table: EpisodeTable, vocabulary: Vocabulary) -> TrainingPriors:
        step_kind = Layout.build(1, table.missions.shape[1]).kind[-STEP_LENGTH:]
        allowed = kind_constraints(vocabulary)
        counts = torch.zeros(len(TokenKind), vocabulary.size, dtype=torch.float64)
        for kind in (*OBSERVATION_KINDS, TokenKind.ACTION):
            ids = table.steps[:, step_kind == kind].reshape(-1)
            counts[kind] = torch.from_numpy(np.bincount(ids, minlength=vocabulary.size).astype(np.float64))
        counts = (counts + SMOOTHING).masked_fill(~allowed, 0.0)
        log_unigram = (counts / counts.sum(dim=1, keepdim=True)).log().float()
        missions, frequency = np.unique(table.missions, axis=0, return_counts=True)
        cells = table.steps[:, : NUM_CELLS * 3].reshape(-1, 3)
        return cls(
            log_unigram=log_unigram,
            majority_action=int(counts[TokenKind.ACTION].argmax()),
            mission=torch.from_numpy(missions[frequency.argmax()]).long(),
            cell_triples=torch.from_numpy(np.unique(cells, axis=0).astype(np.int64)),
        )

    def mode(self, kind: torch.Tensor) -> torch.Tensor:
        """The most frequent id of each position's kind."""
        return self.log_unigram.argmax(dim=1).to(kind.device)[kind]


def impossible_cells(ids: torch.Tensor, cells: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
    """bool per cell of ``cells`` (positions hidden whole, in attribute order): its (object,
    colour, state) never occurs in the data."""
    decoded = ids[cells].view(-1, 3)
    width = int(max(decoded.max(), triples.max())) + 1 if decoded.numel() else 1
    key = (decoded[:, 0] * width + decoded[:, 1]) * width + decoded[:, 2]
    known = (triples[:, 0] * width + triples[:, 1]) * width + triples[:, 2]
    return ~torch.isin(key, known.to(key.device))


def previous_step_copy(batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids with every last-step token replaced by the same token of the step before, and the
    bool ``[B]`` rows that have a real previous step (only those are scored by the copy)."""
    shifted = torch.roll(batch["input_ids"], STEP_LENGTH, dims=1)
    return torch.where(last_step(batch), shifted, batch["input_ids"]), has_previous_step(batch)


class _Mean:
    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, values: torch.Tensor) -> None:
        self.total += float(values.double().sum())
        self.count += int(values.numel())

    def compute(self) -> float:
        return self.total / self.count if self.count else float("nan")


class BaselineEvaluator:
    """The offline queries of :class:`anyorder.eval.tasks.TaskEvaluator`, answered by the priors."""

    def __init__(self, priors: TrainingPriors) -> None:
        self.priors = priors
        self.means: dict[str, _Mean] = {}

    def _add(self, name: str, values: torch.Tensor) -> None:
        self.means.setdefault(name, _Mean()).update(values)

    @torch.no_grad()
    def update(self, batch: TokenBatch, inpainting: torch.Tensor | None = None) -> None:
        """``inpainting``: the cells the model's in-painting query hid in this batch."""
        ids, kind = batch["input_ids"], batch["kind"]
        majority = self.priors.majority_action
        self._add("policy.accuracy/majority_action", (ids[policy_query(batch)] == majority).float())
        self._add("inverse.accuracy/majority_action", (ids[inverse_target(batch)] == majority).float())

        query = world_model_query(batch)
        scored = query & of_kinds(kind, OBSERVATION_KINDS)
        log_p = self.priors.log_unigram.to(ids.device)[kind[scored], ids[scored]]
        self._add("world_model.nll_per_token/unigram", -log_p)
        cells = query & of_kinds(kind, CELL_KINDS)
        self._add("world_model.nll_per_cell/unigram", -log_p[of_kinds(kind[scored], CELL_KINDS)].view(-1, 3).sum(1))
        units, mode = cell_units(batch), self.priors.mode(kind)
        self._add("world_model.exact_cell_accuracy/unigram_mode", exact_cells(mode, ids, cells, units))
        copied, has_previous = previous_step_copy(batch)
        after_step = cells & has_previous[:, None]
        after = "world_model.exact_cell_accuracy_after_a_step"
        self._add(f"{after}/copy_previous", exact_cells(copied, ids, after_step, units))
        self._add(f"{after}/unigram_mode", exact_cells(mode, ids, after_step, units))

        length = self.priors.mission.shape[0]  # the mission field follows BOS; words are MISSION, the rest PAD
        words = kind[:, 1 : 1 + length] == TokenKind.MISSION
        right = self.priors.mission.to(ids.device)[None] == ids[:, 1 : 1 + length]
        self._add("mission.token_accuracy/most_frequent", right[words].float())
        self._add("mission.exact_match/most_frequent", (right | ~words).all(dim=1).float())

        if inpainting is not None and inpainting.any():
            self._add("inpainting.exact_cell_accuracy/unigram_mode", exact_cells(mode, ids, inpainting, units))
            inpainted_after_step = inpainting & has_previous[:, None]
            self._add(
                "inpainting.exact_cell_accuracy/copy_previous", exact_cells(copied, ids, inpainted_after_step, units)
            )

    def compute(self) -> dict[str, dict[str, float]]:
        """``{metric: {baseline: value}}``, metric named as ``task.key`` of the model's results."""
        out: dict[str, dict[str, float]] = {}
        for name, mean in self.means.items():
            metric, baseline = name.split("/")
            out.setdefault(metric, {})[baseline] = mean.compute()
        return out


class RandomPolicy:
    """Uniform over minigrid's actions: the floor for closed-loop success."""

    def __init__(self, num_actions: int = 7, seed: int = 0) -> None:
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def reset(self, slot: int, env: gym.Env) -> None:
        pass

    def act(self, batch: TokenBatch, slots: Sequence[int]) -> np.ndarray:
        return self.rng.integers(0, self.num_actions, size=len(slots))


LOWER_IS_BETTER = ("nll",)


def lookup(metrics: dict[str, Any], dotted: str) -> float | None:
    """``metrics`` value at ``task.key`` (or a top-level key)."""
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value)


def beats(metric: str, value: float, reference: float) -> bool:
    """Whether ``value`` of ``metric`` is better than a baseline's (lower for an NLL, else higher)."""
    lower = any(word in metric for word in LOWER_IS_BETTER)
    return value < reference if lower else value > reference


def compare(values: dict[str, Any], baselines: dict[str, dict[str, float]]) -> list[str]:
    """The metrics that do not beat their strongest baseline, as ``metric <= baseline`` lines."""
    flagged = []
    for metric, by_baseline in baselines.items():
        value = lookup(values, metric)
        if value is None or np.isnan(value):
            continue
        for baseline, reference in by_baseline.items():
            if np.isnan(reference):
                continue
            if not beats(metric, value, reference):
                flagged.append(f"{metric} {value:.3f} does not beat {baseline} {reference:.3f}")
    return flagged
