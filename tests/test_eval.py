"""Evaluation: the rollout loop, occlusion, decoding, held-out seeds, and a trained model's edge."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed.checkpoint as dcp
from minigrid.core.constants import OBJECT_TO_IDX

from anyorder.data.generate import rollout_expert
from anyorder.data.layout import TokenKind
from anyorder.data.tokenizer import TrajectoryTokenizer
from anyorder.data.vocabulary import Vocabulary
from anyorder.errors import ConfigError
from anyorder.eval.baselines import lookup
from anyorder.eval.checkpoint import load_trained
from anyorder.eval.metrics import area_under_curve, difference_interval, wilson_interval
from anyorder.eval.occlusion import OCCLUDED_CODE, OcclusionWrapper
from anyorder.eval.rollout import ExpertPolicy, ModelPolicy, nucleus, run_rollouts
from anyorder.eval.seeds import EVAL_BLOCK, check_held_out, eval_seeds
from anyorder.eval.tasks import TaskEvaluator
from anyorder.models.decoding import iterative_unmask, kind_constraints

LEVEL = "BabyAI-GoToRedBall-v0"
HELD_OUT = list(range(5_000_000, 5_000_096))


class RandomPolicy:
    """Uniform over minigrid's 7 actions."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self, slot: int, env: gym.Env) -> None:
        pass

    def act(self, batch: dict, slots: Sequence[int]) -> np.ndarray:
        return self.rng.integers(0, 7, size=len(slots))


@pytest.fixture(scope="module")
def tokenizer() -> TrajectoryTokenizer:
    return TrajectoryTokenizer(Vocabulary.structured(), window=2, mission_length=12)


def test_scripted_bot_reproduces_the_bot(tokenizer: TrajectoryTokenizer) -> None:
    seeds = list(range(900, 940))
    batched = run_rollouts(ExpertPolicy(LEVEL), tokenizer, LEVEL, seeds, num_envs=16)
    reference = {seed: rollout_expert(LEVEL, seed) for seed in seeds}
    assert sorted(batched.seeds) == seeds
    for seed, success, length in zip(batched.seeds, batched.success, batched.lengths, strict=True):
        assert success == reference[seed].success and length == reference[seed].num_steps
    assert batched.success_rate == pytest.approx(np.mean([e.success for e in reference.values()]))


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_occlusion_hides_exactly_the_fraction_as_mask_tokens(fraction: float, tokenizer: TrajectoryTokenizer) -> None:
    env = OcclusionWrapper(gym.make(LEVEL), fraction)
    raw = gym.make(LEVEL)
    vocab = tokenizer.vocabulary
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        truth, _ = raw.reset(seed=seed)
        for _ in range(4):
            visible = truth["image"][..., 0] != OBJECT_TO_IDX["unseen"]
            hidden = obs["occluded"]
            assert hidden.sum() == round(fraction * visible.sum())
            assert not (hidden & ~visible).any()
            assert (obs["image"][hidden] == OCCLUDED_CODE).all()
            ids = tokenizer.encode_steps(obs["image"][None], [obs["direction"]], [0], hidden[None])[0]
            cells = ids[:147].reshape(7, 7, 3)  # [y, x, attribute]
            assert (cells[hidden.T] == vocab.mask_id).all()
            assert not (cells[~hidden.T] == vocab.mask_id).any()
            assert not (cells[hidden.T][:, 0] == vocab.object_ids[OBJECT_TO_IDX["unseen"]]).any()
            action = int(raw.action_space.sample())
            obs, *_ = env.step(action)
            truth, *_ = raw.step(action)


def test_iterative_unmasking_decodes_in_rounds_within_each_kind() -> None:
    vocab = Vocabulary.structured()
    tokenizer = TrajectoryTokenizer(vocab, window=1, mission_length=6)
    obs = np.zeros((1, 7, 7, 3), dtype=np.uint8)
    obs[0, :, :, 0] = OBJECT_TO_IDX["wall"]
    batch = tokenizer.encode_window("go to the red ball", obs, [1], [2])
    target = batch["input_ids"]
    query = batch["kind"] != TokenKind.PAD
    query &= batch["kind"] != TokenKind.SPECIAL
    calls = []

    def oracle(ids: torch.Tensor) -> torch.Tensor:  # confident about the truth, more so further right
        calls.append((ids == vocab.mask_id).sum().item())
        logits = torch.zeros(*ids.shape, vocab.size)
        logits.scatter_(2, target[..., None], 5.0 + torch.linspace(0, 1, ids.shape[1])[None, :, None])
        return logits

    decoded = iterative_unmask(oracle, target, query, batch["kind"], kind_constraints(vocab), vocab.mask_id, steps=3)
    assert torch.equal(decoded, target)
    total = int(query.sum())
    # round r reveals ceil(remaining / rounds left): 154 -> 102 -> 51 -> 0
    first = total - -(-total // 3)
    assert calls == [total, first, first - -(-first // 2)]

    def liar(ids: torch.Tensor) -> torch.Tensor:  # always says "action:done", which fits no observation
        logits = torch.zeros(*ids.shape, vocab.size)
        logits[..., int(vocab.action_ids[-1])] = 10.0
        return logits

    decoded = iterative_unmask(liar, target, query, batch["kind"], kind_constraints(vocab), vocab.mask_id, steps=2)
    objects = batch["kind"] == TokenKind.OBJECT
    assert torch.isin(decoded[objects], torch.as_tensor(vocab.object_ids)).all()


def test_joint_cell_decoding_never_predicts_an_impossible_cell() -> None:
    """A model sure of "wall" for the object and of "red" for the colour, each on its own, would
    decode red walls; decoding the cell jointly over the triples seen in the data cannot."""
    from minigrid.core.constants import COLOR_TO_IDX

    from anyorder.eval.baselines import impossible_cells
    from anyorder.eval.metrics import cell_units

    vocab = Vocabulary.structured()
    tokenizer = TrajectoryTokenizer(vocab, window=1, mission_length=6)
    obs = np.zeros((1, 7, 7, 3), dtype=np.uint8)
    obs[0, :, :] = (OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0)
    obs[0, 2:4, 2:4] = (OBJECT_TO_IDX["ball"], COLOR_TO_IDX["red"], 0)
    batch = tokenizer.encode_window("go to the red ball", obs, [1], [2])
    cells = batch["cell"] >= 0
    seen = batch["input_ids"][cells].view(-1, 3)
    triples = torch.unique(seen, dim=0)  # (wall, grey, -) and (ball, red, -)
    assert len(triples) == 2
    wall = seen[0, 0]  # the corner cell is a wall
    red = seen[seen[:, 0] != wall][0, 1]  # the colour of a ball

    def stubborn(ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, vocab.size)
        logits[..., wall] = 4.0
        logits[..., red] = 3.0
        return logits

    allowed = kind_constraints(vocab)
    args = (batch["input_ids"], cells, batch["kind"], allowed, vocab.mask_id, 2)
    independent = iterative_unmask(stubborn, *args)
    assert impossible_cells(independent, cells, triples).all()  # every cell a red wall
    joint = iterative_unmask(stubborn, *args, cell_unit=cell_units(batch), triples=triples)
    assert not impossible_cells(joint, cells, triples).any()


def test_the_inverse_query_hides_the_next_action_too() -> None:
    from anyorder.masking.queries import inverse_query, inverse_target, policy_query

    tokenizer = TrajectoryTokenizer(Vocabulary.structured(), window=3, mission_length=6)
    steps = np.zeros((2, 3, 149), dtype=np.int64)
    valid = np.array([[True, True, True], [False, False, True]])  # the second has one real step
    batch = tokenizer.assemble(np.full((2, 6), 40), steps, valid)
    actions = batch["kind"] == TokenKind.ACTION
    target, query = inverse_target(batch), inverse_query(batch)
    assert target[0].sum() == 1 and (batch["step"][0][target[0]] == 1).all()
    assert torch.equal(query[0], target[0] | policy_query(batch)[0])  # a_{T-1} and a_T hidden
    assert not query[1].any()  # no previous step: no inverse question
    assert (actions | ~query).all()


def test_dev_and_test_seed_blocks_are_disjoint_and_held_out(small_spec) -> None:
    from anyorder.data.episodes import read_meta

    meta = read_meta(small_spec.directory)
    dev, test = eval_seeds(meta["seed"], "dev", EVAL_BLOCK), eval_seeds(meta["seed"], "test", EVAL_BLOCK)
    assert len(dev) == len(test) >= 1000 and not set(dev) & set(test)
    dataset = [range(*info["seed_range"]) for info in meta["splits"].values()]
    assert {"train", "val", "test"} <= set(meta["splits"])
    for block in (dev, test):
        check_held_out(LEVEL, block, meta)
        assert all(block.start >= seeds.stop or block.stop <= seeds.start for seeds in dataset)
    assert eval_seeds(meta["seed"], "dev", 16) == range(dev.start, dev.start + 16)
    for split, info in meta["splits"].items():  # a block that met any dataset split would be refused
        low = info["seed_range"][0]
        with pytest.raises(ConfigError, match=rf"eval\.split: .* overlap the {split} seeds"):
            check_held_out(LEVEL, range(low, low + 10), meta)
    check_held_out("BabyAI-GoToLocal-v0", range(0, 100), meta)  # another level: nothing was trained there
    with pytest.raises(ConfigError, match=r"eval\.split"):
        eval_seeds(0, "train", 10)
    with pytest.raises(ConfigError, match=r"eval\.num_episodes"):
        eval_seeds(0, "dev", EVAL_BLOCK + 1)


def test_nucleus_keeps_the_smallest_most_likely_set_reaching_top_p() -> None:
    probabilities = torch.tensor([[0.15, 0.5, 0.05, 0.3], [0.05, 0.9, 0.03, 0.02]])
    kept = nucleus(probabilities, 0.8) > 0
    assert kept.tolist() == [[False, True, False, True], [False, True, False, False]]
    assert (nucleus(probabilities, 0.81) > 0)[0].tolist() == [True, True, False, True]
    assert torch.equal(nucleus(probabilities, 1.0), probabilities)
    draws = torch.multinomial(
        nucleus(probabilities, 0.8), 1000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    assert set(draws[0].tolist()) == {1, 3} and set(draws[1].tolist()) == {1}
    with pytest.raises(ConfigError, match="top_p"):
        ModelPolicy(torch.nn.Linear(1, 1), top_p=0.0)


def test_confidence_interval_and_area() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.25 < high < 0.35
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.404, abs=1e-3) and high == pytest.approx(0.596, abs=1e-3)
    assert area_under_curve([0, 0.1, 0.25, 0.5], [0.8] * 4) == pytest.approx(0.8)
    assert area_under_curve([0, 0.5], [1.0, 0.0]) == pytest.approx(0.5)


def test_the_difference_of_two_recipes_carries_welchs_interval() -> None:
    # equal spreads and sizes: Welch's degrees of freedom are 2n - 2 = 4, t = 2.776
    difference, low, high = difference_interval([0.90, 0.95, 1.00], [0.80, 0.85, 0.90])
    half = 2.776 * (2 * 0.0025 / 3) ** 0.5
    assert difference == pytest.approx(0.10) and (low, high) == pytest.approx((0.10 - half, 0.10 + half))
    # one spread far larger: the degrees of freedom fall towards its n - 1 = 2 (t = 4.303), not 4
    _, low, high = difference_interval([0.5, 0.9, 1.3], [0.90, 0.90, 0.91])
    assert (high - low) / 2 > 4.0 * (0.16 / 3 + 0.0000333 / 3) ** 0.5
    assert all(map(math.isnan, difference_interval([0.9], [0.8, 0.7])[1:]))


def test_trained_policy_beats_a_random_policy(trained_run) -> None:
    run = load_trained(trained_run.checkpoint, str(trained_run.spec.root))
    tokenizer = run.datamodule.tokenizer
    model = run_rollouts(ModelPolicy(run.module), tokenizer, LEVEL, HELD_OUT, num_envs=16)
    chance = run_rollouts(RandomPolicy(), tokenizer, LEVEL, HELD_OUT, num_envs=16)
    print(f"closed-loop success: model {model.success_rate:.3f}, random {chance.success_rate:.3f}")
    assert model.success_rate > chance.success_rate + 0.1, (model.success_rate, chance.success_rate)


def test_a_sharded_checkpoint_directory_loads_the_same_weights(trained_run, tmp_path: Path) -> None:
    """FSDP's sharded state dict is a torch.distributed.checkpoint directory, not a file: the
    evaluation gathers it (written here in one process, the layout Lightning's FSDPStrategy uses)."""
    checkpoint = torch.load(trained_run.checkpoint, map_location="cpu", weights_only=False)
    sharded = tmp_path / "run" / "checkpoints" / "last.ckpt"
    dcp.save({"model": checkpoint.pop("state_dict")}, checkpoint_id=sharded)
    torch.save({"global_step": checkpoint["global_step"]}, sharded / "meta.pt")
    shutil.copytree(trained_run.directory / ".hydra", tmp_path / "run" / ".hydra")
    from_file = load_trained(trained_run.checkpoint, str(trained_run.spec.root)).module.state_dict()
    from_directory = load_trained(sharded, str(trained_run.spec.root)).module.state_dict()
    assert from_file.keys() == from_directory.keys()
    for key, value in from_file.items():
        torch.testing.assert_close(from_directory[key], value, rtol=0, atol=0, msg=key)


def test_a_trained_model_beats_the_trivial_baselines_offline(trained_run) -> None:
    """Not merely below a fresh model (which a unigram clears): below the unigram's NLL, above the
    majority action, and above copying the previous observation, on the same windows."""
    from anyorder.eval.baselines import TrainingPriors

    run = load_trained(trained_run.checkpoint, str(trained_run.spec.root))
    run.datamodule.setup("fit")
    vocab = run.datamodule.tokenizer.vocabulary
    priors = TrainingPriors.from_table(run.datamodule.datasets["train"].table, vocab)
    evaluator = TaskEvaluator(run.module, vocab, decode_steps=2, occlusion_fractions=(0.0,), priors=priors)
    results = evaluator.run(run.datamodule.val_dataloader(), max_batches=8)
    baselines = results["baselines"]
    assert results["world_model"]["nll_per_token"] < baselines["world_model.nll_per_token"]["unigram"]
    assert results["world_model"]["impossible_cell_share"] == 0.0  # cells are decoded jointly
    assert results["policy"]["accuracy"] > baselines["policy.accuracy"]["majority_action"] + 0.05
    assert (
        results["world_model"]["exact_cell_accuracy"]
        > baselines["world_model.exact_cell_accuracy"]["unigram_mode"] + 0.05
    )


def test_eval_command_writes_table_metrics_and_figures(trained_run, tmp_path: Path) -> None:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    common = [
        sys.executable, "-m", "anyorder.evaluate", f"ckpt_path={trained_run.checkpoint}",
        f"paths.data_dir={trained_run.spec.root}", "eval.num_episodes=8", "eval.num_envs=8",
        "eval.query_batches=1", "eval.occlusion_fractions=[0.0,0.5]", "eval.progress=false",
    ]  # fmt: skip
    result = subprocess.run(
        [*common, f"hydra.run.dir={tmp_path / 'eval'}", "eval.render=true", "eval.render_episodes=1"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "success rate" in result.stdout and "95% intervals" in result.stdout
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"policy", "world_model", "inverse", "mission", "inpainting",
                                     "robustness_action_accuracy"}  # fmt: skip
    for key in ("policy.accuracy", "world_model.exact_cell_accuracy_ego_mapped", "inverse.accuracy"):
        low, high = metrics["intervals"][key]  # every offline metric carries its interval
        assert low <= lookup(metrics["tasks"], key) <= high, key
    imagined = metrics["imagination"]
    assert imagined["k"] == [1, 2, 3, 4, 5] and len(imagined["model"]) == 5
    assert imagined["ego_motion_copy"][0] > 0.95  # one step of the copy: the geometry is exact
    assert metrics["seeds"] == [5_000_000, 5_000_008]  # the first 8 seeds of the dev block
    assert metrics["success_ci95"] == pytest.approx(wilson_interval(round(metrics["success_rate"] * 8), 8))
    baselines = metrics["baselines"]  # every headline metric stands beside its trivial baseline
    for key in ("success_rate", "policy.accuracy", "inverse.accuracy", "world_model.nll_per_token",
                "world_model.exact_cell_accuracy_after_a_step", "mission.exact_match"):  # fmt: skip
        assert key in baselines and all(0 <= v < 100 for v in baselines[key].values()), key
    assert "ego_motion_copy" in baselines["world_model.exact_cell_accuracy_after_a_step"]
    assert "direction_rule" in baselines["inverse.accuracy"]
    assert (tmp_path / "eval" / "figures" / "world_model_0.png").is_file()
    assert "vs majority_action" in result.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from anyorder.evaluate import HPARAM_METRICS

    board = EventAccumulator(str(tmp_path / "eval" / "tensorboard")).Reload()
    assert set(board.Tags()["scalars"]) == set(HPARAM_METRICS)  # headline metrics only, not 26 one-point charts
    assert "eval/metrics/text_summary" in board.Tags()["tensors"]  # the whole table, as text
    assert board.PluginTagToContent("hparams")  # and the HParams session of this evaluation
    assert all(line.split(" ")[0] in baselines for line in metrics["below_baseline"])
    episodes = pd.read_csv(tmp_path / "eval" / "episodes.csv")  # every episode, for paired comparisons
    model = episodes[episodes["policy"] == "model"]
    assert sorted(set(model["seed"])) == list(range(5_000_000, 5_000_008))
    for fraction, rate in zip(metrics["robustness"]["fractions"], metrics["robustness"]["success_rate"], strict=True):
        assert model[model["occlusion"] == fraction]["success"].mean() == pytest.approx(rate)
    for policy in ("expert", "random_policy"):
        played = episodes[episodes["policy"] == policy]
        assert played["success"].mean() == pytest.approx(metrics[policy]["success_rate"])
    figures = tmp_path / "eval" / "figures"
    assert (figures / "robustness.png").is_file() and list(figures.glob("world_model_*.png"))
    assert list(figures.glob("rollout_seed*.gif"))

    transfer = subprocess.run(
        [*common, f"hydra.run.dir={tmp_path / 'transfer'}", "eval.level=BabyAI-GoToLocal-v0", "eval.num_episodes=4"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert transfer.returncode == 0, transfer.stderr[-3000:]
    moved = json.loads((tmp_path / "transfer" / "metrics.json").read_text())
    assert moved["level"] == "BabyAI-GoToLocal-v0" and moved["trained_levels"] == [LEVEL]
    assert moved["held_out_family"] and "BabyAI-GoToLocal-v0-bot-" in moved["offline_dataset"]  # its own windows

    assert metrics["split"] == "dev" and metrics["offline_split"] == "val"
    wrong = subprocess.run([*common, "eval.split=train"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "error: eval.split" in wrong.stderr
