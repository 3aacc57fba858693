"""The experts: the planner solves the classic levels from what it sees, its full-view plans are
optimal (checked by an exhaustive search over simulator copies), and levels it cannot plan
are refused in one line."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

from anyorder.data.generate import DatasetSpec, generate_dataset, rollout_expert
from anyorder.data.tokenizer import TrajectoryTokenizer
from anyorder.data.vocabulary import Vocabulary
from anyorder.errors import ConfigError
from anyorder.experts import EXPERTS, resolve_expert
from anyorder.experts.exhaustive import optimal_length
from anyorder.experts.planner import Planner, visible_cells

CONF = Path(__file__).resolve().parents[1] / "anyorder" / "conf"
CLASSIC_CONFIGS = sorted((CONF / "data").glob("minigrid_*.yaml"))
CLASSIC_LEVELS = [OmegaConf.load(path).level for path in CLASSIC_CONFIGS]


def reset(level: str, seed: int) -> tuple[gym.Env, dict]:
    env = gym.make(level)
    with contextlib.redirect_stdout(io.StringIO()):
        obs, _ = env.reset(seed=seed)
    return env, obs


def test_the_five_required_levels_have_data_configs() -> None:
    required = {"DoorKey-8x8", "KeyCorridorS3R3", "UnlockPickup", "LavaCrossingS9N1", "FourRooms"}
    assert {level.removeprefix("MiniGrid-").removesuffix("-v0") for level in CLASSIC_LEVELS} >= required


@pytest.mark.parametrize("level", CLASSIC_LEVELS)
def test_the_planner_solves_20_seeds_of_each_configured_level(level: str) -> None:
    episodes = [rollout_expert(level, seed, "planner") for seed in range(20)]
    assert [e.seed for e in episodes if not e.success] == []
    env, _ = reset(level, 0)
    assert max(e.num_steps for e in episodes) < env.unwrapped.max_steps


@pytest.mark.parametrize("level", ["MiniGrid-DoorKey-5x5-v0", "MiniGrid-Unlock-v0"])
def test_full_view_plans_are_optimal_against_an_exhaustive_simulator_search(level: str) -> None:
    seeds = range(6)
    optimum = [optimal_length(reset(level, seed)[0].unwrapped) for seed in seeds]
    assert None not in optimum
    privileged = [rollout_expert(level, seed, "planner_privileged") for seed in seeds]
    seeing = [rollout_expert(level, seed, "planner") for seed in seeds]
    assert all(e.success for e in privileged + seeing)
    assert [e.num_steps for e in privileged] == optimum
    # the planner that sees only its view explores, so it can only be slower
    assert all(e.num_steps >= best for e, best in zip(seeing, optimum, strict=True))


def test_the_belief_is_read_from_the_view_and_matches_the_world() -> None:
    """The planner's belief comes from the egocentric image; mapped to world cells it agrees with
    the true grid wherever the image shows something, and shows nothing beyond the view."""
    env, obs = reset("MiniGrid-FourRooms-v0", 3)
    for action in [2, 2, 1, 2, 2, 0, 2]:
        x, y, codes = visible_cells(env.unwrapped, obs["image"])
        truth = env.unwrapped.grid.encode()
        assert len(x) > 5 and np.array_equal(truth[x, y], codes)
        assert len(x) < 49  # never the whole grid
        obs, *_ = env.step(action)


def test_a_stochastic_level_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as error:
        resolve_expert("auto", "MiniGrid-Dynamic-Obstacles-6x6-v0")
    message = str(error.value)
    assert "MiniGrid-Dynamic-Obstacles-6x6-v0" in message and "stochastic" in message and "\n" not in message
    with pytest.raises(ConfigError, match="Dynamic-Obstacles"):
        DatasetSpec("MiniGrid-Dynamic-Obstacles-5x5-v0", 10, seed=0, root=Path("unused"))


def test_expert_choice_follows_the_level() -> None:
    assert resolve_expert("auto", "BabyAI-GoToRedBall-v0") == "bot"
    assert resolve_expert("auto", "MiniGrid-DoorKey-8x8-v0") == "planner"
    with pytest.raises(ConfigError, match=r"data\.expert.*needs the planner"):
        resolve_expert("bot", "MiniGrid-DoorKey-8x8-v0")
    with pytest.raises(ConfigError, match="no task for MiniGrid-MemoryS7-v0"):
        resolve_expert("auto", "MiniGrid-MemoryS7-v0")
    with pytest.raises(ConfigError, match="unknown expert 'oracle'"):
        resolve_expert("oracle", "MiniGrid-DoorKey-8x8-v0")


def test_the_expert_is_in_the_dataset_key_and_meta(tmp_path: Path) -> None:
    spec = DatasetSpec("MiniGrid-DoorKey-5x5-v0", 12, seed=0, root=tmp_path, shard_size=5)
    privileged = DatasetSpec("MiniGrid-DoorKey-5x5-v0", 12, seed=0, root=tmp_path, expert="planner_privileged")
    assert "-planner-" in spec.key and spec.directory != privileged.directory
    meta = (generate_dataset(spec, progress=False) / "meta.json").read_text()
    assert '"expert": "planner"' in meta


def test_episodes_the_planner_gives_up_on_are_kept_as_failures(tmp_path: Path, monkeypatch) -> None:
    """A planner out of search budget ends its episode unsuccessfully; every shard still holds
    all of its seeds (the completeness check) and training filters the failures out."""
    monkeypatch.setitem(EXPERTS, "planner", lambda: Planner(budget=5))
    spec = DatasetSpec("MiniGrid-DoorKey-5x5-v0", 10, seed=1, root=tmp_path, shard_size=4)
    import json

    meta = json.loads((generate_dataset(spec, progress=False) / "meta.json").read_text())
    assert sum(info["episodes"] for info in meta["splits"].values()) == 10
    assert sum(info["successful"] for info in meta["splits"].values()) == 0


def test_the_configured_vocabulary_covers_the_classic_missions_and_refuses_new_words() -> None:
    words = OmegaConf.load(CONF / "vocabulary" / "structured.yaml").words
    tokenizer = TrajectoryTokenizer(Vocabulary.structured(words), window=2, mission_length=13)
    for level in [*CLASSIC_LEVELS, "MiniGrid-Fetch-8x8-N3-v0", "MiniGrid-PutNear-8x8-N3-v0"]:
        for seed in range(5):
            _, obs = reset(level, seed)
            ids = tokenizer.encode_mission(obs["mission"])
            assert tokenizer.vocabulary.unk_id not in ids
    babyai_only = TrajectoryTokenizer(Vocabulary.structured(), window=2, mission_length=13)
    assert babyai_only.vocabulary.size < tokenizer.vocabulary.size  # checkpoints from before keep their size
    with pytest.raises(ConfigError, match=r"vocabulary\.words.*lava"):
        babyai_only.encode_mission("avoid the lava and get to the green goal square")
