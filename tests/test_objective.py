"""The masked-diffusion loss: padding never counts, samples are weighed equally, random t is 1/t-weighted."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anyorder.models.objective import masked_diffusion_loss


def make_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 10, 7, generator=g)
    targets = torch.randint(0, 7, (3, 10), generator=g)
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[:, :3] = False  # left padding
    mask = torch.rand(3, 10, generator=g) < 0.5
    mask[:, 5] = True
    return logits, targets, mask, valid


def test_padding_never_counts_even_if_a_strategy_masks_it() -> None:
    logits, targets, mask, valid = make_inputs()
    clean = masked_diffusion_loss(logits, targets, mask & valid, valid).loss
    mask_with_pad = mask.clone()
    mask_with_pad[:, :3] = True
    noisy_logits, noisy_targets = logits.clone(), targets.clone()
    noisy_logits[:, :3] = 100 * torch.randn(3, 3, 7)
    noisy_targets[:, :3] = 0
    everywhere = torch.ones_like(valid)  # a strategy that (wrongly) calls padding maskable
    for time in (None, torch.tensor([0.2, 0.5, 0.9])):
        a = masked_diffusion_loss(logits, targets, mask & valid, valid, valid, time).loss
        b = masked_diffusion_loss(noisy_logits, noisy_targets, mask_with_pad, valid, everywhere, time).loss
        assert torch.allclose(a, b)
    assert torch.allclose(clean, masked_diffusion_loss(noisy_logits, noisy_targets, mask_with_pad, valid).loss)


def test_fixed_rate_is_the_mean_over_samples_of_each_samples_hidden_mean() -> None:
    logits, targets, mask, valid = make_inputs(1)
    mask[0] = True  # samples hiding 7 and 1 tokens: as many votes each
    mask[1] = False
    mask[1, 5] = True
    scored = mask & valid
    ce = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), reduction="none").reshape(3, 10)
    out = masked_diffusion_loss(logits, targets, mask, valid)
    assert torch.allclose(out.loss, torch.stack([ce[b][scored[b]].mean() for b in range(3)]).mean())
    assert not torch.allclose(out.loss, ce[scored].mean())  # samples, not tokens, are weighed equally
    assert out.token_nll.shape == (int(scored.sum()),)


def test_random_time_is_the_one_over_t_weighted_elbo() -> None:
    logits, targets, mask, valid = make_inputs(2)
    time = torch.tensor([0.1, 0.5, 1.0])
    maskable = valid.clone()
    ce = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), reduction="none").reshape(3, 10)
    scored = mask & valid
    expected = torch.stack([(ce[b] * scored[b]).sum() / (time[b] * maskable[b].sum()) for b in range(3)]).mean()
    out = masked_diffusion_loss(logits, targets, mask, valid, maskable, time)
    assert torch.allclose(out.loss, expected)
    # halving every t doubles the loss
    half = masked_diffusion_loss(logits, targets, mask, valid, maskable, time / 2).loss
    assert torch.allclose(half, 2 * out.loss)


def test_gradients_flow_only_through_hidden_positions() -> None:
    logits, targets, mask, valid = make_inputs(3)
    logits.requires_grad_(True)
    masked_diffusion_loss(logits, targets, mask, valid).loss.backward()
    touched = logits.grad.abs().sum(-1) > 0
    assert torch.equal(touched, mask & valid)


def test_the_layout_embedding_gives_a_cell_the_same_row_and_column_in_every_step() -> None:
    from anyorder.data.layout import Layout
    from anyorder.errors import ConfigError
    from anyorder.models.backbones import LayoutEmbedding, PreNormEncoder

    layout = Layout.build(3, 5)
    embedding = LayoutEmbedding(3, 5, layout.length, 16)
    vectors = embedding()
    first = (layout.step == 0) & (layout.cell == 10)
    third = (layout.step == 2) & (layout.cell == 10)
    # same cell, same attribute, different steps: they differ by the step embeddings alone
    difference = vectors[first] - vectors[third]
    expected = embedding.steps.weight[1] - embedding.steps.weight[3]
    torch.testing.assert_close(difference, expected.expand_as(difference))
    encoder = PreNormEncoder(30, layout.length, hidden_size=16, num_layers=1, num_heads=2, window=3, mission_length=5)
    ids = torch.randint(0, 30, (2, layout.length))
    assert encoder(ids, torch.ones_like(ids, dtype=torch.bool)).shape == (2, layout.length, 30)
    with pytest.raises(ConfigError, match=r"model\.backbone\.window"):
        LayoutEmbedding(2, 5, layout.length, 16)  # the data's windows are 3 steps long
