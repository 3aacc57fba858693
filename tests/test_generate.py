"""Generation: disjoint seed splits in the metadata, real bot episodes, resume after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from anyorder.data.episodes import read_shard
from anyorder.data.generate import DatasetSpec, generate_dataset, rollout_expert
from anyorder.errors import ConfigError

LEVELS = {
    "babyai_gotoredball": "BabyAI-GoToRedBall-v0",
    "babyai_gotolocal": "BabyAI-GoToLocal-v0",
    "babyai_pickuploc": "BabyAI-PickupLoc-v0",
    "babyai_putnextlocal": "BabyAI-PutNextLocal-v0",
}


def test_metadata_records_disjoint_seed_ranges(small_spec: DatasetSpec) -> None:
    meta = json.loads((small_spec.directory / "meta.json").read_text())
    ranges = [range(*meta["splits"][s]["seed_range"]) for s in ("train", "val", "test")]
    assert sum(len(r) for r in ranges) == 60
    assert not set(ranges[0]) & set(ranges[1]) and not set(ranges[1]) & set(ranges[2])
    seen = {
        s: {e.seed for name in meta["splits"][s]["shards"] for e in read_shard(small_spec.directory / name)}
        for s in ("train", "val", "test")
    }
    for split, seeds in seen.items():
        assert seeds == set(range(*meta["splits"][split]["seed_range"]))
    assert meta["expert"] == "bot" and meta["format_version"] == 1


@pytest.mark.parametrize(("config", "level"), LEVELS.items())
def test_every_level_config_generates_bot_episodes(config: str, level: str) -> None:
    with initialize_config_module(config_module="anyorder.conf", version_base="1.3"):
        cfg = compose(config_name="generate", overrides=[f"data={config}"])
    assert cfg.data.level == level
    episodes = [rollout_expert(level, seed) for seed in range(3)]
    assert all(e.env_id == level and e.observations.shape == (e.num_steps, 7, 7, 3) for e in episodes)
    assert sum(e.success for e in episodes) >= 2  # the bot solves these levels


def test_killed_generation_resumes_without_redoing_complete_shards(tmp_path: Path) -> None:
    spec = DatasetSpec("BabyAI-GoToRedBall-v0", 12, seed=1, root=tmp_path, shard_size=4)
    directory = generate_dataset(spec, progress=False)
    first = spec.shard_path("train", 0)
    stamp = first.stat().st_mtime_ns
    # simulate a kill: meta.json never written, one shard lost
    (directory / "meta.json").unlink()
    spec.shard_path("train", 1).unlink()
    generate_dataset(spec, num_workers=2, progress=False)
    assert first.stat().st_mtime_ns == stamp
    assert spec.shard_path("train", 1).is_file() and (directory / "meta.json").is_file()
    assert not list(directory.glob(".*.tmp"))


def test_spec_validation_names_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="level"):
        DatasetSpec("BabyAI-NoSuchLevel-v0", 10, 0, tmp_path)
    with pytest.raises(ConfigError, match="num_episodes"):
        DatasetSpec("BabyAI-GoToRedBall-v0", 1, 0, tmp_path)
