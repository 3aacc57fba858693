"""Evaluation metrics: confidence intervals and torchmetrics that aggregate over batches/ranks."""

from __future__ import annotations

import math

import numpy as np
import torch

from anyorder.data.layout import NUM_CELLS


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate: sound at 0%, 100% and small n, unlike p ± 1.96 se."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


# two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t_{0.975} with ``df`` degrees of freedom (a table to 30, then a Cornish-Fisher expansion)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: list[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval across runs (e.g. training seeds): the spread between seeds counts,
    unlike a Wilson interval over pooled episodes. NaN bounds for fewer than two values."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if values.size else float("nan")
    if values.size < 2:
        return mean, float("nan"), float("nan")
    half = t_quantile_975(values.size - 1) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def area_under_curve(fractions: list[float], values: list[float]) -> float:
    """Trapezoid area, normalised by the fraction range, so a flat curve at v has area v."""
    if len(fractions) < 2:
        return float(values[0]) if values else 0.0
    return float(np.trapezoid(values, fractions) / (max(fractions) - min(fractions)))


def cell_units(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """int64 ``[B, L]``: step * 49 + cell at attribute positions, -1 elsewhere."""
    return torch.where(batch["cell"] >= 0, batch["step"] * NUM_CELLS + batch["cell"], -1)


def cell_scores(
    predicted: torch.Tensor, target: torch.Tensor, scored: torch.Tensor, units: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """float per scored cell (1 where every scored attribute is right) and the row (window) it is in."""
    wrong = torch.zeros(units.shape[0], int(units.max()) + 1 if units.numel() else 1, device=units.device)
    present = torch.zeros_like(wrong)
    index = units.clamp(min=0)
    scored = scored & (units >= 0)
    wrong.scatter_add_(1, index, (scored & (predicted != target)).float())
    present.scatter_add_(1, index, scored.float())
    rows = (present > 0).nonzero()[:, 0]
    return (wrong[present > 0] == 0).float(), rows


def exact_cells(
    predicted: torch.Tensor, target: torch.Tensor, scored: torch.Tensor, units: torch.Tensor
) -> torch.Tensor:
    """float per scored cell: 1 where every scored attribute is right."""
    return cell_scores(predicted, target, scored, units)[0]


class WindowMean:
    """A mean over items (tokens, cells, actions) that come in windows, with a 95% interval.

    Items of one window are not independent (the cells of one view, the tokens of one step), so
    the interval treats windows as the sampled units: the ratio estimator ``sum s_w / sum c_w``
    over windows w with item sum ``s_w`` and count ``c_w``, its variance by linearisation,
    ``n / (n - 1) * sum (s_w - r c_w)^2 / (sum c_w)^2``.
    """

    def __init__(self) -> None:
        self.sums: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []

    def update(self, values: torch.Tensor, rows: torch.Tensor) -> None:
        """``values`` per item and the row (window) of the batch each item belongs to."""
        if values.numel() == 0:
            return
        rows = rows.detach().cpu().long()
        size = int(rows.max()) + 1
        sums = torch.zeros(size, dtype=torch.float64).index_add_(0, rows, values.detach().cpu().double())
        counts = torch.bincount(rows, minlength=size)
        keep = counts > 0
        self.sums.append(sums[keep].numpy())
        self.counts.append(counts[keep].numpy().astype(np.float64))

    @property
    def windows(self) -> int:
        return int(sum(len(c) for c in self.counts))

    @property
    def items(self) -> int:
        return int(sum(c.sum() for c in self.counts))

    def compute(self) -> float:
        total = sum(c.sum() for c in self.counts)
        return float(sum(s.sum() for s in self.sums) / total) if total else float("nan")

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """95% interval of :meth:`compute` (NaN with fewer than two windows)."""
        if self.windows < 2:
            return float("nan"), float("nan")
        sums, counts = np.concatenate(self.sums), np.concatenate(self.counts)
        ratio = sums.sum() / counts.sum()
        n = len(sums)
        variance = n / (n - 1) * np.sum((sums - ratio * counts) ** 2) / counts.sum() ** 2
        half = z * math.sqrt(variance)
        return max(0.0, float(ratio - half)), float(ratio + half)  # every metric here is non-negative
