"""Trivial baselines: the priors count the training split, the copy baseline copies, flags fire."""

from __future__ import annotations

import numpy as np
import torch

from anyorder.data.datamodule import EpisodeTable
from anyorder.data.layout import TokenKind
from anyorder.data.tokenizer import TrajectoryTokenizer
from anyorder.data.vocabulary import Vocabulary
from anyorder.eval.baselines import BaselineEvaluator, TrainingPriors, compare, previous_step_copy

VOCAB = Vocabulary.structured()
TOKENIZER = TrajectoryTokenizer(VOCAB, window=2, mission_length=4)


def encoded_steps(count: int, seed: int) -> np.ndarray:
    """Random but valid encoded steps: objects, colours, states, directions and actions by kind."""
    rng = np.random.default_rng(seed)
    observations = rng.integers(0, 3, size=(count, 7, 7, 3))
    observations[..., 0] = rng.choice([1, 2, 5, 6], size=(count, 7, 7))  # empty, wall, key, ball
    return TOKENIZER.encode_steps(observations, rng.integers(0, 4, count), rng.integers(0, 7, count))


def table(steps: np.ndarray, missions: np.ndarray) -> EpisodeTable:
    lengths = np.full(len(missions), len(steps) // len(missions))
    return EpisodeTable(
        steps=steps.astype(np.int32), offsets=np.cumsum(lengths) - lengths, lengths=lengths,
        missions=missions, seeds=np.arange(len(missions)),
    )  # fmt: skip


def test_priors_count_the_training_split() -> None:
    steps = encoded_steps(40, 0)
    action_ids = np.asarray(VOCAB.action_ids)
    steps[:, -1] = action_ids[2]
    steps[:5, -1] = action_ids[0]
    missions = np.array([[40, 41, 0, 0]] * 3 + [[42, 0, 0, 0]] * 2 + [[40, 41, 0, 0]] * 5)
    priors = TrainingPriors.from_table(table(steps, missions), VOCAB)
    assert priors.majority_action == int(action_ids[2])
    assert priors.mission.tolist() == [40, 41, 0, 0]
    probabilities = priors.log_unigram.exp()
    for kind in (TokenKind.OBJECT, TokenKind.DIRECTION, TokenKind.ACTION):
        assert torch.isclose(probabilities[kind].sum(), torch.tensor(1.0))
    assert probabilities[TokenKind.ACTION, int(action_ids[2])] > 0.8  # 35 of 40, smoothed


def window_batch(steps: np.ndarray, valid: np.ndarray) -> dict[str, torch.Tensor]:
    return TOKENIZER.assemble(np.full((steps.shape[0], 4), 40), steps, valid)


def test_copying_the_previous_observation_is_exact_when_nothing_moved() -> None:
    first = encoded_steps(3, 1)
    repeated = np.stack([first, first], axis=1)  # the last observation equals the one before
    valid = np.array([[True, True], [True, True], [False, True]])  # the third has no previous step
    batch = window_batch(repeated, valid)
    copied, has_previous = previous_step_copy(batch)
    assert has_previous.tolist() == [True, True, False]
    last = batch["step"] == 1
    assert torch.equal(copied[:2][last[:2]], batch["input_ids"][:2][last[:2]])
    steps = encoded_steps(50, 2)
    priors = TrainingPriors.from_table(table(steps, np.full((10, 4), 40)), VOCAB)
    baselines = BaselineEvaluator(priors)
    baselines.update(batch)
    result = baselines.compute()
    assert result["world_model.exact_cell_accuracy_after_a_step"]["copy_previous"] == 1.0
    assert result["world_model.exact_cell_accuracy_after_a_step"]["unigram_mode"] < 1.0
    different = window_batch(np.stack([first, encoded_steps(3, 3)], axis=1), valid)
    again = BaselineEvaluator(priors)
    again.update(different)
    assert again.compute()["world_model.exact_cell_accuracy_after_a_step"]["copy_previous"] < 0.9
    assert result["world_model.nll_per_token"]["unigram"] > 0
    assert result["mission.exact_match"]["most_frequent"] == 1.0  # every window asks the one training mission


def test_metrics_that_do_not_beat_a_baseline_are_flagged() -> None:
    baselines = {
        "policy.accuracy": {"majority_action": 0.6},
        "world_model.nll_per_token": {"unigram": 1.0},
        "success_rate": {"random_policy": 0.1},
    }
    good = {"policy": {"accuracy": 0.9}, "world_model": {"nll_per_token": 0.5}, "success_rate": 0.8}
    assert compare(good, baselines) == []
    bad = {"policy": {"accuracy": 0.55}, "world_model": {"nll_per_token": 1.2}, "success_rate": 0.8}
    flagged = compare(bad, baselines)
    assert len(flagged) == 2 and flagged[0].startswith("policy.accuracy") and "unigram" in flagged[1]
