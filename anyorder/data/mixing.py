"""Several levels in one training set, mixed per batch in stated proportions.

Each level keeps its own dataset (directory, splits, seeds); their encoded tables are
concatenated and a :class:`MixedBatchSampler` fills every batch with a fixed number of
windows per level (the proportions times the batch size, rounded by largest remainder), so
a level's share of the gradient is what the config says whatever its dataset's size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import numpy as np

from anyorder.data.resumable import EpochSampler
from anyorder.errors import ConfigError

_SIZE_SUFFIX = re.compile(r"(-\d+x\d+)?(-?S\d+)?(-?[NR]\d+)?$")


def level_family(level: str) -> str:
    """The environment id without its namespace, version and size suffix:
    ``MiniGrid-DoorKey-8x8-v0`` -> ``DoorKey``, ``MiniGrid-KeyCorridorS3R3-v0`` -> ``KeyCorridor``."""
    name = re.sub(r"-v\d+$", "", level.split("-", 1)[-1])
    return _SIZE_SUFFIX.sub("", name) or name


def normalised_weights(levels: Sequence[str], weights: Sequence[float] | None) -> np.ndarray:
    """The levels' shares (equal unless stated), checked and summing to one."""
    if weights is None:
        return np.full(len(levels), 1 / len(levels))
    shares = np.asarray([float(w) for w in weights], dtype=np.float64)
    if len(shares) != len(levels):
        raise ConfigError("data.level_weights", f"{len(shares)} weights for {len(levels)} levels")
    if not np.all(np.isfinite(shares)) or np.any(shares <= 0):
        raise ConfigError("data.level_weights", f"must all be positive, got {list(weights)}")
    return shares / shares.sum()


def per_batch_counts(weights: np.ndarray, batch_size: int) -> np.ndarray:
    """Windows of each level in every batch: ``weights * batch_size`` by largest remainder."""
    exact = weights * batch_size
    counts = np.floor(exact).astype(np.int64)
    for index in np.argsort(-(exact - counts), kind="stable")[: batch_size - counts.sum()]:
        counts[index] += 1
    if np.any(counts == 0):
        raise ConfigError(
            "data.batch_size", f"{batch_size} is too small to give every level a window per batch ({counts.tolist()})"
        )
    return counts


class MixedBatchSampler(EpochSampler):
    """Batches holding ``counts[l]`` windows of level ``l``, drawn without replacement from each
    level's own shuffled order (reshuffled when a level runs out, so a small level cycles).

    ``ranges[l] = (start, used)``: level ``l``'s windows are ids ``start .. start + used - 1``
    of the concatenated dataset. An epoch has as many batches as the levels' windows would
    fill at their shares, the same on every DDP rank (``used`` is the smallest rank's count).
    """

    def __init__(self, ranges: Sequence[tuple[int, int]], counts: np.ndarray, seed: int) -> None:
        super().__init__()
        self.ranges = [(int(start), int(used)) for start, used in ranges]
        self.counts = np.asarray(counts, dtype=np.int64)
        self.seed = seed

    def __len__(self) -> int:
        return max(1, sum(used for _, used in self.ranges) // int(self.counts.sum()))

    def batches(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        orders = [start + rng.permutation(used) for start, used in self.ranges]
        positions = [0] * len(orders)
        for _ in range(len(self)):
            batch = []
            for level, count in enumerate(self.counts):
                start, used = self.ranges[level]
                if positions[level] + count > used:
                    orders[level], positions[level] = start + rng.permutation(used), 0
                batch.append(orders[level][positions[level] : positions[level] + count])
                positions[level] += count
            yield np.concatenate(batch)
