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
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from anyorder.data.episodes import read_meta, read_table, step_columns
from anyorder.data.generate import DatasetSpec, generate_dataset
from anyorder.data.layout import STEP_LENGTH
from anyorder.data.tokenizer import TokenBatch, TrajectoryTokenizer
from anyorder.data.vocabulary import Vocabulary
from anyorder.errors import DataError, require_at_least


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
        return self.tokenizer.assemble(self.table.missions[episode], steps, valid)


class WindowBatchSampler(Sampler[np.ndarray]):
    """Batches of window ids: ``num_used`` of this rank's windows, reshuffled every epoch."""

    def __init__(
        self, num_windows: int, num_used: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool
    ) -> None:
        self.num_windows = num_windows
        self.num_used = min(num_used, num_windows)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start, so each epoch gets its own order."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_used // self.batch_size
        return -(-self.num_used // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
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


class TrajectoryDataModule(L.LightningDataModule):
    """BabyAI expert windows for any-order training; generates the dataset if it is missing."""

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
    ) -> None:
        super().__init__()
        require_at_least("batch_size", batch_size, 1)
        require_at_least("loader_workers", loader_workers, 0)
        self.spec = DatasetSpec(
            level=level,
            num_episodes=num_episodes,
            seed=seed,
            root=Path(root),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            shard_size=shard_size,
            expert=expert,
        )
        self.num_workers = num_workers
        self.generate_if_missing = generate_if_missing
        self.tokenizer = TrajectoryTokenizer(vocabulary or Vocabulary.structured(), window, mission_length)
        self.batch_size = batch_size
        self.loader_workers = loader_workers
        self.only_successful = only_successful
        self.shuffle_seed = shuffle_seed
        self.datasets: dict[str, WindowDataset] = {}
        self.used_windows: dict[str, int] = {}

    @property
    def directory(self) -> Path:
        return self.spec.directory

    def generate(self) -> Path:
        """Generate the dataset (or finish a partial one); existing shards are kept."""
        return generate_dataset(self.spec, num_workers=self.num_workers)

    def prepare_data(self) -> None:
        """Use the dataset, or generate it: once, when jobs that need it start together (a lock)."""
        for legacy in self.spec.legacy_directories:
            if legacy.is_dir() and self.directory != legacy:
                print(f"not reusing {legacy}: its splits differ from data.val_fraction/data.test_fraction")
        if (self.directory / "meta.json").is_file():
            read_meta(self.directory)
            return
        if not self.generate_if_missing:
            raise DataError(
                self.directory,
                "dataset not found; run `anyorder-generate` with the same data settings "
                "or set data.generate_if_missing=true",
            )
        with generation_lock(self.directory):
            if not (self.directory / "meta.json").is_file():  # another job may have made it meanwhile
                self.generate()

    def setup(self, stage: str | None = None) -> None:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        meta = read_meta(self.directory)
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "fit", ("train", "val")
        )
        for split in wanted:
            if split in self.datasets:
                continue
            shards = meta["splits"][split]["shards"]
            table, used = load_episode_table(
                self.directory,
                shards,
                self.tokenizer,
                rank,
                world,
                seed=self.shuffle_seed,
                only_successful=self.only_successful,
            )
            self.datasets[split] = WindowDataset(table, self.tokenizer)
            self.used_windows[split] = used

    def _loader(self, split: str, shuffle: bool) -> DataLoader[TokenBatch]:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        dataset = self.datasets[split]
        sampler = WindowBatchSampler(
            len(dataset), self.used_windows[split], self.batch_size, shuffle, self.shuffle_seed, drop_last=shuffle
        )
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=self.loader_workers,
            persistent_workers=self.loader_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[TokenBatch]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[TokenBatch]:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[TokenBatch]:
        return self._loader("test", shuffle=False)


__all__ = ["STEP_LENGTH", "EpisodeTable", "TrajectoryDataModule", "WindowBatchSampler", "WindowDataset"]
