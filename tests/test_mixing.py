"""Several levels in one training set: per-batch proportions, families, and a model trained on a
mix evaluated on a held-out family with that family's own windows and expert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anyorder.data.datamodule import TrajectoryDataModule
from anyorder.data.mixing import MixedBatchSampler, level_family, normalised_weights, per_batch_counts
from anyorder.data.vocabulary import CLASSIC_WORDS, MISSION_WORDS, Vocabulary
from anyorder.errors import ConfigError

TWO_LEVELS = ["MiniGrid-DoorKey-5x5-v0", "MiniGrid-Unlock-v0"]


@pytest.mark.parametrize(
    ("level", "family"),
    [
        ("MiniGrid-DoorKey-8x8-v0", "DoorKey"),
        ("MiniGrid-DoorKey-5x5-v0", "DoorKey"),
        ("MiniGrid-KeyCorridorS3R3-v0", "KeyCorridor"),
        ("MiniGrid-LavaCrossingS9N1-v0", "LavaCrossing"),
        ("MiniGrid-MultiRoom-N6-v0", "MultiRoom"),
        ("MiniGrid-Fetch-8x8-N3-v0", "Fetch"),
        ("MiniGrid-FourRooms-v0", "FourRooms"),
        ("MiniGrid-UnlockPickup-v0", "UnlockPickup"),
        ("BabyAI-GoToRedBall-v0", "GoToRedBall"),
    ],
)
def test_a_family_is_the_id_without_its_size(level: str, family: str) -> None:
    assert level_family(level) == family


def test_each_level_of_a_mixture_has_its_own_success_metric() -> None:
    from anyorder.eval.callback import short_level_name

    assert short_level_name("MiniGrid-DoorKey-8x8-v0") == "DoorKey-8x8"
    assert short_level_name("BabyAI-GoToRedBall-v0") == "GoToRedBall"


def test_per_batch_counts_follow_the_weights() -> None:
    assert per_batch_counts(normalised_weights(["a", "b"], None), 32).tolist() == [16, 16]
    assert per_batch_counts(normalised_weights(["a", "b", "c"], [2, 1, 1]), 10).tolist() == [5, 3, 2]
    with pytest.raises(ConfigError, match=r"data\.level_weights"):
        normalised_weights(["a", "b"], [1.0, -1.0])
    with pytest.raises(ConfigError, match=r"data\.level_weights"):
        normalised_weights(["a", "b"], [1.0])
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        per_batch_counts(normalised_weights(["a", "b", "c"], [10, 1, 1]), 4)


def test_the_sampler_fills_every_batch_in_proportion_and_cycles_a_small_level() -> None:
    sampler = MixedBatchSampler([(0, 1000), (1000, 30)], np.array([6, 2]), seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 1030 // 8
    for batch in batches:
        assert (batch < 1000).sum() == 6 and (batch >= 1000).sum() == 2 and len(set(batch)) == 8
    first = np.concatenate(batches)
    assert len(set(first[first < 1000])) == len(first[first < 1000])  # the large level: no repeats within an epoch


def test_a_two_level_datamodule_mixes_each_training_batch(tmp_path: Path) -> None:
    module = TrajectoryDataModule(
        levels=TWO_LEVELS, level_weights=[3, 1], num_episodes=20, root=tmp_path, shard_size=10,
        num_workers=1, window=2, mission_length=13, batch_size=8,
        vocabulary=Vocabulary.structured([*MISSION_WORDS, *CLASSIC_WORDS]),
    )  # fmt: skip
    module.prepare_data()
    module.setup("fit")
    assert [spec.directory.name.split("-planner-")[0] for spec in module.specs] == TWO_LEVELS
    ranges = module.level_ranges["train"]
    boundary = ranges[1][0]
    vocab = module.tokenizer.vocabulary
    use = vocab.word_ids["use"]  # DoorKey's mission starts with "use"; Unlock's with "open"
    for batch in module.train_dataloader():
        from_doorkey = (batch["input_ids"][:, 1] == use).sum().item()
        assert from_doorkey == 6 and len(batch["input_ids"]) == 8
    assert boundary > 0 and len(module.datasets["val"]) > 0
    held_out = module.with_levels(["MiniGrid-Empty-5x5-v0"])
    assert held_out.tokenizer is module.tokenizer and held_out.spec.expert == "planner"


@pytest.mark.slow
def test_train_on_a_mix_then_evaluate_a_held_out_family(tmp_path: Path) -> None:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    run = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "anyorder.train", "debug=fast", f"paths.data_dir={tmp_path / 'data'}",
         f"hydra.run.dir={run}", f"data.levels=[{','.join(TWO_LEVELS)}]", "data.mission_length=13"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = set(EventAccumulator(str(run / "tensorboard")).Reload().Tags()["scalars"])
    assert {"eval/success_rate", "eval/success_rate/DoorKey-5x5", "eval/success_rate/Unlock"} <= scalars
    evaluation = subprocess.run(
        [sys.executable, "-m", "anyorder.evaluate", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
         f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'eval'}",
         "eval.level=MiniGrid-Empty-5x5-v0", "eval.num_episodes=2", "eval.query_batches=1",
         "eval.occlusion_fractions=[0.0]", "eval.progress=false"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["trained_levels"] == TWO_LEVELS and metrics["held_out_family"]
    assert "MiniGrid-Empty-5x5-v0-planner-" in metrics["offline_dataset"]
    assert metrics["expert"]["name"] == "planner" and metrics["expert"]["success_rate"] == 1.0
