"""Masking strategies: which positions to hide, given the layout fields and a rate per sample.

Every strategy is the same mechanism with a different notion of *unit*: it assigns each
position a unit id (-1 = never hidden), and each unit is hidden independently with the
sample's rate, taking all of its positions with it. ``cell`` makes a cell's three
attribute tokens one unit, ``step`` a whole observation, and so on.

At a fixed rate p that is all: the expected hidden share is p at any window length, and a
sample that happens to hide nothing is left out of the loss (see
:mod:`anyorder.models.objective`). With random time t the masked-diffusion weight 1/t would
blow up on the rare token a tiny t hides, so there the rate is raised to at least 1/n for a
sample with n units and a sample in which no unit came up still hides the one with the
smallest draw. The *effective* rate returned for the loss is then the expected share of
units this rule hides, ``t' + (1 - t')^n / n`` with ``t' = max(t, 1/n)``, which keeps the
1/(rate * N) weight unbiased (and each mixture strategy's share of the loss its weight).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from anyorder.data.layout import NUM_CELLS, TokenKind
from anyorder.errors import ConfigError
from anyorder.masking.queries import inverse_query, last_step, of_kinds, world_model_query


@dataclass(frozen=True)
class MaskSample:
    """``mask``: positions hidden; ``maskable``: positions the strategy could have hidden;
    ``group``: which mixture strategy masked each sample, ``group_weights`` their weights
    (one group of weight 1 when there is no mixture)."""

    mask: torch.Tensor  # bool [B, L]
    maskable: torch.Tensor  # bool [B, L]
    rate: torch.Tensor  # float [B]: the expected hidden share of units (see the module docstring)
    group: torch.Tensor | None = None  # long [B]
    group_weights: torch.Tensor | None = None  # float [K]

    def __post_init__(self) -> None:
        device = self.mask.device
        if self.group is None:
            object.__setattr__(self, "group", torch.zeros(self.mask.shape[0], dtype=torch.long, device=device))
        if self.group_weights is None:
            object.__setattr__(self, "group_weights", torch.ones(1, device=device))


class MaskingStrategy(ABC):
    """Decides which positions to hide; see the module docstring for the unit mechanism."""

    always_hidden = False  # True: every unit is hidden whatever the rate (a fixed question)

    @abstractmethod
    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Unit id per position, in ``[0, L)``, or -1 where the position is never hidden."""

    def __call__(
        self,
        kind: torch.Tensor,
        step: torch.Tensor,
        cell: torch.Tensor,
        rate: torch.Tensor,
        generator: torch.Generator | None = None,
        at_least_one: bool = False,
    ) -> MaskSample:
        """``at_least_one``: the random-t rule (rate floored at 1/units, one unit forced)."""
        units = self.units(kind, step, cell)
        if self.always_hidden:
            rate = torch.ones_like(rate, dtype=torch.float)
        return sample_units(units, rate, generator, at_least_one)


def sample_units(
    units: torch.Tensor, rate: torch.Tensor, generator: torch.Generator | None, at_least_one: bool = False
) -> MaskSample:
    """Hide each unit with probability ``rate[b]``; with ``at_least_one``, the random-t rule."""
    batch, length = units.shape
    maskable = units >= 0
    index = units.clamp(min=0)
    exists = (
        torch.zeros(batch, length, device=units.device)
        .scatter_reduce(1, index, maskable.float(), reduce="amax", include_self=True)
        .bool()
    )
    rate = rate.float()
    count = exists.sum(dim=1).clamp(min=1)
    if at_least_one:
        rate = torch.maximum(rate, 1.0 / count)
    draws = torch.rand(batch, length, device=units.device, generator=generator)
    draws = torch.where(exists, draws, torch.full_like(draws, 2.0))
    hidden = draws < rate[:, None]
    if at_least_one:
        forced = torch.zeros_like(hidden).scatter_(1, draws.argmin(dim=1, keepdim=True), True)
        hidden |= forced & exists & ~hidden.any(dim=1, keepdim=True)
        # the expected share of units hidden under the rule, so that 1/(rate * N) stays unbiased
        rate = rate + (1 - rate) ** count / count
    mask = torch.gather(hidden, 1, index) & maskable
    return MaskSample(mask=mask, maskable=maskable, rate=rate)


def _positions(kind: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Each allowed position is its own unit."""
    positions = torch.arange(kind.shape[1], device=kind.device).expand_as(kind)
    return torch.where(allowed, positions, -1)


_CELL = (TokenKind.OBJECT, TokenKind.COLOR, TokenKind.STATE)
_STEP_TOKENS = (*_CELL, TokenKind.DIRECTION, TokenKind.ACTION)


class UniformMasking(MaskingStrategy):
    """Every token independently (LLaDA-style); mission tokens too unless ``include_mission`` is off."""

    def __init__(self, include_mission: bool = True) -> None:
        self.include_mission = include_mission

    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        kinds = (*_STEP_TOKENS, TokenKind.MISSION) if self.include_mission else _STEP_TOKENS
        return _positions(kind, of_kinds(kind, kinds))


class AttributeMasking(MaskingStrategy):
    """Single observation attributes (object, colour or state), each on its own."""

    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return _positions(kind, of_kinds(kind, _CELL))


class CellMasking(MaskingStrategy):
    """Whole cells: a cell's object, colour and state are hidden together."""

    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return torch.where(of_kinds(kind, _CELL), step * NUM_CELLS + cell, -1)


class StepMasking(MaskingStrategy):
    """Whole observations (all cells and the direction of a step): the world-model objective."""

    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return torch.where(of_kinds(kind, (*_CELL, TokenKind.DIRECTION)), step, -1)


class ActionInpainting(MaskingStrategy):
    """Any of the window's actions at the rate: action in-painting (inverse modelling for the
    actions between observations). Often leaves the last action visible, so it is *not* the
    next-action question; that is :class:`NextActionMasking`."""

    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return _positions(kind, kind == TokenKind.ACTION)


class NextActionMasking(MaskingStrategy):
    """Exactly the policy query: the last step's action, always (one unit, so any rate hides
    it). Behaviour cloning is this strategy alone."""

    always_hidden = True  # the question is the same at any rate; t is reported as 1, so 1/t is 1

    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        final = last_step({"kind": kind, "step": step}) & (kind == TokenKind.ACTION)
        return _positions(kind, final)


class NextObservationMasking(MaskingStrategy):
    """Exactly the world-model query: the last step hidden whole (its observation, direction and
    action), the steps before it and their actions visible. Trains the question the world-model
    metrics ask, which uniform masking poses only when t happens to be near 1."""

    always_hidden = True

    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return torch.where(world_model_query({"kind": kind, "step": step}), step, -1)


class InverseMasking(MaskingStrategy):
    """Exactly the inverse query: the action between the last two observations and the last
    action (which would give it away). Windows without a previous step hide nothing and are
    left out of the loss."""

    always_hidden = True

    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return _positions(kind, inverse_query({"kind": kind, "step": step}))


class Mixture(MaskingStrategy):
    """Per sample, one strategy drawn with the given weights (e.g. 50% action + 50% cell)."""

    def __init__(self, strategies: Sequence[MaskingStrategy], weights: Sequence[float] | None = None) -> None:
        if not strategies:
            raise ConfigError("strategies", "a mixture needs at least one strategy")
        weights = list(weights) if weights is not None else [1.0] * len(strategies)
        if len(weights) != len(strategies) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(
                "weights", f"need {len(strategies)} non-negative weights with a positive sum, got {weights}"
            )
        self.strategies = list(strategies)
        self.weights = torch.tensor(weights, dtype=torch.float) / sum(weights)
        self._weights_by_device: dict[torch.device, torch.Tensor] = {}

    def _weights_on(self, device: torch.device) -> torch.Tensor:
        """The weights copied once per device: a copy at every step would stall a GPU."""
        if device not in self._weights_by_device:
            self._weights_by_device[device] = self.weights.to(device)
        return self._weights_by_device[device]

    def units(self, kind: torch.Tensor, step: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        raise TypeError("a mixture has no single unit layout; call it instead")

    def __call__(
        self,
        kind: torch.Tensor,
        step: torch.Tensor,
        cell: torch.Tensor,
        rate: torch.Tensor,
        generator: torch.Generator | None = None,
        at_least_one: bool = False,
    ) -> MaskSample:
        weights = self._weights_on(kind.device)
        choice = torch.multinomial(weights, kind.shape[0], replacement=True, generator=generator)
        mask = torch.zeros_like(kind, dtype=torch.bool)
        maskable = torch.zeros_like(mask)
        effective = rate.float().clone()
        for index, strategy in enumerate(self.strategies):
            chosen = choice == index
            sample = strategy(kind, step, cell, rate, generator, at_least_one)
            mask = torch.where(chosen[:, None], sample.mask, mask)
            maskable = torch.where(chosen[:, None], sample.maskable, maskable)
            effective = torch.where(chosen, sample.rate, effective)
        return MaskSample(mask=mask, maskable=maskable, rate=effective, group=choice, group_weights=weights)
