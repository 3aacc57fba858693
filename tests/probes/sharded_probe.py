"""A callback for runs launched as separate processes (``tests/test_sharded.py``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch


class StepProbe(L.Callback):
    """Each rank writes its first training batch, as the module saw it (masked), with that
    step's loss; rank 0 copies ``last.ckpt`` as it stands after step ``copy_after`` (a
    mid-epoch checkpoint, as a killed run leaves it) to ``directory/after_step<N>.ckpt``."""

    def __init__(self, directory: str, copy_after: int | None = None) -> None:
        self.directory = Path(directory)
        self.copy_after = copy_after

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # the previous step's checkpoint is complete here: saving it was collective
        if trainer.global_step == self.copy_after and trainer.global_rank == 0:
            last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            shutil.copytree(last, self.directory / f"after_step{self.copy_after}.ckpt")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step != 1:  # the step just taken is the run's first
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "batch": {k: v.detach().cpu() for k, v in batch.items() if isinstance(v, torch.Tensor)},
            "loss": outputs["loss"].detach().cpu(),
        }
        torch.save(record, self.directory / f"rank{trainer.global_rank}.pt")
