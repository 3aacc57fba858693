"""Training wall time that survives a resume.

A job killed and resumed from ``last.ckpt`` trains in segments; timing only ``trainer.fit`` of
the last one would report the minutes after the resume as the job's training time. The clock
keeps its running total in every checkpoint (Lightning's callback state) and adds to it on resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning as L


class TrainingClock(L.Callback):
    """Seconds spent in ``fit`` over every segment of a run, as saved in its checkpoints."""

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self._now = now if now is not None else time.monotonic
        self._carried = 0.0  # seconds of the segments before this one, from the checkpoint
        self._started: float | None = None
        self._stopped: float | None = None

    @property
    def seconds(self) -> float:
        if self._started is None:
            return self._carried
        end = self._now() if self._stopped is None else self._stopped
        return self._carried + end - self._started

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning restores callback state before this hook, so a resumed run starts from its total
        self._started, self._stopped = self._now(), None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stopped = self._now()

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._carried = float(state_dict["seconds"])
