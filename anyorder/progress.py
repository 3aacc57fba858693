"""Progress that reads in a log file: a line every N steps when stdout is not a terminal.

Under ``nohup``, SLURM or CI a progress bar draws into a file that nobody can read (or, for
the rich bar, not at all). There the bar is switched off (``${stdout_is_tty:}`` in the
trainer config) and :class:`TextProgress` prints ``step, loss, steps/s, ETA`` instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L

from anyorder.errors import require_at_least


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class TextProgress(L.Callback):
    """Every ``every_n_steps`` optimizer steps (rank 0, only without a terminal unless ``always``)."""

    def __init__(self, every_n_steps: int = 50, always: bool = False) -> None:
        require_at_least("every_n_steps", every_n_steps, 1)
        self.every = every_n_steps
        self.active = always or not stdout_is_tty()
        self._start: tuple[float, int] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.perf_counter(), trainer.global_step)

    def line(self, trainer: L.Trainer) -> str:
        began, first = self._start or (time.perf_counter(), 0)
        done = trainer.global_step - first
        rate = done / max(time.perf_counter() - began, 1e-9)
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        loss = trainer.callback_metrics.get("train/loss")
        parts = [f"step {trainer.global_step}" + (f"/{total}" if total else "")]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        parts.append(f"{rate:.2f} steps/s")
        if total and rate > 0:
            parts.append(f"ETA {format_duration((total - trainer.global_step) / rate)}")
        return "  ".join(parts)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.active and trainer.is_global_zero and step % self.every == 0 and step > 0:
            print(self.line(trainer), flush=True)
