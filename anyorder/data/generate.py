"""Expert demonstrations: rollouts of a level's expert in a worker pool, written as Parquet shards.

The expert is BabyAI's bot on ``BabyAI-*`` levels and the planner of :mod:`anyorder.experts`
on the classic MiniGrid levels (``data.expert=auto``); its name is part of the dataset's
directory key and of ``meta.json``. Episodes the expert gives up on are kept, marked
unsuccessful, so every shard holds exactly its seeds and training filters them out.

Splits come from disjoint seed ranges (train, then val, then test) recorded in the
dataset's ``meta.json``, so later evaluation can prove that its seeds were never trained
on. Shards that already exist are kept, so a killed generation resumes where it stopped;
``meta.json`` is written last and marks the dataset complete.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import minigrid
import numpy as np
from tqdm.auto import tqdm

from anyorder.data.episodes import FORMAT_VERSION, Episode, read_table, write_meta, write_shard
from anyorder.errors import ConfigError, require_at_least
from anyorder.experts import ExpertStuckError, make_expert, resolve_expert

SPLITS = ("train", "val", "test")
SEED_STRIDE = 10_000_000  # dataset seed s draws episode seeds from [s * stride, (s + 1) * stride)


@dataclass(frozen=True)
class DatasetSpec:
    """Which demonstrations a dataset holds; its directory is keyed by everything that changes
    them: level, expert, count, seed and the val/test fractions (``shard_size`` only regroups
    them). ``expert="auto"`` is resolved to the level's expert on construction."""

    level: str
    num_episodes: int
    seed: int
    root: Path
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    shard_size: int = 500
    expert: str = "auto"

    def __post_init__(self) -> None:
        if self.level not in gym.registry:
            known = sorted(k for k in gym.registry if k.startswith(("BabyAI-", "MiniGrid-")))
            raise ConfigError(
                "level", f"unknown environment {self.level!r}; e.g. {', '.join(known[:4])}, ... ({len(known)} levels)"
            )
        object.__setattr__(self, "expert", resolve_expert(self.expert, self.level))
        if self.num_episodes < 3:
            raise ConfigError("num_episodes", f"must be >= 3 (one per split), got {self.num_episodes}")
        if not 0 <= self.seed < 200:
            raise ConfigError("seed", f"dataset seed must be in [0, 200), got {self.seed}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise ConfigError(name, f"must be in (0, 0.5), got {getattr(self, name)}")
        require_at_least("shard_size", self.shard_size, 1)

    @property
    def key(self) -> str:
        fractions = f"val{self.val_fraction:g}-test{self.test_fraction:g}"
        return f"{self.level}-{self.expert}-n{self.num_episodes}-s{self.seed}-{fractions}"

    @property
    def legacy_directories(self) -> list[Path]:
        """Where BabyAI-bot datasets were cached before the key held the expert, and before it
        held the fractions."""
        if self.expert != "bot":
            return []
        base = Path(self.root) / f"{self.level}-n{self.num_episodes}-s{self.seed}"
        return [base.with_name(f"{base.name}-val{self.val_fraction:g}-test{self.test_fraction:g}"), base]

    def legacy_matches(self, directory: Path) -> bool:
        """Whether a legacy directory holds exactly this dataset (the same split seed ranges)."""
        try:
            meta = json.loads((directory / "meta.json").read_text())
            ranges = {split: tuple(info["seed_range"]) for split, info in meta["splits"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return ranges == self.seed_ranges()

    @property
    def directory(self) -> Path:
        """``root/<key>``; a dataset cached under a legacy name is reused when it is this one."""
        keyed = Path(self.root) / self.key
        if not keyed.exists():
            for legacy in self.legacy_directories:
                if self.legacy_matches(legacy):
                    return legacy
        return keyed

    def split_sizes(self) -> dict[str, int]:
        val = max(1, round(self.num_episodes * self.val_fraction))
        test = max(1, round(self.num_episodes * self.test_fraction))
        return {"train": self.num_episodes - val - test, "val": val, "test": test}

    def seed_ranges(self) -> dict[str, tuple[int, int]]:
        """Half-open episode-seed range of each split; disjoint by construction."""
        ranges, start = {}, self.seed * SEED_STRIDE
        for split, size in self.split_sizes().items():
            ranges[split] = (start, start + size)
            start += size
        return ranges

    def shard_path(self, split: str, index: int) -> Path:
        return self.directory / f"{split}-{index:05d}.parquet"


def rollout_expert(level: str, seed: int, expert: str = "auto") -> Episode:
    """One episode of ``level`` reset with ``seed``, every action chosen by ``expert``; an
    expert that gives up ends the episode unsuccessfully."""
    env = gym.make(level)
    with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints "Sampling rejected: ..."
        obs, _ = env.reset(seed=seed)
    player = make_expert(resolve_expert(expert, level))
    player.reset(env.unwrapped, obs)
    observations, directions, actions, rewards = [], [], [], []
    done, success = False, False
    while not done:
        try:
            action = player.act(obs)
        except ExpertStuckError:
            break
        observations.append(obs["image"])
        directions.append(obs["direction"])
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        done = terminated or truncated
        success = bool(terminated and reward > 0)
    env.close()
    if not actions:
        observations, directions = [obs["image"]], [obs["direction"]]
        actions, rewards = [int(minigrid.core.actions.Actions.done)], [0.0]
    return Episode(
        env_id=level,
        seed=seed,
        mission=obs["mission"],
        observations=np.stack(observations).astype(np.uint8),
        directions=np.asarray(directions, dtype=np.int8),
        actions=np.asarray(actions, dtype=np.int8),
        rewards=np.asarray(rewards, dtype=np.float32),
        success=success,
    )


def _rollout(args: tuple[str, int, str]) -> Episode:
    return rollout_expert(*args)


def _shard_is_complete(path: Path, expected_rows: int) -> bool:
    if not path.is_file():
        return False
    try:
        return read_table(path, columns=["seed"]).num_rows == expected_rows
    except Exception:
        return False


def generate_dataset(spec: DatasetSpec, num_workers: int = 1, progress: bool = True) -> Path:
    """Generate (or finish generating) ``spec``'s dataset; returns its directory."""
    require_at_least("num_workers", num_workers, 1)
    directory = spec.directory
    directory.mkdir(parents=True, exist_ok=True)
    tasks: list[tuple[Path, list[int]]] = []
    for split, (start, stop) in spec.seed_ranges().items():
        for index, first in enumerate(range(start, stop, spec.shard_size)):
            tasks.append((spec.shard_path(split, index), list(range(first, min(first + spec.shard_size, stop)))))
    todo = [(path, seeds) for path, seeds in tasks if not _shard_is_complete(path, len(seeds))]
    total = sum(len(seeds) for _, seeds in todo)

    with (
        _pool(num_workers) as pool,
        tqdm(total=total, desc=f"generating {spec.level}", unit="ep", disable=not progress or total == 0) as bar,
    ):
        # one ordered stream over every shard's seeds: workers keep playing while a shard is written
        stream = pool(_rollout, [(spec.level, seed, spec.expert) for _, seeds in todo for seed in seeds])
        for path, seeds in todo:
            episodes = []
            for episode in itertools.islice(stream, len(seeds)):
                episodes.append(episode)
                bar.update(1)
            write_shard(path, episodes)

    write_meta(directory, _metadata(spec, tasks))
    return directory


@contextlib.contextmanager
def _pool(num_workers: int) -> Iterator[Any]:
    """``map(fn, items)`` in order, over a fork pool when more than one worker is asked for."""
    if num_workers == 1:
        yield map
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with context.Pool(num_workers) as pool:
        yield lambda fn, items: pool.imap(fn, items, chunksize=8)


def _metadata(spec: DatasetSpec, tasks: list[tuple[Path, list[int]]]) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split, (start, stop) in spec.seed_ranges().items():
        shards = [path for path, _ in tasks if path.name.startswith(f"{split}-")]
        table_stats = [read_table(path, columns=["num_steps", "success"]) for path in shards]
        splits[split] = {
            "seed_range": [start, stop],
            "episodes": sum(t.num_rows for t in table_stats),
            "successful": int(sum(np.asarray(t["success"]).sum() for t in table_stats)),
            "steps": int(sum(np.asarray(t["num_steps"]).sum() for t in table_stats)),
            "shards": [path.name for path in shards],
        }
    return {
        "format_version": FORMAT_VERSION,
        "level": spec.level,
        "num_episodes": spec.num_episodes,
        "seed": spec.seed,
        "expert": spec.expert,
        "minigrid_version": minigrid.__version__,
        "splits": splits,
    }
