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


def difference_interval(
    first: list[float] | np.ndarray, second: list[float] | np.ndarray
) -> tuple[float, float, float]:
    """Mean of ``first`` minus mean of ``second`` (e.g. two recipes' training seeds) with Welch's
    95% interval (unequal spreads; the degrees of freedom rounded down, so never narrower than
    Welch's). Where it holds 0, ``max(|low|, |high|)`` is the tie's equivalence bound: the two
    differ by less than that at 95%. NaN bounds for fewer than two values on either side; no
    spread on either side (every seed at 1.0) gives a zero-width interval that bounds nothing:
    read the pooled episodes' interval then."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    difference = float(first.mean() - second.mean()) if first.size and second.size else float("nan")
    if min(first.size, second.size) < 2:
        return difference, float("nan"), float("nan")
    parts = first.var(ddof=1) / first.size, second.var(ddof=1) / second.size
    spread = math.sqrt(sum(parts))
    if spread == 0:
        return difference, difference, difference
    df = sum(parts) ** 2 / (parts[0] ** 2 / (first.size - 1) + parts[1] ** 2 / (second.size - 1))
    half = t_quantile_975(max(1, math.floor(df))) * spread
    return difference, difference - half, difference + half


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


class ClusteredMean:
    """A mean over items (tokens, cells, actions) that come in clusters, with a 95% interval.

    Items of one episode are not independent (the cells of one view, the overlapping windows of
    one episode), so the interval treats clusters -- episodes where the batch says which
    (``batch["episode"]``), else windows -- as the sampled units: the ratio estimator
    ``r = sum s_e / sum c_e`` over clusters e with item sum ``s_e`` and count ``c_e``, its
    variance by linearisation, ``n / (n - 1) * sum (s_e - r c_e)^2 / (sum c_e)^2``, and a
    t-quantile with n - 1 degrees of freedom.
    """

    def __init__(self) -> None:
        self.ids: list[np.ndarray] = []
        self.sums: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []

    def update(self, values: torch.Tensor, clusters: torch.Tensor) -> None:
        """``values`` per item and the cluster id (an int64, any range) each item belongs to."""
        if values.numel() == 0:
            return
        ids, inverse = torch.unique(clusters.detach().cpu().long(), return_inverse=True)
        sums = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, inverse, values.detach().cpu().double())
        self.ids.append(ids.numpy())
        self.sums.append(sums.numpy())
        self.counts.append(torch.bincount(inverse, minlength=len(ids)).numpy().astype(np.float64))

    def totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cluster ids (sorted) with each one's item sum and count, over every update."""
        if not self.ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
        ids, inverse = np.unique(np.concatenate(self.ids), return_inverse=True)
        sums = np.bincount(inverse, weights=np.concatenate(self.sums), minlength=len(ids))
        counts = np.bincount(inverse, weights=np.concatenate(self.counts), minlength=len(ids))
        return ids, sums, counts

    @property
    def clusters(self) -> int:
        return len(self.totals()[0])

    def compute(self) -> float:
        _, sums, counts = self.totals()
        return float(sums.sum() / counts.sum()) if counts.sum() else float("nan")

    def interval(self) -> tuple[float, float]:
        """95% interval of :meth:`compute` (NaN with fewer than two clusters)."""
        _, sums, counts = self.totals()
        n = len(sums)
        if n < 2:
            return float("nan"), float("nan")
        ratio = sums.sum() / counts.sum()
        residual = (sums - ratio * counts) / counts.sum()
        half = t_quantile_975(n - 1) * math.sqrt(n / (n - 1) * np.sum(residual**2))
        return max(0.0, float(ratio - half)), float(ratio + half)  # every metric here is non-negative


def batch_clusters(batch: dict[str, torch.Tensor], first_window: int) -> torch.Tensor:
    """long ``[B]``: each window's cluster -- its episode where the batch carries one (windows of
    the data module do), else the window itself, numbered from ``first_window``."""
    if "episode" in batch:
        return batch["episode"].long()
    return first_window + torch.arange(batch["input_ids"].shape[0], device=batch["input_ids"].device)


def paired_difference(first: ClusteredMean, second: ClusteredMean) -> tuple[float, float, float]:
    """``first - second`` measured on the same clusters, and its 95% interval: what the two share
    (a hard episode is hard for both) cancels, so a model is told apart from a baseline on the
    same windows by their difference, not by two overlapping marginal intervals."""
    ids_a, sums_a, counts_a = first.totals()
    ids_b, sums_b, counts_b = second.totals()
    ids = np.union1d(ids_a, ids_b)
    n = len(ids)
    if n < 2 or not counts_a.sum() or not counts_b.sum():
        return float("nan"), float("nan"), float("nan")

    def residuals(own: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> tuple[float, np.ndarray]:
        ratio = sums.sum() / counts.sum()
        out = np.zeros(n)
        out[np.searchsorted(ids, own)] = (sums - ratio * counts) / counts.sum()
        return ratio, out

    ratio_a, residual_a = residuals(ids_a, sums_a, counts_a)
    ratio_b, residual_b = residuals(ids_b, sums_b, counts_b)
    half = t_quantile_975(n - 1) * math.sqrt(n / (n - 1) * np.sum((residual_a - residual_b) ** 2))
    difference = float(ratio_a - ratio_b)
    return difference, difference - half, difference + half


class ClusteredMetrics:
    """Named :class:`ClusteredMean` metrics fed batch by batch, each item filed under its window's
    cluster: what the model's and the baselines' evaluators share, so that they pair by episode."""

    def __init__(self) -> None:
        self.means: dict[str, ClusteredMean] = {}
        self.windows = 0
        self.clusters = torch.zeros(0, dtype=torch.long)

    def start_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """Number this batch's windows (their episodes where the batch says)."""
        self.clusters = batch_clusters(batch, self.windows).cpu()
        self.windows += batch["input_ids"].shape[0]

    def _add(self, name: str, values: torch.Tensor, rows: torch.Tensor) -> None:
        """``values`` per item and the batch row (window) of each."""
        self.means.setdefault(name, ClusteredMean()).update(values, self.clusters[rows.cpu()])

    def _add_at(self, name: str, values: torch.Tensor, where: torch.Tensor) -> None:
        """``values``: one per True position of ``where`` (bool ``[B, L]``), in row-major order."""
        self._add(name, values, where.nonzero()[:, 0])

    def _add_cells(
        self, name: str, predicted: torch.Tensor, batch: dict[str, torch.Tensor], scored: torch.Tensor
    ) -> None:
        self._add(name, *cell_scores(predicted, batch["input_ids"], scored, cell_units(batch)))
