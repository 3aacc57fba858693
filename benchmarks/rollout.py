"""Closed-loop rollout throughput: N environments with one batched forward per step vs one at a time.

    python benchmarks/rollout.py [--envs 32] [--episodes 64]
    python benchmarks/rollout.py --device cuda --chunk-size 32      # one forward for all 32 envs

Uses the tiny default backbone (random weights) with argmax actions, so both modes play the
very same episodes; episodes/s and env steps/s are both printed. Target: >= 5x at 32 envs.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from anyorder.eval.rollout import ModelPolicy, run_rollouts
from anyorder.models.build import build_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--level", default="BabyAI-GoToRedBall-v0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk-size", type=int, default=8, help="rows per forward (ModelPolicy.chunk_size)")
    args = parser.parse_args()

    with initialize_config_module(config_module="anyorder.conf", version_base="1.3"):
        cfg = compose(config_name="train")
    L.seed_everything(0, verbose=False)
    datamodule = instantiate(cfg.data, generate_if_missing=False)
    policy = ModelPolicy(build_module(cfg, datamodule), args.device, temperature=0.0, chunk_size=args.chunk_size)
    seeds = list(range(7_000_000, 7_000_000 + args.episodes))

    timings = {}
    for label, envs in (("batched", args.envs), ("one at a time", 1)):
        start = time.perf_counter()
        result = run_rollouts(policy, datamodule.tokenizer, args.level, seeds, num_envs=envs)
        elapsed = time.perf_counter() - start
        timings[label] = len(result.lengths) / elapsed
        steps = sum(result.lengths)
        print(
            f"{label:>14}: {timings[label]:7.2f} episodes/s  {steps / elapsed:7.1f} env steps/s"
            f"  ({steps} steps in {elapsed:.1f} s, envs={envs})"
        )
    tokenizer = datamodule.tokenizer
    print(
        f"device={args.device} chunk_size={args.chunk_size} threads={torch.get_num_threads()}"
        f" window={tokenizer.window} seq_len={tokenizer.sequence_length}"
    )
    print(f"         ratio: {timings['batched'] / timings['one at a time']:7.2f}x   (target >= 5x)")


if __name__ == "__main__":
    main()
