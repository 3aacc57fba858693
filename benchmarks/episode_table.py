"""Start-up cost of training: encoding a dataset's training split into the token table.

    python benchmarks/episode_table.py --data-dir data [--level BabyAI-GoToRedBall-v0] [--episodes 10000]

Times ``load_episode_table`` (whole Parquet columns, one ``encode_steps`` call per shard)
against the per-episode path it replaced (``read_shard`` then one ``encode_steps`` call per
episode), on the same shards, and checks that both give the same tokens. The dataset must
exist (``anyorder-generate`` with the same level and count).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from anyorder.data.datamodule import load_episode_table
from anyorder.data.episodes import read_meta, read_shard
from anyorder.data.generate import DatasetSpec
from anyorder.data.tokenizer import TrajectoryTokenizer
from anyorder.data.vocabulary import Vocabulary


def per_episode(directory: Path, shards: list[str], tokenizer: TrajectoryTokenizer) -> np.ndarray:
    """The replaced path: every episode an object, encoded on its own."""
    steps = [
        tokenizer.encode_steps(episode.observations, episode.directions, episode.actions)
        for name in shards
        for episode in read_shard(directory / name)
        if episode.success
    ]
    return np.concatenate(steps).astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--level", default="BabyAI-GoToRedBall-v0")
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=2)
    args = parser.parse_args()

    directory = DatasetSpec(level=args.level, num_episodes=args.episodes, seed=args.seed, root=args.data_dir).directory
    shards = read_meta(directory)["splits"]["train"]["shards"]
    tokenizer = TrajectoryTokenizer(Vocabulary.structured(), args.window, mission_length=12)

    start = time.perf_counter()
    table, _ = load_episode_table(directory, shards, tokenizer)
    columns_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = per_episode(directory, shards, tokenizer)
    episodes_s = time.perf_counter() - start
    if not np.array_equal(table.steps, reference):
        raise SystemExit("the two paths disagree: the token table is wrong")

    count, steps = len(table.lengths), table.num_windows
    print(f"{directory.name}: {len(shards)} training shards, {count} episodes, {steps} steps")
    print(f"  whole columns (load_episode_table): {columns_s:7.2f} s  {count / columns_s:9.0f} episodes/s")
    print(f"  one episode at a time (replaced):   {episodes_s:7.2f} s  {count / episodes_s:9.0f} episodes/s")
    print(f"  speed-up: {episodes_s / columns_s:.1f}x  (identical tokens)")


if __name__ == "__main__":
    main()
