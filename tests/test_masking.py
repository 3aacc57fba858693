"""Masking: each strategy's empirical rate and unit, mixtures, rates, schedules, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anyorder.data.layout import NUM_CELLS, TokenKind
from anyorder.data.tokenizer import TrajectoryTokenizer
from anyorder.data.vocabulary import Vocabulary
from anyorder.errors import ConfigError
from anyorder.masking import (
    ActionInpainting,
    AttributeMasking,
    CellMasking,
    InverseMasking,
    MaskingCallback,
    Mixture,
    NextActionMasking,
    NextObservationMasking,
    StepMasking,
    UniformMasking,
)
from anyorder.masking.rates import sample_rates
from anyorder.masking.schedule import ConstantSchedule, CosineSchedule, LinearSchedule, StepSchedule

CELL_KINDS = [int(TokenKind.OBJECT), int(TokenKind.COLOR), int(TokenKind.STATE)]


def layout_batch(window: int, batch: int, padded_steps: int = 0) -> dict[str, torch.Tensor]:
    tokenizer = TrajectoryTokenizer(Vocabulary.structured(), window=window, mission_length=6)
    steps = np.zeros((batch, window, 149), dtype=np.int64)
    valid = np.arange(window)[None, :].repeat(batch, 0) >= padded_steps
    missions = np.full((batch, 6), 0)
    missions[:, :4] = 40  # four real mission words
    return tokenizer.assemble(missions, steps, valid)


def hide(strategy, batch, rate: float, seed: int = 0, at_least_one: bool = False):
    generator = torch.Generator().manual_seed(seed)
    rates = torch.full((batch["kind"].shape[0],), rate)
    return strategy(batch["kind"], batch["step"], batch["cell"], rates, generator, at_least_one)


def expected_rate(rate: float, units: int, at_least_one: bool = False) -> float:
    """A fixed rate hides each unit with probability p. The random-t rule raises p to >= 1/n
    and forces one unit when none came up: p + (1 - p)^n / n."""
    if not at_least_one:
        return rate
    rate = max(rate, 1 / units)
    return rate + (1 - rate) ** units / units


@settings(max_examples=15, deadline=None)
@given(rate=st.floats(0.05, 1.0), window=st.integers(1, 3), at_least_one=st.booleans())
def test_uniform_rate_and_scope(rate: float, window: int, at_least_one: bool) -> None:
    batch = layout_batch(window, 64)
    sample = hide(UniformMasking(), batch, rate, at_least_one=at_least_one)
    kind = batch["kind"]
    assert not sample.mask[(kind == TokenKind.PAD) | (kind == TokenKind.SPECIAL)].any()
    n = int(sample.maskable[0].sum())
    assert n == window * 149 + 4
    observed = sample.mask.float().sum() / sample.maskable.float().sum()
    sd = math.sqrt(rate * (1 - rate) / (64 * n))
    assert abs(observed - expected_rate(rate, n, at_least_one)) < 5 * sd + 1e-3


@settings(max_examples=15, deadline=None)
@given(rate=st.floats(0.05, 0.95), window=st.integers(1, 3), at_least_one=st.booleans())
def test_cell_hides_whole_cells_at_the_rate(rate: float, window: int, at_least_one: bool) -> None:
    batch = layout_batch(window, 64)
    sample = hide(CellMasking(), batch, rate, at_least_one=at_least_one)
    kind = batch["kind"]
    assert torch.isin(kind[sample.mask], torch.tensor(CELL_KINDS)).all()
    # per (sample, step, cell): 0 or 3 attributes hidden, never 1 or 2
    cell_positions = torch.isin(kind, torch.tensor(CELL_KINDS))
    unit = (batch["step"] * NUM_CELLS + batch["cell"])[0][cell_positions[0]]
    counts = sample.mask[:, cell_positions[0]].reshape(64, -1, 3).sum(-1)
    assert set(counts.unique().tolist()) <= {0, 3}
    assert len(unit.unique()) == window * NUM_CELLS
    units = window * NUM_CELLS
    observed = (counts == 3).float().mean()
    sd = math.sqrt(rate * (1 - rate) / (64 * units))
    assert abs(observed - expected_rate(rate, units, at_least_one)) < 5 * sd + 1e-3


@settings(max_examples=15, deadline=None)
@given(rate=st.floats(0.05, 0.95))
def test_attribute_hides_single_attributes_independently(rate: float) -> None:
    batch = layout_batch(2, 64)
    sample = hide(AttributeMasking(), batch, rate)
    kind = batch["kind"]
    assert torch.isin(kind[sample.mask], torch.tensor(CELL_KINDS)).all()
    cells = sample.mask[:, torch.isin(kind[0], torch.tensor(CELL_KINDS))].reshape(64, -1, 3)
    n = cells[0].numel()
    observed = cells.float().mean()
    assert abs(observed - expected_rate(rate, n)) < 5 * math.sqrt(rate * (1 - rate) / (64 * n)) + 1e-3
    if 0.2 < rate < 0.8:  # single attributes: partially hidden cells must occur
        assert ((cells.sum(-1) == 1) | (cells.sum(-1) == 2)).any()


def test_step_hides_whole_observations_but_not_actions() -> None:
    batch = layout_batch(3, 256)
    sample = hide(StepMasking(), batch, 0.4, at_least_one=True)
    kind, step = batch["kind"], batch["step"]
    assert not sample.mask[kind == TokenKind.ACTION].any()
    observation = torch.isin(kind, torch.tensor([*CELL_KINDS, int(TokenKind.DIRECTION)]))
    for s in range(3):
        block = sample.mask[:, (step[0] == s) & observation[0]]
        assert (block.all(1) | ~block.any(1)).all()  # a step is hidden whole or not at all
    hidden_steps = torch.stack([sample.mask[:, (step[0] == s) & observation[0]].all(1) for s in range(3)], 1)
    assert abs(hidden_steps.float().mean() - expected_rate(0.4, 3, at_least_one=True)) < 0.06


def test_action_inpainting_hides_only_actions_and_skips_padding() -> None:
    batch = layout_batch(4, 512, padded_steps=1)
    sample = hide(ActionInpainting(), batch, 0.5)
    kind = batch["kind"]
    assert (kind[sample.mask] == TokenKind.ACTION).all()
    assert sample.maskable.sum(1).eq(3).all()  # the padded step's action is not there
    assert abs(sample.mask.sum(1).float().mean() / 3 - 0.5) < 0.05
    # it often leaves the last action visible: it is not the next-action question
    final = sample.mask[:, -1]
    assert 0.4 < final.float().mean() < 0.6 and (sample.mask[:, :-1].any(1) & ~final).any()


@pytest.mark.parametrize("rate", [0.01, 0.5, 1.0])
@pytest.mark.parametrize("at_least_one", [False, True])
def test_next_action_asks_exactly_the_policy_query(rate: float, at_least_one: bool) -> None:
    from anyorder.masking.queries import policy_query

    batch = layout_batch(3, 64, padded_steps=1)
    sample = hide(NextActionMasking(), batch, rate, at_least_one=at_least_one)
    assert torch.equal(sample.mask, policy_query(batch))
    assert torch.equal(sample.rate, torch.ones(64))  # one unit hidden for sure: the 1/t weight is 1


@pytest.mark.parametrize("rate", [0.01, 0.5, 1.0])
@pytest.mark.parametrize("at_least_one", [False, True])
def test_the_world_model_and_inverse_strategies_ask_exactly_their_evaluation_queries(
    rate: float, at_least_one: bool
) -> None:
    from anyorder.masking.queries import inverse_query, world_model_query

    first_steps = layout_batch(2, 8, padded_steps=1)  # windows at an episode's first step
    later = layout_batch(2, 8)
    batch = {key: torch.cat([first_steps[key], later[key]]) for key in later}
    world = hide(NextObservationMasking(), batch, rate, at_least_one=at_least_one)
    assert torch.equal(world.mask, world_model_query(batch))  # the last step whole, nothing else
    assert (world.mask.sum(dim=1) == 149).all() and torch.equal(world.rate, torch.ones(16))
    inverse = hide(InverseMasking(), batch, rate, at_least_one=at_least_one)
    assert torch.equal(inverse.mask, inverse_query(batch))
    assert not inverse.mask[:8].any()  # no previous step, no inverse question: left out of the loss
    assert (inverse.mask[8:].sum(dim=1) == 2).all()  # a_{T-1} and a_T
    assert (batch["kind"][inverse.mask] == TokenKind.ACTION).all()


def test_a_fixed_rate_means_the_same_share_at_any_window() -> None:
    """Step masking at window 2 has two units; p is still the expected hidden share, and
    samples that hide nothing occur (the objective leaves them out)."""
    for window in (1, 2, 4):
        sample = hide(StepMasking(), layout_batch(window, 4000), 0.15)
        share = sample.mask.sum(1).float() / sample.maskable.sum(1)
        assert abs(share.mean() - 0.15) < 0.015
        assert abs((~sample.mask.any(1)).float().mean() - 0.85**window) < 0.03


def test_tiny_random_times_are_raised_to_one_unit_in_expectation() -> None:
    batch = layout_batch(1, 4000)
    sample = hide(CellMasking(), batch, 1e-4, at_least_one=True)
    assert torch.allclose(sample.rate, torch.full((4000,), expected_rate(1e-4, NUM_CELLS, at_least_one=True)))
    hidden_cells = sample.mask.sum(1) / 3
    assert (hidden_cells >= 1).all()  # every sample trains on something
    assert abs(hidden_cells.mean() - 1.37) < 0.05  # E = 1 + P(none drawn) = 1 + (48/49)^49


def test_mixture_picks_one_strategy_per_sample_with_its_weight() -> None:
    batch = layout_batch(2, 2000)
    sample = hide(Mixture([ActionInpainting(), CellMasking()], [0.25, 0.75]), batch, 0.5)
    kinds = batch["kind"]
    action_only = ((kinds == TokenKind.ACTION) | ~sample.mask).all(1)
    cells_only = (torch.isin(kinds, torch.tensor(CELL_KINDS)) | ~sample.mask).all(1)
    chosen = sample.group == 0
    assert action_only[chosen].all() and cells_only[~chosen].all()
    assert not cells_only[chosen & sample.mask.any(1)].any()
    assert abs(chosen.float().mean() - 0.25) < 0.04
    assert torch.allclose(sample.group_weights, torch.tensor([0.25, 0.75]))


def test_stratified_times_cover_the_interval() -> None:
    t = sample_rates(64, None, 1e-3, 1.0, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert ((t >= 1e-3) & (t <= 1.0)).all()
    # one draw in each of the 64 equal slices of (eps, 1)
    slices = ((t - 1e-3) / (1 - 1e-3) * 64).floor().long()
    assert sorted(slices.tolist()) == list(range(64))
    fixed = sample_rates(5, 0.3, 1e-3, 0.5, torch.device("cpu"))
    assert torch.allclose(fixed, torch.full((5,), 0.15))


def test_schedules() -> None:
    assert ConstantSchedule()(123) == 1.0
    linear = LinearSchedule(start=0.2, steps=100, warmup_steps=10)
    assert linear(0) == linear(10) == pytest.approx(0.2)
    assert linear(60) == pytest.approx(0.6)
    assert linear(500) == pytest.approx(1.0)
    cosine = CosineSchedule(start=0.0 + 0.1, steps=100)
    assert cosine(50) == pytest.approx(0.55) and cosine(100) == pytest.approx(1.0)
    assert StepSchedule(start=0.5, steps=10)(9) == 0.5 and StepSchedule(start=0.5, steps=10)(10) == 1.0


@pytest.mark.parametrize("prob", [0.0, -0.1, 1.5])
def test_prob_outside_unit_interval_names_the_field(prob: float) -> None:
    with pytest.raises(ConfigError, match="prob"):
        MaskingCallback(UniformMasking(), prob=prob)


def test_callback_writes_mask_keys_and_is_reproducible() -> None:
    batch = layout_batch(2, 8)
    callback = MaskingCallback(UniformMasking(), prob=None, schedule=LinearSchedule(start=0.5, steps=10))
    rate = callback.apply(batch, step=0, generator=torch.Generator().manual_seed(1))
    assert {"mask", "maskable", "mask_time"} <= set(batch)
    assert (rate <= 0.5).all()
    again = layout_batch(2, 8)
    callback.apply(again, step=0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(batch["mask"], again["mask"])
    fixed = MaskingCallback(UniformMasking(), prob=0.3)
    fixed.apply(batch, step=0, generator=None)
    assert "mask_time" not in batch


def test_mask_picture_shows_hidden_cells_as_strong_triples() -> None:
    from anyorder.masking.visualize import KIND_COLOURS, PADDING, PALE, mask_figure, mask_rgb

    batch = layout_batch(2, 3, padded_steps=1)
    batch["mask"] = hide(CellMasking(), batch, 0.3).mask
    image = mask_rgb(batch, samples=2)
    assert image.shape == (2, 3, 149, 3)  # mission + 2 steps per sample
    first = image[0]
    assert np.allclose(first[1], PADDING)  # the left-padded step
    strong = [np.asarray(rgb) for rgb in KIND_COLOURS.values()]
    assert all(not np.allclose(PADDING, rgb) for rgb in strong)  # padding is no kind's colour
    objects = first[2, 0:147:3]
    hidden = np.isclose(objects, KIND_COLOURS[TokenKind.OBJECT]).all(axis=1)
    colours = np.isclose(first[2, 1:147:3], KIND_COLOURS[TokenKind.COLOR]).all(axis=1)
    assert hidden.any() and (~hidden).any() and (hidden == colours).all()  # whole cells
    pale_action = PALE + (1 - PALE) * np.asarray(KIND_COLOURS[TokenKind.ACTION])
    assert np.allclose(first[2, 148], pale_action)  # the action stays visible under cell masking
    assert np.allclose(first[0, 4:], PADDING) and not np.allclose(first[0, :4], PADDING)  # four words, then padding
    figure = mask_figure(batch, samples=2)
    assert len(figure.axes) == 2 and figure.legends and figure.get_size_inches()[0] >= 12


@pytest.mark.parametrize("random_time", [False, True])
def test_each_strategy_gets_its_mixture_weight_as_its_share_of_the_loss(random_time: bool) -> None:
    """With every token equally hard, strategy k's share of the loss is its weight w_k, although
    the strategies hide from 1 (next action) to ~150 (a step) tokens per sample."""
    from anyorder.masking.rates import sample_rates
    from anyorder.models.objective import masked_diffusion_loss

    strategies = [
        UniformMasking(), AttributeMasking(), CellMasking(), StepMasking(), ActionInpainting(), NextActionMasking()
    ]  # fmt: skip
    weights = torch.arange(1.0, 7.0) / 21
    batch = layout_batch(2, 6000, padded_steps=0)
    size = batch["kind"].shape[0]
    rate = sample_rates(size, None if random_time else 0.3, 1e-3, 1.0, torch.device("cpu"), torch.Generator())
    generator = torch.Generator().manual_seed(0)
    sample = Mixture(strategies, weights.tolist())(
        batch["kind"], batch["step"], batch["cell"], rate, generator, at_least_one=random_time
    )
    logits = torch.zeros(*batch["kind"].shape, 5)  # CE = log 5 at every position
    targets = torch.zeros_like(batch["kind"])
    valid = batch["kind"] != TokenKind.PAD
    out = masked_diffusion_loss(
        logits, targets, sample.mask, valid, sample.maskable, sample.rate if random_time else None,
        sample.group, sample.group_weights,
    )  # fmt: skip
    contribution = out.sample_weight * out.sample_loss
    share = torch.stack([contribution[sample.group == k].sum() for k in range(6)]) / out.loss
    assert torch.allclose(share, weights, atol=0.02 if random_time else 1e-5)
    # what a mean over hidden tokens would have given the next-action question: almost nothing
    tokens = torch.stack([sample.mask[sample.group == k].sum() for k in range(6)]).float()
    assert tokens[5] / tokens.sum() < 0.02


def test_samples_that_hide_nothing_are_left_out() -> None:
    from anyorder.models.objective import masked_diffusion_loss

    logits, targets = torch.randn(4, 6, 3), torch.randint(0, 3, (4, 6))
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[0, 1] = mask[1, 2:5] = True  # samples 2 and 3 hide nothing
    valid = torch.ones_like(mask)
    out = masked_diffusion_loss(logits, targets, mask, valid)
    assert torch.equal(out.sample_weight, torch.tensor([0.5, 0.5, 0.0, 0.0]))
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), targets.reshape(-1), reduction="none").reshape(4, 6)
    assert torch.allclose(out.loss, (ce[0, 1] + ce[1, 2:5].mean()) / 2)
