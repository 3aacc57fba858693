"""Evaluation metrics: confidence intervals and torchmetrics that aggregate over batches/ranks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from anyorder.data.layout import NUM_CELLS


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate: sound at 0%, 100% and small n, unlike p ± 1.96 se."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def area_under_curve(fractions: list[float], values: list[float]) -> float:
    """Trapezoid area, normalised by the fraction range, so a flat curve at v has area v."""
    if len(fractions) < 2:
        return float(values[0]) if values else 0.0
    return float(np.trapezoid(values, fractions) / (max(fractions) - min(fractions)))


def cell_units(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """int64 ``[B, L]``: step * 49 + cell at attribute positions, -1 elsewhere."""
    return torch.where(batch["cell"] >= 0, batch["step"] * NUM_CELLS + batch["cell"], -1)


class ExactCellAccuracy(Metric):
    """Share of scored cells whose every scored attribute was predicted right."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: torch.Tensor, target: torch.Tensor, scored: torch.Tensor, units: torch.Tensor) -> None:
        batch, length = units.shape
        scored = scored & (units >= 0)
        index = (torch.arange(batch, device=units.device)[:, None] * length + units.clamp(min=0)).flatten()
        wrong = torch.zeros(batch * length, device=units.device)
        present = torch.zeros(batch * length, device=units.device)
        wrong.index_add_(0, index, (scored & (predicted != target)).flatten().float())
        present.index_add_(0, index, scored.flatten().float())
        self.correct += ((present > 0) & (wrong == 0)).sum()
        self.total += (present > 0).sum()

    def compute(self) -> torch.Tensor:
        return (self.correct / self.total.clamp(min=1)).float()
