"""Training batches that resume mid-epoch where a checkpoint left them.

A run resumed from ``last.ckpt`` in the middle of an epoch should see the batches the killed
run had not reached yet, not the epoch again from its start (which repeats some windows and
skips others, so the resumed run trains on other data than an uninterrupted one). Batch orders
here are pure functions of (seed, epoch), so "where training stopped" is one number: the
batches of the current epoch already trained on. :class:`ResumableLoader` gives Lightning that
number as its checkpointed state; on restore the sampler skips as many batches of its next pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[np.ndarray]):
    """A batch sampler whose order depends only on its seed and the epoch Lightning sets."""

    def __init__(self) -> None:
        self.epoch = 0
        self._resume = (0, 0)  # (epoch, batches of it to skip)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start, so each epoch gets its own order."""
        self.epoch = epoch

    def resume_after(self, epoch: int, batches: int) -> None:
        """If the next pass is of ``epoch``, it starts at its ``batches``-th batch (those were trained
        on before a restart); a pass of another epoch starts at its beginning."""
        self._resume = (int(epoch), max(0, int(batches)))

    def batches(self) -> Iterator[np.ndarray]:
        """Every batch of the current epoch, in order."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        # A generator, so the epoch is read at the first batch: Lightning creates the iterator
        # before it sets the epoch.
        (epoch, skip), self._resume = self._resume, (0, 0)
        if epoch != self.epoch:  # Lightning counted the saved epoch as finished (a run stopped at max_steps)
            skip = 0
        yield from itertools.islice(self.batches(), skip, None)


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` whose state Lightning saves in checkpoints.

    ``position()`` says how many batches of the current epoch were trained on (it reads the
    trainer's step count: the loader itself has prefetched ahead of training).
    """

    def __init__(self, *args: Any, position: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError(f"ResumableLoader needs an EpochSampler, got {type(self.sampler).__name__}")
        self.position = position

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": int(self.position())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_after(state.get("epoch", 0), state.get("batches_done", 0))


__all__ = ["EpochSampler", "ResumableLoader"]
