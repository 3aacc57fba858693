"""Demonstration throughput: BabyAI's bot and the planner, one worker vs two.

    python benchmarks/generate.py                   # 400 episodes per level and worker count
    python benchmarks/generate.py --episodes 1000

For each level the real generation path (``generate_dataset``: expert rollouts in a fork pool,
Parquet shards written atomically) makes ``--episodes`` episodes into a fresh directory, first
with one worker, then with two. Prints episodes/s per core (one worker), the two-worker
speed-up (target >= 1.8x on a quiet 2-core machine), the expert's success rate and mean
episode length, and, for the planner, the full-view planner's mean length (optimal plans)
beside it: what acting on the agent's own view costs in steps.

It also measures the planner's choice of search: the rule model (``anyorder.experts.world``)
against stepping copies of the simulator (``anyorder.experts.exhaustive``) on the same
full-view problems (DoorKey-5x5, first plan from the start state): time per plan and that
both find plans of the same length.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import gymnasium as gym

from anyorder.data.generate import DatasetSpec, generate_dataset
from anyorder.experts.exhaustive import optimal_length
from anyorder.experts.planner import Planner

LEVELS = ("BabyAI-GoToRedBall-v0", "MiniGrid-DoorKey-8x8-v0", "MiniGrid-KeyCorridorS3R3-v0")


def timed_generation(level: str, episodes: int, workers: int, expert: str, root: Path) -> tuple[float, dict]:
    spec = DatasetSpec(level, episodes, seed=0, root=root, shard_size=max(1, episodes // 4), expert=expert)
    started = time.perf_counter()
    directory = generate_dataset(spec, num_workers=workers, progress=False)
    seconds = time.perf_counter() - started
    return seconds, json.loads((directory / "meta.json").read_text())


def summary(meta: dict) -> tuple[float, float]:
    splits = meta["splits"].values()
    episodes = sum(s["episodes"] for s in splits)
    return sum(s["successful"] for s in splits) / episodes, sum(s["steps"] for s in splits) / episodes


def compare_searches(level: str, seeds: range) -> None:
    """Seconds per full-view plan: rule model vs simulator copies, and the plans' lengths."""
    model_seconds, copy_seconds, same = 0.0, 0.0, 0
    for seed in seeds:
        env = gym.make(level)
        with contextlib.redirect_stdout(io.StringIO()):
            obs, _ = env.reset(seed=seed)
        planner = Planner(privileged=True)
        started = time.perf_counter()
        planner.reset(env.unwrapped, obs)
        planner.act(obs)
        model_seconds += time.perf_counter() - started
        planned = len(planner.plan) + 1
        started = time.perf_counter()
        optimum = optimal_length(env.unwrapped)
        copy_seconds += time.perf_counter() - started
        same += planned == optimum
    count = len(seeds)
    print(
        f"\nsearch on {level}, {count} seeds: rule model {1000 * model_seconds / count:.1f} ms/plan, "
        f"simulator copies {1000 * copy_seconds / count:.0f} ms/plan "
        f"({copy_seconds / model_seconds:.0f}x slower); equal plan lengths on {same}/{count}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--levels", nargs="+", default=list(LEVELS))
    parser.add_argument("--search-seeds", type=int, default=10, help="DoorKey-5x5 seeds for the search comparison")
    args = parser.parse_args()
    header = f"{'level':<30}{'expert':<9}{'ep/s/core':>10}{'2 workers':>11}{'speed-up':>10}{'success':>9}{'length':>8}"
    print(header + f"{'optimal':>9}")
    for level in args.levels:
        with tempfile.TemporaryDirectory() as tmp:
            one, meta = timed_generation(level, args.episodes, 1, "auto", Path(tmp) / "one")
            two, _ = timed_generation(level, args.episodes, 2, "auto", Path(tmp) / "two")
            success, length = summary(meta)
            optimal = ""
            if meta["expert"] == "planner":
                _, full_view = timed_generation(level, args.episodes, 2, "planner_privileged", Path(tmp) / "full")
                optimal = f"{summary(full_view)[1]:>9.1f}"
        print(
            f"{level:<30}{meta['expert']:<9}{args.episodes / one:>10.1f}{args.episodes / two:>11.1f}"
            f"{one / two:>9.2f}x{success:>9.3f}{length:>8.1f}{optimal}"
        )
    compare_searches("MiniGrid-DoorKey-5x5-v0", range(args.search_seeds))


if __name__ == "__main__":
    main()
