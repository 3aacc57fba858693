"""Masking-rate schedules: a level in (0, 1] per optimizer step that scales the rate's ceiling.

With a fixed rate the hidden fraction is ``prob * level``; with random t it is drawn from
U(eps, level). A curriculum therefore starts at ``start`` (easy, few tokens hidden), holds
it for ``warmup_steps`` and then moves to 1 over ``steps`` following the schedule's shape.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from anyorder.errors import ConfigError, require_at_least


class Schedule(ABC):
    """Level of the masking rate at an optimizer step."""

    @abstractmethod
    def __call__(self, step: int) -> float: ...


class ConstantSchedule(Schedule):
    def __call__(self, step: int) -> float:
        return 1.0


class _Ramp(Schedule):
    def __init__(self, start: float = 0.1, steps: int = 1000, warmup_steps: int = 0) -> None:
        if not 0 < start <= 1:
            raise ConfigError("start", f"must be in (0, 1], got {start}")
        require_at_least("steps", steps, 1)
        require_at_least("warmup_steps", warmup_steps, 0)
        self.start, self.steps, self.warmup_steps = start, steps, warmup_steps

    def __call__(self, step: int) -> float:
        progress = min(max((step - self.warmup_steps) / self.steps, 0.0), 1.0)
        return self.start + (1.0 - self.start) * self.shape(progress)

    @abstractmethod
    def shape(self, progress: float) -> float:
        """Monotone map of [0, 1] onto [0, 1]."""


class LinearSchedule(_Ramp):
    def shape(self, progress: float) -> float:
        return progress


class CosineSchedule(_Ramp):
    """Slow start, fast middle, slow finish."""

    def shape(self, progress: float) -> float:
        return 0.5 * (1.0 - math.cos(math.pi * progress))


class StepSchedule(_Ramp):
    """``start`` until warm-up plus ``steps``, then the full rate."""

    def shape(self, progress: float) -> float:
        return 1.0 if progress >= 1.0 else 0.0
