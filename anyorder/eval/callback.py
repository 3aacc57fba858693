"""Closed-loop success while training, so a sweep's success curves can be compared as it runs."""

from __future__ import annotations

import lightning as L
import numpy as np

from anyorder.errors import require_at_least
from anyorder.eval.metrics import wilson_interval
from anyorder.eval.rollout import ModelPolicy, RolloutResult, run_rollouts
from anyorder.eval.seeds import eval_seeds


class ClosedLoopEvalCallback(L.Callback):
    """Every ``every_n_val_epochs`` validations, play ``num_episodes`` dev seeds; log eval/success_rate.

    A model trained on several levels plays ``num_episodes`` of each: eval/success_rate pools
    them and eval/success_rate/<level> gives each level's.

    Every rank plays the same seeded episodes, not rank 0 alone: under FSDP each forward
    gathers the sharded parameters collectively, so a rank that sat out would leave the
    others waiting. Same weights, seeds and sampler give every rank the same episodes, hence
    the same number of forwards; rank 0 logs.
    """

    def __init__(
        self, every_n_val_epochs: int = 1, num_episodes: int = 16, num_envs: int = 16, temperature: float = 1.0
    ) -> None:
        require_at_least("every_n_val_epochs", every_n_val_epochs, 1)
        require_at_least("num_episodes", num_episodes, 1)
        self.every = every_n_val_epochs
        self.num_episodes = num_episodes
        self.num_envs = num_envs
        self.temperature = temperature
        self.validations = 0
        self.last_result: RolloutResult | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        if self.validations % self.every:
            return
        datamodule = trainer.datamodule
        policy = ModelPolicy(pl_module, pl_module.device, self.temperature)
        metrics: dict[str, float] = {}
        outcomes: list[bool] = []
        lengths: list[int] = []
        for spec in datamodule.specs:  # a mixture plays each of its levels
            # the first seeds of the dev block (never the sealed test block, never a dataset seed)
            seeds = eval_seeds(spec.seed, "dev", self.num_episodes)
            result = run_rollouts(policy, datamodule.tokenizer, spec.level, seeds, self.num_envs)
            self.last_result = result
            outcomes += result.success
            lengths += result.lengths
            if len(datamodule.specs) > 1:
                metrics[f"eval/success_rate/{short_level_name(spec.level)}"] = result.success_rate
        low, high = wilson_interval(int(np.sum(outcomes)), len(outcomes))
        metrics |= {
            "eval/success_rate": float(np.mean(outcomes)),
            "eval/success_ci95_low": low,
            "eval/success_ci95_high": high,
            "eval/mean_episode_length": float(np.mean(lengths)),
        }
        pl_module.log_dict(metrics, rank_zero_only=True)


def short_level_name(level: str) -> str:
    """``MiniGrid-DoorKey-8x8-v0`` -> ``DoorKey-8x8``: a metric name per level of a mixture."""
    return level.split("-", 1)[-1].rsplit("-v", 1)[0]
