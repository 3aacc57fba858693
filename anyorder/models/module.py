"""AnyOrderModule: a masked-diffusion backbone trained on whatever mask each batch carries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from anyorder.data.layout import TokenKind
from anyorder.masking.queries import OBSERVATION_KINDS, of_kinds, policy_query, world_model_query
from anyorder.models.metrics import NLLByKind
from anyorder.models.objective import masked_diffusion_loss, token_nll
from anyorder.models.sharding import shard_backbone

Batch = dict[str, torch.Tensor]
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class AnyOrderModule(L.LightningModule):
    """Any-order masked training of ``backbone``; one model, many inference questions.

    Args:
        backbone: maps ``input_ids``/``attention_mask`` to logits.
        optimizer: partial optimizer, called with parameter groups.
        lr_scheduler: partial scheduler, called with the optimizer and
            ``num_training_steps``; stepped every optimizer step. ``None`` keeps the lr.
        mask_token_id: id that replaces hidden inputs.
        action_token_ids: ids of the actions, in minigrid's action order; the policy's
            prediction is the argmax over these only.
        weight_decay_norms_and_biases: whether 1-d parameters are decayed too.
    """

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: OptimizerFactory,
        mask_token_id: int,
        action_token_ids: Sequence[int],
        lr_scheduler: SchedulerFactory | None = None,
        weight_decay_norms_and_biases: bool = False,
    ) -> None:
        super().__init__()
        # plain Python values only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(
            {
                "mask_token_id": int(mask_token_id),
                "action_token_ids": [int(i) for i in action_token_ids],
                "weight_decay_norms_and_biases": bool(weight_decay_norms_and_biases),
            }
        )
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.register_buffer("action_ids", torch.tensor(list(action_token_ids), dtype=torch.long), persistent=False)
        self.val_nll = NLLByKind()
        self.val_loss = MeanMetric()
        self.val_world_model_nll = MeanMetric()
        self.val_action_acc = MulticlassAccuracy(num_classes=len(action_token_ids), average="micro")
        # a partly frozen backbone (LoRA) checkpoints only what trains; the rest is rebuilt from its source
        self.strict_loading = self.trained_keys() is None

    # -- checkpoints ----------------------------------------------------------------------
    def trained_keys(self) -> set[str] | None:
        """State-dict keys of the trainable parameters when some parameters are frozen, else ``None``."""
        parameters = dict(self.named_parameters())
        if all(p.requires_grad for p in parameters.values()):
            return None
        return {name for name, p in parameters.items() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = self.trained_keys()
        if keep is not None and "state_dict" in checkpoint:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" in checkpoint:  # FSDP's sharded checkpoints load the weights apart, without this key
            self.check_weights(checkpoint["state_dict"])

    def check_weights(self, state: dict[str, torch.Tensor]) -> None:
        """A checkpoint must hold every parameter that trains (all of them, if none is frozen)."""
        keep = self.trained_keys()
        missing = sorted((keep if keep is not None else set(self.state_dict())) - set(state))
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise RuntimeError(f"the checkpoint lacks {', '.join(missing[:3])}{more}")

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Load a checkpoint's state dict: all of it, or a partly frozen model's trained part."""
        self.check_weights(state)
        self.load_state_dict(state, strict=self.strict_loading)

    # -- forward --------------------------------------------------------------------------
    def forward(self, batch: Batch, mask: torch.Tensor) -> torch.Tensor:
        """Logits with the positions of ``mask`` replaced by the mask token."""
        inputs = batch["input_ids"].masked_fill(mask, self.hparams.mask_token_id)
        return self.backbone(inputs, batch["attention_mask"])

    def query_logits(self, batch: Batch, query: torch.Tensor) -> torch.Tensor:
        """Logits whose log-probabilities at ``query`` score the query's tokens: all hidden at
        once, each given the rest (one shot, factorised). The NLL of a world-model query."""
        return self(batch, query)

    def _objective(self, batch: Batch) -> Any:
        if "mask" not in batch:
            raise RuntimeError("batch carries no 'mask': add a MaskingCallback (config group `masking`) to the trainer")
        logits = self(batch, batch["mask"])
        return masked_diffusion_loss(
            logits,
            batch["input_ids"],
            batch["mask"],
            valid=batch["kind"] != TokenKind.PAD,
            maskable=batch.get("maskable"),
            time=batch.get("mask_time"),
            group=batch.get("mask_group"),
            group_weights=batch.get("mask_group_weights"),
        )

    # -- steps ----------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self._objective(batch)
        self.log("train/loss", out.loss, prog_bar=True)
        if self.global_step % self.trainer.log_every_n_steps == 0:  # the split costs a device sync
            kind = batch["kind"][out.mask]
            totals = torch.bincount(kind, weights=out.token_nll.detach(), minlength=len(TokenKind))
            counts = torch.bincount(kind, minlength=len(TokenKind))
            for k in torch.nonzero(counts).flatten().tolist():
                self.log(f"train/nll/{TokenKind(k).name.lower()}", totals[k] / counts[k])
        return out.loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self._objective(batch)
        self.val_loss.update(out.loss, weight=batch["kind"].shape[0])
        self.val_nll.update(out.token_nll, batch["kind"][out.mask])

        query = policy_query(batch)
        logits = self(batch, query)[query][:, self.action_ids]
        targets = (batch["input_ids"][query][:, None] == self.action_ids[None, :]).float().argmax(dim=1)
        self.val_action_acc.update(logits.argmax(dim=1), targets)

        query = world_model_query(batch)
        observed = query & of_kinds(batch["kind"], OBSERVATION_KINDS)
        nll = token_nll(self.query_logits(batch, query), batch["input_ids"], observed)
        self.val_world_model_nll.update(nll)

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        for name, value in self.val_nll.compute().items():
            self.log(f"val/nll/{name}", value)
        self.log("val/action_acc", self.val_action_acc.compute(), prog_bar=True)
        self.log("val/world_model_nll", self.val_world_model_nll.compute())
        for metric in (self.val_loss, self.val_nll, self.val_action_acc, self.val_world_model_nll):
            metric.reset()

    # -- parallelism and optimisation -----------------------------------------------------
    def configure_model(self) -> None:
        """Under ``strategy=fsdp`` (FSDP2, a device mesh) the backbone shards itself; elsewhere a no-op."""
        if self.device_mesh is None or isinstance(self.backbone, FSDPModule):
            return
        strategy = self.trainer.strategy
        shard_backbone(
            self.backbone, self.device_mesh, str(self.trainer.precision), strategy.root_device, self.global_rank
        )

    def configure_optimizers(self) -> Any:
        decay, no_decay = [], []
        for parameter in self.parameters():
            if parameter.requires_grad:
                (decay if parameter.ndim >= 2 or self.hparams.weight_decay_norms_and_biases else no_decay).append(
                    parameter
                )
        optimizer = self.optimizer_factory(
            [{"params": decay, "name": "decay"}, {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
        )
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, num_training_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
