"""Evaluation seeds that are provably held out from training."""

from __future__ import annotations

from typing import Any

from anyorder.data.generate import SEED_STRIDE
from anyorder.errors import ConfigError

HELD_OUT_OFFSET = SEED_STRIDE // 2  # far past any split of the dataset's seed block


def default_seed_start(meta: dict[str, Any]) -> int:
    return int(meta["seed"]) * SEED_STRIDE + HELD_OUT_OFFSET


def check_held_out(level: str, start: int, count: int, meta: dict[str, Any]) -> None:
    """Raise if ``[start, start + count)`` holds a seed the model was trained or validated on."""
    if level != meta["level"]:
        return  # another level: its layouts were never trained on, whatever the seed
    for split in ("train", "val"):
        low, high = meta["splits"][split]["seed_range"]
        if start < high and low < start + count:
            raise ConfigError(
                "eval.seed_start",
                f"seeds [{start}, {start + count}) overlap the {split} seeds [{low}, {high}) of {meta['level']}; "
                f"use eval.seed_start >= {default_seed_start(meta)} (the default)",
            )
