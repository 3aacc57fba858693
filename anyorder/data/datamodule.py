"""TrajectoryDataModule: shards -> rank-local token tables -> shuffled batches of windows.

Each DDP rank owns a fixed, disjoint share of a split's episodes (a seeded permutation
dealt round-robin), reads only those rows from the shards and encodes their steps once
into a compact table. A :class:`WindowBatchSampler` deals shuffled batches of windows;
every rank yields the same number of batches (the shortest rank's, so DDP never waits on
a rank that ran dry) and no window is seen twice in an epoch. Loader workers build whole
batches from the shared table, so a batch costs one vectorised gather.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from anyorder.data.episodes import read_meta, read_table, step_columns
from anyorder.data.generate import DatasetSpec, generate_dataset
from anyorder.data.layout import STEP_LENGTH
from anyorder.data.mixing import MixedBatchSampler, normalised_weights, per_batch_counts
from anyorder.data.resumable import EpochSampler, ResumableLoader
from anyorder.data.tokenizer import TokenBatch, TrajectoryTokenizer
from anyorder.data.vocabulary import Vocabulary
from anyorder.errors import ConfigError, DataError, require_at_least
from anyorder.experts.tasks import level_step_limit


@dataclass(frozen=True)
class EpisodeTable:
    """The encoded steps of a set of episodes, concatenated; episode e is rows offsets[e]:+lengths[e]."""

    steps: np.ndarray  # int32 [total_steps, STEP_LENGTH]
    offsets: np.ndarray  # int64 [E]
    lengths: np.ndarray  # int64 [E]
    missions: np.ndarray  # int64 [E, M]
    seeds: np.ndarray  # int64 [E]

    @property
    def num_windows(self) -> int:
        return int(self.lengths.sum())


def concatenate_tables(tables: list[EpisodeTable]) -> EpisodeTable:
    """One table of several levels' episodes; window ids of table ``i`` follow those of ``i - 1``."""
    if len(tables) == 1:
        return tables[0]
    starts = np.cumsum([0] + [len(t.steps) for t in tables[:-1]])
    return EpisodeTable(
        steps=np.concatenate([t.steps for t in tables]),
        offsets=np.concatenate([t.offsets + start for t, start in zip(tables, starts, strict=True)]),
        lengths=np.concatenate([t.lengths for t in tables]),
        missions=np.concatenate([t.missions for t in tables]),
        seeds=np.concatenate([t.seeds for t in tables]),
    )


def _episode_index(directory: Path, shards: list[str], only_successful: bool) -> np.ndarray:
    """``[E, 3]`` (shard, row, length) of every usable episode, read from two small columns."""
    rows = []
    for shard_id, name in enumerate(shards):
        table = read_table(directory / name, columns=["num_steps", "success"])
        lengths = np.asarray(table["num_steps"], dtype=np.int64)
        keep = np.asarray(table["success"], dtype=bool) if only_successful else np.ones(len(lengths), dtype=bool)
        for row in np.flatnonzero(keep & (lengths > 0)):
            rows.append((shard_id, row, lengths[row]))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def partition(num_items: int, rank: int, world_size: int, seed: int) -> np.ndarray:
    """Indices of the items rank ``rank`` owns: a seeded permutation dealt round-robin."""
    return np.random.default_rng(seed).permutation(num_items)[rank::world_size]


def load_episode_table(
    directory: Path,
    shards: list[str],
    tokenizer: TrajectoryTokenizer,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    only_successful: bool = True,
) -> tuple[EpisodeTable, int]:
    """This rank's episodes, encoded; also the smallest window count over all ranks."""
    index = _episode_index(directory, shards, only_successful)
    if len(index) < world_size:
        raise DataError(directory, f"{len(index)} usable episodes in {shards[:1]}... cannot feed {world_size} ranks")
    owned = [partition(len(index), r, world_size, seed) for r in range(world_size)]
    min_windows = min(int(index[ids, 2].sum()) for ids in owned)
    mine = index[np.sort(owned[rank])]

    steps, missions, seeds, lengths = [], [], [], []
    for shard_id in np.unique(mine[:, 0]):
        path = directory / shards[shard_id]
        columns = step_columns(read_table(path).take(mine[mine[:, 0] == shard_id, 1]), path)
        steps.append(tokenizer.encode_steps(columns.observations, columns.directions, columns.actions))
        missions.extend(columns.missions)
        seeds.append(columns.seeds)
        lengths.append(columns.lengths)
    encoded = {mission: tokenizer.encode_mission(mission) for mission in set(missions)}
    lengths_array = np.concatenate(lengths)
    table = EpisodeTable(
        steps=np.concatenate(steps).astype(np.int32),
        offsets=np.concatenate([[0], np.cumsum(lengths_array)[:-1]]).astype(np.int64),
        lengths=lengths_array,
        missions=np.stack([encoded[mission] for mission in missions]),
        seeds=np.concatenate(seeds),
    )
    return table, min_windows


class WindowDataset(Dataset[TokenBatch]):
    """Windows ending at every step of every episode; indexed by an array of window ids."""

    def __init__(self, table: EpisodeTable, tokenizer: TrajectoryTokenizer) -> None:
        self.table = table
        self.tokenizer = tokenizer
        self.window_episode = np.repeat(np.arange(len(table.lengths)), table.lengths)
        self.window_end = np.arange(table.num_windows) - np.repeat(table.offsets, table.lengths)

    def __len__(self) -> int:
        return self.table.num_windows

    def __getitem__(self, ids: np.ndarray) -> TokenBatch:
        episode = self.window_episode[ids]
        local = self.window_end[ids][:, None] + np.arange(1 - self.tokenizer.window, 1)[None, :]
        valid = local >= 0
        rows = self.table.offsets[episode][:, None] + np.maximum(local, 0)
        steps = self.table.steps[rows].astype(np.int64)  # [B, K, STEP_LENGTH]
        batch = self.tokenizer.assemble(self.table.missions[episode], steps, valid)
        # which episode each window comes from: evaluation intervals treat an episode as one sample
        return batch | {"episode": torch.from_numpy(episode.astype(np.int64))}


class WindowBatchSampler(EpochSampler):
    """Batches of window ids: ``num_used`` of this rank's windows, reshuffled every epoch."""

    def __init__(
        self, num_windows: int, num_used: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool
    ) -> None:
        super().__init__()
        self.num_windows = num_windows
        self.num_used = min(num_used, num_windows)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_used // self.batch_size
        return -(-self.num_used // self.batch_size)

    def batches(self) -> Iterator[np.ndarray]:
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(self.num_windows)[: self.num_used]
        else:
            order = np.arange(self.num_used)
        for batch in range(len(self)):
            yield order[batch * self.batch_size : (batch + 1) * self.batch_size]


@contextlib.contextmanager
def generation_lock(directory: Path) -> Iterator[None]:
    """An exclusive file lock beside ``directory``: concurrent sweep jobs generate a dataset once."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_window(window: int, levels: Sequence[str]) -> None:
    """A window longer than any episode only adds padding, and its length sizes the model (the
    tiny backbone's position table): refuse it here rather than run out of memory later."""
    longest = max(level_step_limit(level) for level in levels)
    if window > longest:
        names = ", ".join(levels)
        problem = f"{window} steps is longer than any episode: those of {names} end after at most {longest} steps"
        raise ConfigError("data.window", problem)


class TrajectoryDataModule(L.LightningDataModule):
    """Expert windows for any-order training; generates the dataset if it is missing.

    ``levels`` (several environment ids) trains on a mixture: each level keeps its own dataset
    and every training batch holds them in the ``level_weights`` proportions (equal unless
    stated, :mod:`anyorder.data.mixing`); val/test windows are those of every level.
    """

    def __init__(
        self,
        level: str = "BabyAI-GoToRedBall-v0",
        num_episodes: int = 1000,
        seed: int = 0,
        root: str | Path = "data",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        shard_size: int = 500,
        num_workers: int = 2,
        generate_if_missing: bool = True,
        window: int = 4,
        mission_length: int = 12,
        batch_size: int = 32,
        loader_workers: int = 0,
        only_successful: bool = True,
        shuffle_seed: int = 0,
        vocabulary: Vocabulary | None = None,
        expert: str = "auto",
        levels: Sequence[str] | None = None,
        level_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        require_at_least("batch_size", batch_size, 1)
        require_at_least("loader_workers", loader_workers, 0)
        names = [str(name) for name in levels] if levels else [level]
        if len(set(names)) != len(names):
            raise ConfigError("data.levels", f"lists a level twice: {names}")
        self.specs = [
            DatasetSpec(
                level=name,
                num_episodes=num_episodes,
                seed=seed,
                root=Path(root),
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                shard_size=shard_size,
                expert=expert,
            )
            for name in names
        ]
        self.spec = self.specs[0]
        check_window(window, names)
        self.level_weights = normalised_weights(names, level_weights)
        self.batch_counts = per_batch_counts(self.level_weights, batch_size) if len(names) > 1 else None
        self.num_workers = num_workers
        self.generate_if_missing = generate_if_missing
        self.tokenizer = TrajectoryTokenizer(vocabulary or Vocabulary.structured(), window, mission_length)
        self.batch_size = batch_size
        self.loader_workers = loader_workers
        self.only_successful = only_successful
        self.shuffle_seed = shuffle_seed
        self.datasets: dict[str, WindowDataset] = {}
        self.used_windows: dict[str, int] = {}
        self.level_ranges: dict[str, list[tuple[int, int]]] = {}  # per split: (first window id, used) per level

    @property
    def levels(self) -> list[str]:
        return [spec.level for spec in self.specs]

    @property
    def directory(self) -> Path:
        """The (first) level's dataset directory."""
        return self.spec.directory

    def spec_for(self, level: str) -> DatasetSpec:
        """The dataset of ``level`` with this module's settings: its own, or a held-out level's."""
        for spec in self.specs:
            if spec.level == level:
                return spec
        return dataclasses.replace(self.spec, level=level, expert="auto")

    def generate(self) -> Path:
        """Generate the datasets (or finish partial ones); existing shards are kept."""
        for spec in self.specs:
            self.generate_level(spec)
        return self.directory

    def generate_level(self, spec: DatasetSpec) -> Path:
        """Generate (or finish) one level's dataset."""
        return generate_dataset(spec, num_workers=self.num_workers)

    def prepare_data(self) -> None:
        """Use the datasets, or generate them: once, when jobs that need them start together (a lock)."""
        for spec in self.specs:
            self._prepare(spec)

    def _prepare(self, spec: DatasetSpec) -> None:
        directory = spec.directory
        for legacy in spec.legacy_directories:
            if legacy.is_dir() and directory != legacy:
                print(f"not reusing {legacy}: its splits differ from data.val_fraction/data.test_fraction")
        if (directory / "meta.json").is_file():
            read_meta(directory)
            return
        if not self.generate_if_missing:
            raise DataError(
                directory,
                "dataset not found; run `anyorder-generate` with the same data settings "
                "or set data.generate_if_missing=true",
            )
        with generation_lock(directory):
            if not (directory / "meta.json").is_file():  # another job may have made it meanwhile
                self.generate_level(spec)

    def with_levels(self, levels: Sequence[str]) -> TrajectoryDataModule:
        """The same settings and tokenizer over other levels (the evaluation of a held-out level)."""
        other = copy.copy(self)
        other.specs = [self.spec_for(level) for level in levels]
        other.spec = other.specs[0]
        other.level_weights = normalised_weights(levels, None)
        other.batch_counts = None
        other.datasets, other.used_windows, other.level_ranges = {}, {}, {}
        return other

    def setup(self, stage: str | None = None) -> None:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        metas = [read_meta(spec.directory) for spec in self.specs]
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "fit", ("train", "val")
        )
        for split in wanted:
            if split in self.datasets:
                continue
            tables, ranges, start = [], [], 0
            for spec, meta in zip(self.specs, metas, strict=True):
                table, used = load_episode_table(
                    spec.directory,
                    meta["splits"][split]["shards"],
                    self.tokenizer,
                    rank,
                    world,
                    seed=self.shuffle_seed,
                    only_successful=self.only_successful,
                )
                tables.append(table)
                ranges.append((start, used))
                start += table.num_windows
            self.datasets[split] = WindowDataset(concatenate_tables(tables), self.tokenizer)
            self.level_ranges[split] = ranges
            self.used_windows[split] = sum(used for _, used in ranges)

    def _loader(self, split: str, shuffle: bool) -> DataLoader[TokenBatch]:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        dataset = self.datasets[split]
        sampler: EpochSampler
        if shuffle and self.batch_counts is not None:
            sampler = MixedBatchSampler(self.level_ranges[split], self.batch_counts, self.shuffle_seed)
        else:
            sampler = WindowBatchSampler(
                len(dataset), self.used_windows[split], self.batch_size, shuffle, self.shuffle_seed, drop_last=shuffle
            )
        settings = {"num_workers": self.loader_workers, "persistent_workers": self.loader_workers > 0}
        if split == "train":
            return ResumableLoader(dataset, sampler=sampler, batch_size=None, position=self.batches_done, **settings)
        return DataLoader(dataset, sampler=sampler, batch_size=None, **settings)

    def batches_done(self) -> int:
        """Training batches of the current epoch already trained on (what a checkpoint resumes after)."""
        trainer = self.trainer
        if trainer is None or not trainer.num_training_batches or trainer.num_training_batches == float("inf"):
            return 0
        consumed = trainer.global_step * trainer.accumulate_grad_batches
        return int(consumed % trainer.num_training_batches)

    def train_dataloader(self) -> DataLoader[TokenBatch]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[TokenBatch]:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[TokenBatch]:
        return self._loader("test", shuffle=False)


__all__ = ["STEP_LENGTH", "EpisodeTable", "TrajectoryDataModule", "WindowBatchSampler", "WindowDataset"]
