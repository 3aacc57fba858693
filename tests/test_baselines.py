"""Trivial baselines: the priors count the training split, the copy baseline copies, flags fire."""

from __future__ import annotations

import gymnasium as gym
import minigrid  # noqa: F401  (registers the environments)
import numpy as np
import pytest
import torch

from anyorder.data.datamodule import EpisodeTable
from anyorder.data.layout import TokenKind
from anyorder.data.tokenizer import TrajectoryTokenizer
from anyorder.data.vocabulary import Vocabulary
from anyorder.eval.baselines import (
    BaselineEvaluator,
    PredictableSplit,
    StepView,
    TrainingPriors,
    compare,
    direction_rule_key,
    previous_step_copy,
    strongest,
)
from anyorder.eval.egomotion import EgoMotion, Motion
from anyorder.eval.metrics import ClusteredMean, paired_difference
from anyorder.eval.tasks import hide_cells
from anyorder.masking.queries import last_step

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
    baselines = BaselineEvaluator(priors, VOCAB)
    baselines.update(batch)
    result = baselines.compute()
    assert result["world_model.exact_cell_accuracy_after_a_step"]["copy_previous"] == 1.0
    assert result["world_model.exact_cell_accuracy_after_a_step"]["unigram_mode"] < 1.0
    different = window_batch(np.stack([first, encoded_steps(3, 3)], axis=1), valid)
    again = BaselineEvaluator(priors, VOCAB)
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


# -- baselines that know the task's structure -------------------------------------------------


def random_walks(level: str, episodes: int, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Encoded steps ``[E * steps, STEP_LENGTH]`` of random walks (mostly forward) in a real env,
    and the episode lengths: consecutive rows are consecutive steps."""
    env = gym.make(level)
    rng = np.random.default_rng(seed)
    rows, lengths = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed * 1000 + episode)
        images, directions, actions = [], [], []
        for _ in range(steps):
            action = int(rng.choice([0, 1, 2, 2, 2, 3, 5]))
            images.append(obs["image"])
            directions.append(obs["direction"])
            actions.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        rows.append(TOKENIZER.encode_steps(np.stack(images), np.array(directions), np.array(actions)))
        lengths.append(len(actions))
    return np.concatenate(rows), np.array(lengths)


@pytest.fixture(scope="module", params=["BabyAI-GoToRedBall-v0", "MiniGrid-DoorKey-8x8-v0"])
def walks(request) -> EpisodeTable:
    steps, lengths = random_walks(request.param, episodes=12, steps=12)
    return EpisodeTable(
        steps=steps.astype(np.int32), offsets=np.cumsum(lengths) - lengths, lengths=lengths,
        missions=np.full((len(lengths), 4), 40), seeds=np.arange(len(lengths)),
    )  # fmt: skip


def consecutive_windows(table: EpisodeTable) -> dict[str, torch.Tensor]:
    """Every two-step window of the table that follows a real step."""
    ends = np.concatenate(
        [offset + np.arange(1, length) for offset, length in zip(table.offsets, table.lengths, strict=True)]
    )
    steps = np.stack([table.steps[ends - 1], table.steps[ends]], axis=1).astype(np.int64)
    return window_batch(steps, np.ones((len(ends), 2), dtype=bool))


def test_the_ego_motion_copy_predicts_every_cell_the_previous_view_shows_in_a_real_environment(walks) -> None:
    batch = consecutive_windows(walks)
    view = StepView.of(batch)
    fill = torch.zeros(148, dtype=torch.long)
    split = PredictableSplit.of(batch, EgoMotion(VOCAB), fill)
    # the geometry is exact: after a move or a turn every cell it maps holds what the moved
    # previous view shows (a pick-up or a toggle changes the world itself: most cells, not all)
    moves = torch.isin(view.previous[:, -1], torch.as_tensor(np.asarray(VOCAB.action_ids)[:3]))
    right = split.ego_copy == batch["input_ids"]
    assert right[split.ego_mapped & moves[:, None]].all()
    assert right[split.ego_mapped].float().mean() > 0.97
    direction = batch["kind"] == TokenKind.DIRECTION
    assert torch.equal(split.ego_copy[direction & view.positions], view.last[:, 147])
    motion = EgoMotion(VOCAB).motion(view.previous[:, :147].view(-1, 49, 3), view.previous[:, -1])
    mapped_cells = split.ego_mapped.sum(dim=1) // 3
    assert (mapped_cells[motion == Motion.FORWARD] == 42).all()  # a row leaves the view
    assert (mapped_cells[(motion == Motion.LEFT) | (motion == Motion.RIGHT)] == 16).all()  # a quarter turn
    assert (mapped_cells[motion == Motion.STAY] == 49).all()
    assert (motion == Motion.FORWARD).any() and (motion == Motion.LEFT).any() and (motion == Motion.STAY).any()


def test_the_structured_baselines_beat_the_frequency_ones_on_real_steps(walks) -> None:
    priors = TrainingPriors.from_table(walks, VOCAB)
    assert priors.ego_weight > 0.99  # the moved view is (almost) always right where it says anything
    baselines = BaselineEvaluator(priors, VOCAB)
    batch = consecutive_windows(walks)
    unseen = int(VOCAB.object_ids[0])
    inpainting = hide_cells(batch, 0.25, unseen, last_step(batch), torch.Generator().manual_seed(0))
    baselines.update(batch, inpainting=inpainting)
    result = baselines.compute()
    # a random walk also bumps, toggles and picks up (which changes the view like a move): only a
    # turn of the direction token is certain, and the rule gets every one
    assert result["inverse.accuracy"]["direction_rule"] > result["inverse.accuracy"]["majority_action"] + 0.2
    view = StepView.of(batch)
    key = direction_rule_key(EgoMotion(VOCAB), view.previous, view.last)
    certain = key // 2 != 0  # the direction token turned
    assert torch.equal(priors.direction_rule[key][certain], view.previous[certain, -1])
    nll = result["world_model.nll_per_token"]
    assert nll["ego_motion_mixture"] < nll["position_unigram"] < nll["unigram"]
    assert result["world_model.exact_cell_accuracy_ego_mapped"]["ego_motion_copy"] > 0.99  # pick-ups change a cell
    after = result["world_model.exact_cell_accuracy_after_a_step"]
    assert after["ego_motion_copy"] > max(after["copy_previous"], after["unigram_mode"])
    assert result["inpainting.exact_cell_accuracy"]["ego_motion_copy"] > 0.5  # not 0 by construction
    intervals = baselines.intervals()["world_model.nll_per_token"]["ego_motion_mixture"]
    assert intervals[0] <= nll["ego_motion_mixture"] <= intervals[1]
    assert strongest("world_model.nll_per_token", nll) == ("ego_motion_mixture", nll["ego_motion_mixture"])


def test_a_clustered_mean_counts_episodes_not_items_in_its_interval() -> None:
    one, many = ClusteredMean(), ClusteredMean()
    values = torch.tensor([1.0, 0.0] * 50)
    one.update(values, torch.arange(100))  # 100 episodes of one item
    # the same episodes with 10 identical items each, arriving over two batches
    repeated, clusters = values.repeat_interleave(10), torch.arange(100).repeat_interleave(10)
    many.update(repeated[:555], clusters[:555])
    many.update(repeated[555:], clusters[555:])  # episode 55 is split across the batches
    assert one.compute() == many.compute() == 0.5 and many.clusters == 100
    assert one.interval() == pytest.approx(many.interval())  # copies of an item add no information
    low, high = one.interval()
    # t_{0.975, 99} = 1.984; the ratio estimator's variance is n/(n-1) * sum r^2 / C^2 = 0.25/99
    assert low < 0.5 < high and high - low == pytest.approx(2 * 1.984 * 0.5 / np.sqrt(99), rel=1e-3)


def test_a_paired_difference_cancels_what_the_model_and_the_baseline_share() -> None:
    generator = torch.Generator().manual_seed(0)
    difficulty = torch.rand(200, generator=generator)  # per episode, shared by both
    model, baseline = ClusteredMean(), ClusteredMean()
    episodes = torch.arange(200)
    model.update(difficulty + 0.02, episodes)
    baseline.update(difficulty, episodes)
    difference, low, _ = paired_difference(model, baseline)
    assert difference == pytest.approx(0.02) and low > 0  # a constant edge is certain when paired
    assert model.interval()[0] < baseline.compute()  # though the marginal intervals overlap


def test_a_metric_that_beats_its_baseline_by_noise_only_is_flagged() -> None:
    baselines = {"policy.accuracy": {"majority_action": 0.6, "rule": 0.8}}
    values = {"policy": {"accuracy": 0.82}}
    assert compare(values, baselines, {"policy.accuracy": [0.81, 0.83]}) == []
    flagged = compare(values, baselines, {"policy.accuracy": [0.75, 0.89]})
    assert len(flagged) == 1 and "does not beat rule 0.800" in flagged[0]  # against the strongest
    # measured on the same episodes, the paired difference decides, whatever the marginal interval
    assert (
        compare(values, baselines, {"policy.accuracy": [0.75, 0.89]}, {"policy.accuracy": {"rule": [0.02, 0.01, 0.03]}})
        == []
    )
    paired = {"policy.accuracy": {"rule": [0.02, -0.01, 0.05]}}
    assert len(compare(values, baselines, {"policy.accuracy": [0.81, 0.83]}, paired)) == 1


def test_imagination_feeds_the_model_its_own_views_and_scores_ego_mapped_cells(walks) -> None:
    from anyorder.eval.imagination import imagine

    fill = TrainingPriors.from_table(walks, VOCAB).position_mode
    oracle = imagine(lambda batch, query: batch["input_ids"], TOKENIZER, walks, fill, horizon=3)
    assert oracle["k"] == [1, 2, 3] and oracle["rollouts"] > 0
    assert oracle["model"] == [1.0, 1.0, 1.0]  # a perfect world model stays perfect open loop
    assert oracle["ego_motion_copy"][0] > 0.97  # one step of the copy: the geometry is exact
    seen: list[torch.Tensor] = []

    def blind(batch: dict[str, torch.Tensor], query: torch.Tensor) -> torch.Tensor:
        """Predicts every hidden cell as the first object id; records what it was shown."""
        seen.append(batch["input_ids"].clone())
        return torch.where(query, int(VOCAB.object_ids[0]), batch["input_ids"])

    blinded = imagine(blind, TOKENIZER, walks, fill, horizon=3)
    assert blinded["model"][0] < 0.5
    # the window of k = 2 holds the model's own step 1 (all "unseen"), not the true one
    earlier = seen[1][:, TOKENIZER.layout.prefix_length : TOKENIZER.layout.prefix_length + 147]
    assert (earlier == int(VOCAB.object_ids[0])).all()
