"""Trivial baselines beside every metric: a number means something only above what no model gets.

The strongest baselines use the task's structure, not only frequencies: the agent's own
action moves its egocentric view in a known way (:mod:`anyorder.eval.egomotion`).

=================================  ==============================================================
metric                             baseline(s)
=================================  ==============================================================
success rate                       a uniformly random policy on the same seeds
action accuracy                    the training split's majority action
inverse accuracy                   the majority action; the *direction rule* (the action most
                                   often seen in training with the same turn of the direction
                                   token and the same "did the view change")
world-model NLL                    per-kind and *per-position* unigrams (each view position's own
                                   value frequencies); the *ego-motion mixture*: the previous
                                   view moved by the action, mixed with the per-position unigram
                                   (weight fitted on training windows), the unigram where new
world-model exact cells            the per-position mode; the *ego-motion copy* (the previous view
                                   moved by the action, cells new in view from the position mode)
mission exact / token accuracy     the training split's most frequent mission
in-painting exact cells            each position's most frequent *visible* value; the ego-motion
                                   copy where the previous step shows the hidden cell
=================================  ==============================================================

Each baseline answers the same query windows as the model (the split's windows, or the
closed-loop seeds for success), with a window-level 95% interval. :func:`compare` flags every
metric whose interval does not lie wholly beyond its strongest baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from minigrid.core.constants import OBJECT_TO_IDX

from anyorder.data.datamodule import EpisodeTable
from anyorder.data.layout import ATTRIBUTES_PER_CELL, CELL_KINDS, NUM_CELLS, STEP_LENGTH, Layout, TokenKind
from anyorder.data.tokenizer import TokenBatch
from anyorder.data.vocabulary import Vocabulary
from anyorder.eval.egomotion import EgoMotion
from anyorder.eval.metrics import ClusteredMetrics
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
OBSERVATION_LENGTH = NUM_CELLS * ATTRIBUTES_PER_CELL + 1  # a step's cells and direction
MIXTURE_WEIGHTS = np.concatenate([np.linspace(0.5, 0.99, 50), 1 - np.logspace(-2.5, -6, 15)])
# the world model's likelihoods by name: one shot (the any-order model's own) and the chain rule on
# every window (a left-to-right model's own)
ONE_SHOT, CHAIN_RULE = "nll_per_token", "joint_nll_per_token_all_windows"
WORLD_MODEL_LIKELIHOODS = (ONE_SHOT, CHAIN_RULE)
FITTING_PAIRS = 50_000  # consecutive training steps the ego-motion rules are fitted on (at most)


def step_pairs(table: EpisodeTable, limit: int = FITTING_PAIRS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(previous, next)`` encoded steps ``[P, STEP_LENGTH]`` of consecutive pairs within an
    episode: all of them, or ``limit`` drawn at random (the rules fitted on them have a handful of
    parameters; a large dataset need not be copied whole)."""
    starts = np.arange(len(table.steps) - 1)
    episode_end = np.repeat(table.offsets + table.lengths, table.lengths)[:-1]
    starts = starts[starts + 1 < episode_end]
    if len(starts) > limit:
        starts = np.sort(np.random.default_rng(seed).choice(starts, size=limit, replace=False))
    return table.steps[starts].astype(np.int64), table.steps[starts + 1].astype(np.int64)


def direction_change(egomotion: EgoMotion, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """long ``[N]``: (heading after - heading before) mod 4 from two direction-token columns."""
    of_id = egomotion.direction_of_id.to(previous.device)
    return (of_id[current] - of_id[previous]) % len(egomotion.direction_ids)


def direction_rule_key(egomotion: EgoMotion, previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """long ``[N]`` in 0..7: the turn of the direction token, and whether the view changed, of
    step pairs ``[N, STEP_LENGTH]`` (only their cells and direction are read)."""
    turn = direction_change(egomotion, previous[:, NUM_CELLS * 3], current[:, NUM_CELLS * 3])
    changed = (previous[:, : NUM_CELLS * 3] != current[:, : NUM_CELLS * 3]).any(dim=1)
    return turn * 2 + changed.long()


@dataclass(frozen=True)
class TrainingPriors:
    """What a model that ignores its input would know, and what one that knows only the view's
    geometry would: the training split's frequencies and the fitted ego-motion rules."""

    log_unigram: torch.Tensor  # float [len(TokenKind), V]: log p(id | kind); -inf outside a kind's values
    log_position: torch.Tensor  # float [OBSERVATION_LENGTH, V]: log p(id | view position and attribute)
    visible_mode: torch.Tensor  # long [NUM_CELLS * 3]: each position's most frequent value among visible cells
    ego_weight: float  # the ego-motion mixture's weight on the moved previous view
    direction_rule: torch.Tensor  # long [8]: action id per direction_rule_key
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
        log_position = position_unigram(table.steps[:, :OBSERVATION_LENGTH], step_kind, allowed)
        egomotion = EgoMotion(vocabulary)
        previous, following = (torch.from_numpy(s) for s in step_pairs(table))
        return cls(
            log_unigram=log_unigram,
            log_position=log_position,
            visible_mode=visible_position_mode(table.steps, int(vocabulary.object_ids[OBJECT_TO_IDX["unseen"]])),
            ego_weight=fit_ego_weight(egomotion, log_position, previous, following),
            direction_rule=fit_direction_rule(egomotion, previous, following, int(counts[TokenKind.ACTION].argmax())),
            majority_action=int(counts[TokenKind.ACTION].argmax()),
            mission=torch.from_numpy(missions[frequency.argmax()]).long(),
            cell_triples=torch.from_numpy(np.unique(cells, axis=0).astype(np.int64)),
        )

    def mode(self, kind: torch.Tensor) -> torch.Tensor:
        """The most frequent id of each position's kind."""
        return self.log_unigram.argmax(dim=1).to(kind.device)[kind]

    @property
    def position_mode(self) -> torch.Tensor:
        """long ``[OBSERVATION_LENGTH]``: each view position's most frequent id."""
        return self.log_position.argmax(dim=1)


def position_unigram(observations: np.ndarray, step_kind: np.ndarray, allowed: torch.Tensor) -> torch.Tensor:
    """log p(id | position) over a step's cells and direction, add-half smoothed within each kind."""
    size = allowed.shape[1]
    offsets = np.arange(observations.shape[1])[None] * size
    counts = np.bincount((observations + offsets).reshape(-1), minlength=observations.shape[1] * size)
    counts = torch.from_numpy(counts.reshape(observations.shape[1], size).astype(np.float64)) + SMOOTHING
    counts = counts.masked_fill(~allowed[torch.from_numpy(step_kind[: observations.shape[1]])], 0.0)
    return (counts / counts.sum(dim=1, keepdim=True)).log().float()


def visible_position_mode(steps: np.ndarray, unseen_id: int) -> torch.Tensor:
    """Each cell position's most frequent attribute value among cells that are visible (what
    in-painting hides: it never hides an unseen cell)."""
    cells = steps[:, : NUM_CELLS * 3].reshape(-1, NUM_CELLS, 3).astype(np.int64)
    visible = cells[..., 0] != unseen_id
    mode = np.empty((NUM_CELLS, 3), dtype=np.int64)
    for cell in range(NUM_CELLS):
        values = cells[visible[:, cell], cell] if visible[:, cell].any() else cells[:, cell]
        for attribute in range(3):
            mode[cell, attribute] = np.bincount(values[:, attribute]).argmax()
    return torch.from_numpy(mode.reshape(-1))


def ego_prediction(
    egomotion: EgoMotion, previous: torch.Tensor, fill: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ego-motion copy of steps ``[N, STEP_LENGTH]``: the next step's observation ids
    ``[N, OBSERVATION_LENGTH]`` and which of them are determined by the previous view (bool)."""
    cells, mapped, direction = egomotion.predict(
        previous[:, : NUM_CELLS * 3].view(-1, NUM_CELLS, 3),
        previous[:, NUM_CELLS * 3],
        previous[:, -1],
        fill[: NUM_CELLS * 3].view(NUM_CELLS, 3),
    )
    ids = torch.cat([cells.reshape(len(previous), -1), direction[:, None]], dim=1)
    known = torch.cat([mapped.repeat_interleave(3, dim=1), torch.ones_like(mapped[:, :1])], dim=1)
    return ids, known


def ego_mixture_nll(
    log_position: torch.Tensor, predicted: torch.Tensor, known: torch.Tensor, target: torch.Tensor, weight: float
) -> torch.Tensor:
    """-log p per observation token ``[N, OBSERVATION_LENGTH]`` under ``weight * [x = moved view]
    + (1 - weight) * p(x | position)`` where the previous view determines it, the unigram elsewhere."""
    prior = log_position.to(target.device).gather(1, target.T).T.exp()
    mixed = weight * (predicted == target).float() + (1 - weight) * prior
    return -torch.where(known, mixed, prior).log()


def fit_ego_weight(
    egomotion: EgoMotion, log_position: torch.Tensor, previous: torch.Tensor, following: torch.Tensor
) -> float:
    """The mixture weight with the highest likelihood of training steps (a grid up to 1 - 1e-6)."""
    if len(previous) == 0:
        return 0.5
    target = following[:, :OBSERVATION_LENGTH]
    predicted, known = ego_prediction(egomotion, previous, log_position.argmax(dim=1))
    likelihoods = [float(ego_mixture_nll(log_position, predicted, known, target, w).mean()) for w in MIXTURE_WEIGHTS]
    return float(MIXTURE_WEIGHTS[int(np.argmin(likelihoods))])


def fit_direction_rule(
    egomotion: EgoMotion, previous: torch.Tensor, following: torch.Tensor, majority: int
) -> torch.Tensor:
    """long ``[8]``: the most frequent action of training steps per direction_rule_key (the
    majority action for a key never seen)."""
    rule = torch.full((8,), majority, dtype=torch.long)
    if len(previous) == 0:
        return rule
    keys = direction_rule_key(egomotion, previous, following)
    for key in keys.unique().tolist():
        rule[key] = int(previous[keys == key, -1].mode().values)
    return rule


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


@dataclass(frozen=True)
class StepView:
    """The last two steps of each window, as ``[B, STEP_LENGTH]`` ids, and where the last one sits."""

    last: torch.Tensor  # long [B, STEP_LENGTH]
    previous: torch.Tensor  # long [B, STEP_LENGTH] (garbage where has_previous is False)
    has_previous: torch.Tensor  # bool [B]
    positions: torch.Tensor  # bool [B, L]: the last step's positions (STEP_LENGTH per row)

    @classmethod
    def of(cls, batch: TokenBatch) -> StepView:
        positions = last_step(batch)
        ids = batch["input_ids"]
        shifted = torch.roll(ids, STEP_LENGTH, dims=1)
        rows = ids.shape[0]
        return cls(
            last=ids[positions].view(rows, STEP_LENGTH),
            previous=shifted[positions].view(rows, STEP_LENGTH),
            has_previous=has_previous_step(batch),
            positions=positions,
        )

    def scatter(self, values: torch.Tensor, fill: Any = 0) -> torch.Tensor:
        """``[B, L]`` with ``values [B, n <= STEP_LENGTH]`` at the last step's first n positions."""
        full = torch.full(self.positions.shape, fill, dtype=values.dtype, device=values.device)
        padded = torch.full((values.shape[0], STEP_LENGTH), fill, dtype=values.dtype, device=values.device)
        padded[:, : values.shape[1]] = values
        full[self.positions] = padded.reshape(-1)
        return full


@dataclass(frozen=True)
class PredictableSplit:
    """Which world-model targets of a batch the previous view determines (bool ``[B, L]``)."""

    ego_mapped: torch.Tensor  # cell tokens of the last step whose cell lay in the previous view
    new_in_view: torch.Tensor  # cell tokens of the last step new in view (after a real step)
    first_step: torch.Tensor  # cell tokens of windows whose last step is the episode's first
    ego_copy: torch.Tensor  # long [B, L]: the ego-motion copy at the last step's observation

    @classmethod
    def of(cls, batch: TokenBatch, egomotion: EgoMotion, fill: torch.Tensor) -> PredictableSplit:
        view = StepView.of(batch)
        fill = fill.to(view.last.device)
        predicted, known = ego_prediction(egomotion, view.previous, fill)
        # a first step has no previous view: the copy is the fill (the position mode) there
        predicted = torch.where(view.has_previous[:, None], predicted, fill[None, :OBSERVATION_LENGTH])
        cells = view.positions & of_kinds(batch["kind"], CELL_KINDS)
        after = cells & view.has_previous[:, None]
        mapped = view.scatter(known, False)
        return cls(
            ego_mapped=after & mapped,
            new_in_view=after & ~mapped,
            first_step=cells & ~view.has_previous[:, None],
            ego_copy=torch.where(view.positions, view.scatter(predicted, 0), batch["input_ids"]),
        )


class BaselineEvaluator(ClusteredMetrics):
    """The offline queries of :class:`anyorder.eval.tasks.TaskEvaluator`, answered by the priors."""

    def __init__(self, priors: TrainingPriors, vocabulary: Vocabulary) -> None:
        self.priors = priors
        self.egomotion = EgoMotion(vocabulary)
        super().__init__()

    @torch.no_grad()
    def update(self, batch: TokenBatch, inpainting: torch.Tensor | None = None) -> None:
        """``inpainting``: the cells the model's in-painting query hid in this batch."""
        ids, kind = batch["input_ids"], batch["kind"]
        self.start_batch(batch)
        priors = self.priors
        majority = priors.majority_action
        query = policy_query(batch)
        self._add_at("policy.accuracy/majority_action", (ids[query] == majority).float(), query)
        target = inverse_target(batch)
        self._add_at("inverse.accuracy/majority_action", (ids[target] == majority).float(), target)
        view = StepView.of(batch)
        rows = view.has_previous
        if rows.any():
            key = direction_rule_key(self.egomotion, view.previous[rows], view.last[rows])
            guess = priors.direction_rule.to(ids.device)[key]
            self._add(
                "inverse.accuracy/direction_rule", (guess == view.previous[rows, -1]).float(), rows.nonzero()[:, 0]
            )

        query = world_model_query(batch)
        scored = query & of_kinds(kind, OBSERVATION_KINDS)
        log_p = priors.log_unigram.to(ids.device)[kind[scored], ids[scored]]
        self._add_at("world_model.nll_per_token/unigram", -log_p, scored)
        cells = query & of_kinds(kind, CELL_KINDS)
        per_cell = -log_p[of_kinds(kind[scored], CELL_KINDS)].view(-1, 3).sum(1)
        self._add("world_model.nll_per_cell/unigram", per_cell, cells.nonzero()[::3, 0])
        mode = priors.mode(kind)
        position_mode = view.scatter(priors.position_mode.to(ids.device)[None].expand(len(ids), -1), 0)
        self._add_cells("world_model.exact_cell_accuracy/unigram_mode", mode, batch, cells)
        self._add_cells("world_model.exact_cell_accuracy/position_mode", position_mode, batch, cells)

        # per-position unigram and the ego-motion mixture, per observation token of the last step
        target = view.last[:, :OBSERVATION_LENGTH]
        log_position = priors.log_position.to(ids.device)
        unigram_nll = -log_position.gather(1, target.T).T
        split = PredictableSplit.of(batch, self.egomotion, priors.position_mode)
        predicted, known = ego_prediction(self.egomotion, view.previous, priors.position_mode.to(ids.device))
        mixture = ego_mixture_nll(log_position, predicted, known, target, priors.ego_weight)
        mixture_nll = torch.where(view.has_previous[:, None], mixture, unigram_nll)
        observation = view.positions & of_kinds(kind, OBSERVATION_KINDS)
        for name, values in (("position_unigram", unigram_nll), ("ego_motion_mixture", mixture_nll)):
            full = view.scatter(values, 0.0)
            # factorised, so its chain rule is its one-shot NLL: kept under both of the model's names,
            # paired with whichever one the model reports (one shot, or left to right the chain rule)
            for likelihood in WORLD_MODEL_LIKELIHOODS:
                self._add_at(f"world_model.{likelihood}/{name}", full[observation], observation)
                for part in ("ego_mapped", "new_in_view", "first_step"):
                    where = getattr(split, part)
                    self._add_at(f"world_model.{likelihood}_{part}/{name}", full[where], where)
        after_step = cells & view.has_previous[:, None]
        after = "world_model.exact_cell_accuracy_after_a_step"
        copied, _ = previous_step_copy(batch)
        self._add_cells(f"{after}/copy_previous", copied, batch, after_step)
        self._add_cells(f"{after}/unigram_mode", mode, batch, after_step)
        self._add_cells(f"{after}/ego_motion_copy", split.ego_copy, batch, after_step)
        self._add_cells("world_model.exact_cell_accuracy/ego_motion_copy", split.ego_copy, batch, cells)
        for part in ("ego_mapped", "new_in_view", "first_step"):
            self._add_cells(f"world_model.exact_cell_accuracy_{part}/ego_motion_copy", split.ego_copy, batch,
                            getattr(split, part))  # fmt: skip

        length = priors.mission.shape[0]  # the mission field follows BOS; words are MISSION, the rest PAD
        words = kind[:, 1 : 1 + length] == TokenKind.MISSION
        right = priors.mission.to(ids.device)[None] == ids[:, 1 : 1 + length]
        self._add("mission.token_accuracy/most_frequent", right[words].float(), words.nonzero()[:, 0])
        asked = words.any(dim=1)  # as the model is scored: windows with a mission
        exact = (right | ~words).all(dim=1).float()
        self._add("mission.exact_match/most_frequent", exact[asked], asked.nonzero()[:, 0])

        if inpainting is not None and inpainting.any():
            visible_mode = view.scatter(priors.visible_mode.to(ids.device)[None].expand(len(ids), -1), 0)
            self._add_cells("inpainting.exact_cell_accuracy/visible_position_mode", visible_mode, batch, inpainting)
            # the previous step's view moved by the action where it shows the cell, else the visible mode
            predicted, known = ego_prediction(self.egomotion, view.previous, priors.visible_mode.to(ids.device))
            shows = known[:, 0 : NUM_CELLS * 3 : 3] & (predicted[:, 0 : NUM_CELLS * 3 : 3] != self.egomotion.unseen)
            shows = shows.repeat_interleave(3, dim=1) & view.has_previous[:, None]
            ego = torch.where(view.scatter(shows, False), view.scatter(predicted, 0), visible_mode)
            self._add_cells("inpainting.exact_cell_accuracy/ego_motion_copy", ego, batch, inpainting)

    def compute(self) -> dict[str, dict[str, float]]:
        """``{metric: {baseline: value}}``, metric named as ``task.key`` of the model's results."""
        out: dict[str, dict[str, float]] = {}
        for name, mean in self.means.items():
            metric, baseline = name.split("/")
            out.setdefault(metric, {})[baseline] = mean.compute()
        return out

    def intervals(self) -> dict[str, dict[str, list[float]]]:
        """``{metric: {baseline: [low, high]}}``: 95% intervals over windows."""
        out: dict[str, dict[str, list[float]]] = {}
        for name, mean in self.means.items():
            metric, baseline = name.split("/")
            out.setdefault(metric, {})[baseline] = list(mean.interval())
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


def strongest(metric: str, by_baseline: dict[str, float]) -> tuple[str, float] | None:
    """The best baseline of ``metric`` (lowest NLL, else highest value), ignoring NaN."""
    known = {name: value for name, value in by_baseline.items() if not np.isnan(value)}
    if not known:
        return None
    lower = any(word in metric for word in LOWER_IS_BETTER)
    name = (min if lower else max)(known, key=known.get)
    return name, known[name]


def compare(
    values: dict[str, Any],
    baselines: dict[str, dict[str, float]],
    intervals: dict[str, list[float]] | None = None,
    paired: dict[str, dict[str, list[float]]] | None = None,
) -> list[str]:
    """The metrics that do not beat their strongest baseline, as ``metric ... does not beat ...`` lines.

    Decided by an interval, not by the mean: with ``paired`` (``[model - baseline, low, high]`` on
    the same episodes) the difference's 95% interval must exclude 0 on the better side; else, with
    ``intervals`` (the metric's own 95% interval by ``task.key``), that interval must lie wholly
    beyond the baseline's value; with neither, the mean decides.
    """
    flagged = []
    for metric, by_baseline in baselines.items():
        value = lookup(values, metric)
        best = strongest(metric, by_baseline)
        if value is None or np.isnan(value) or best is None:
            continue
        baseline, reference = best
        lower = any(word in metric for word in LOWER_IS_BETTER)
        difference = (paired or {}).get(metric, {}).get(baseline)
        if difference is not None and not np.isnan(difference[1]):
            clear = difference[2] < 0 if lower else difference[1] > 0
            shown = f"{value:.3f} (difference {difference[0]:+.3f} [{difference[1]:+.3f}, {difference[2]:+.3f}])"
        else:
            low, high = (intervals or {}).get(metric, (float("nan"), float("nan")))
            edge = value if np.isnan(low) else (high if lower else low)
            clear = beats(metric, edge, reference)
            shown = f"{value:.3f}" if np.isnan(low) else f"{value:.3f} [{low:.3f}, {high:.3f}]"
        if not clear:
            flagged.append(f"{metric} {shown} does not beat {baseline} {reference:.3f}")
    return flagged
