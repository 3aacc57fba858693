"""MaskingCallback: hides tokens of every batch before the step sees it.

Masking is a callback, not module code, so strategies plug in without touching the
model: the callback writes ``mask`` (and ``maskable``, ``mask_group`` and
``mask_group_weights`` for each mixture strategy's share; ``mask_time`` when t is random)
into the batch dict and the module's loss reads whatever mask the batch carries.
Validation batches are masked from a generator seeded by the batch index, so
``val/loss`` of one run is comparable from epoch to epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from anyorder.masking.rates import check_prob, sample_rates
from anyorder.masking.schedule import ConstantSchedule, Schedule
from anyorder.masking.strategies import MaskingStrategy
from anyorder.masking.visualize import mask_figure


class MaskingCallback(L.Callback):
    """Applies ``strategy`` at a fixed ``prob`` or random t, scaled over training by ``schedule``."""

    def __init__(
        self,
        strategy: MaskingStrategy,
        prob: float | None = None,
        eps: float = 1e-3,
        schedule: Schedule | None = None,
        seed: int = 0,
    ) -> None:
        check_prob(prob, eps)
        self.strategy = strategy
        self.prob = prob
        self.eps = eps
        self.schedule = schedule or ConstantSchedule()
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._pending_states: list[torch.Tensor | None] = []  # per rank, from a checkpoint

    def apply(self, batch: dict[str, torch.Tensor], step: int, generator: torch.Generator | None) -> torch.Tensor:
        """Add the mask keys to ``batch`` in place; returns the effective per-sample rates."""
        kind = batch["kind"]
        rate = sample_rates(kind.shape[0], self.prob, self.eps, self.schedule(step), kind.device, generator)
        sample = self.strategy(kind, batch["step"], batch["cell"], rate, generator, at_least_one=self.prob is None)
        batch["mask"] = sample.mask
        batch["maskable"] = sample.maskable
        batch["mask_group"] = sample.group
        batch["mask_group_weights"] = sample.group_weights
        if self.prob is None:
            batch["mask_time"] = sample.rate
        else:
            batch.pop("mask_time", None)
        return sample.rate

    def generator_for(self, device: torch.device, rank: int) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed * 1_000 + rank)
            pending = self._pending_states[rank] if rank < len(self._pending_states) else None
            if pending is not None:  # set_state wants a standalone byte tensor, not a view
                self._generator.set_state(pending.to(torch.uint8).contiguous().clone())
            self._pending_states = []
        return self._generator

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        generator = self.generator_for(batch["kind"].device, trainer.global_rank)
        rate = self.apply(batch, trainer.global_step, generator)
        pl_module.log("train/mask_rate", rate.mean(), on_step=True, on_epoch=False)
        hidden = batch["mask"].sum() / batch["maskable"].sum().clamp(min=1)
        pl_module.log("train/hidden_fraction", hidden, on_step=True, on_epoch=False)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        generator = torch.Generator(device=batch["kind"].device)
        generator.manual_seed(self.seed * 1_000_003 + batch_idx * 7_919 + trainer.global_rank)
        self.apply(batch, trainer.global_step, generator)
        if batch_idx == 0 and trainer.is_global_zero and isinstance(trainer.logger, TensorBoardLogger):
            trainer.logger.experiment.add_figure("masking/example", mask_figure(batch), trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._generator.get_state() if self._generator is not None else None}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Every rank draws its own masks: keep each rank's generator, not rank 0's alone.
        (Called on every rank while the checkpoint is built; ranks create their generators at
        the same step, so they agree on whether to gather.)"""
        if trainer.world_size == 1 or self._generator is None:
            return
        state = self._generator.get_state().to(pl_module.device)
        gathered = trainer.strategy.all_gather(state).cpu()
        checkpoint["callbacks"][self.state_key]["generators"] = [row.to(torch.uint8).clone() for row in gathered]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_states = list(state_dict.get("generators") or [state_dict.get("generator")])
        self._generator = None
