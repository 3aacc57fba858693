"""Closed-loop evaluation seeds: a *dev* block for every choice, a sealed *test* block for the report.

Dataset seed ``s`` draws its episodes (train, val and test splits) from the start of
``[s * SEED_STRIDE, (s + 1) * SEED_STRIDE)``. Evaluation takes two fixed blocks from the
second half of that range, far past any dataset episode:

* **dev**  = ``[base + HELD_OUT_OFFSET, base + HELD_OUT_OFFSET + EVAL_BLOCK)``, paired with
  the dataset's *val* split for the offline queries: tuning, in-training evaluation, sweeps.
* **test** = the next ``EVAL_BLOCK`` seeds, paired with the dataset's *test* split: the final
  report only, once the recipe is frozen.
"""

from __future__ import annotations

from typing import Any

from anyorder.data.generate import SEED_STRIDE
from anyorder.errors import ConfigError

HELD_OUT_OFFSET = SEED_STRIDE // 2  # far past any split of the dataset's seed block
EVAL_BLOCK = 100_000  # closed-loop seeds per evaluation split
SPLITS = ("dev", "test")
OFFLINE_SPLIT = {"dev": "val", "test": "test"}  # the dataset split each evaluation split reads


def eval_seeds(dataset_seed: int, split: str, count: int) -> range:
    """The first ``count`` closed-loop seeds of ``split``'s block."""
    if split not in SPLITS:
        raise ConfigError("eval.split", f"must be one of {list(SPLITS)}, got {split!r}")
    if not 1 <= count <= EVAL_BLOCK:
        raise ConfigError("eval.num_episodes", f"must be in [1, {EVAL_BLOCK}] (one split's block), got {count}")
    start = int(dataset_seed) * SEED_STRIDE + HELD_OUT_OFFSET + SPLITS.index(split) * EVAL_BLOCK
    return range(start, start + count)


def check_held_out(level: str, seeds: range, meta: dict[str, Any]) -> None:
    """Raise if ``seeds`` holds a seed of any dataset split (train, val or test) of ``level``."""
    if level != meta["level"]:
        return  # another level: its layouts were never trained on, whatever the seed
    for split, info in meta["splits"].items():
        low, high = info["seed_range"]
        if seeds.start < high and low < seeds.stop:
            raise ConfigError(
                "eval.split",
                f"closed-loop seeds [{seeds.start}, {seeds.stop}) overlap the {split} seeds [{low}, {high}) "
                f"of {meta['level']}: the dataset is too large for its seed block",
            )
