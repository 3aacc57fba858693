"""The masked-diffusion objective, in one place.

Let ``m_b`` be sample ``b``'s hidden positions, ``CE_bi = -log p(x_i | x with m_b replaced
by [MASK])`` and ``N_b`` the number of positions ``b``'s strategy could hide. Each sample
first gets its own loss:

* Random time t ~ U(eps, 1) per sample (masked diffusion, as LLaDA / MDLM): each hidden
  token is weighted 1/t, an estimator of the sample's negative ELBO per token::

      l_b = 1/(t_b * N_b) * sum_{i in m_b} CE_bi

* Fixed rate: the mean over the sample's hidden tokens::

      l_b = 1/|m_b| * sum_{i in m_b} CE_bi

Then the batch loss weighs samples, not tokens, so that a strategy's share of the
objective is its mixture weight whatever the number of tokens it hides (a sample hiding
150 observation tokens counts as much as one hiding a single action)::

      L = sum_k w_k * mean_{b in group k, |m_b| > 0} l_b

with ``w_k`` the weight of the strategy that masked group ``k`` (renormalised over the
groups present in the batch; one group when there is no mixture). A sample that hides
nothing (possible at a fixed rate: each unit is hidden independently with probability p)
carries no question and is left out of its group's mean.

Padding is never hidden or scored: ``mask`` is intersected with ``valid`` here again, so a
strategy bug cannot leak padding into the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ObjectiveOutput:
    loss: torch.Tensor  # scalar
    token_nll: torch.Tensor  # [N] CE of each hidden, valid position (row-major order)
    mask: torch.Tensor  # bool [B, L]: the positions that were scored
    sample_loss: torch.Tensor  # [B] l_b (0 where nothing is hidden)
    sample_weight: torch.Tensor  # [B] each sample's weight in L (sums to 1 when anything is hidden)


def token_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CE at the positions of ``mask`` only (computed in float32 for bf16 logits)."""
    return F.cross_entropy(logits[mask].float(), targets[mask], reduction="none")


def sample_weights(hides: torch.Tensor, group: torch.Tensor, group_weights: torch.Tensor) -> torch.Tensor:
    """``[B]``: ``w_k / (samples of group k that hide something)``, renormalised over the groups present."""
    hides = hides.to(group_weights.dtype)
    count = torch.zeros_like(group_weights).index_add_(0, group, hides)
    present = group_weights * (count > 0)
    share = present / present.sum().clamp(min=torch.finfo(present.dtype).tiny)
    return hides * (share / count.clamp(min=1))[group]


def masked_diffusion_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor,
    maskable: torch.Tensor | None = None,
    time: torch.Tensor | None = None,
    group: torch.Tensor | None = None,
    group_weights: torch.Tensor | None = None,
) -> ObjectiveOutput:
    """See the module docstring; ``time`` given means the 1/t-weighted ELBO; ``group`` (long
    [B]) and ``group_weights`` ([K]) give each mixture strategy its share (default: one group)."""
    scored = mask & valid
    nll = token_nll(logits, targets, scored)
    batch = scored.shape[0]
    total = torch.zeros(batch, device=nll.device, dtype=nll.dtype).index_add_(0, scored.nonzero()[:, 0], nll)
    hidden = scored.sum(dim=1)
    if time is None:
        per_sample = total / hidden.clamp(min=1)
    else:
        if maskable is None:
            raise ValueError("the ELBO needs `maskable` to normalise each sample")
        count = (maskable & valid).sum(dim=1).clamp(min=1)
        per_sample = total / (time.to(nll.dtype) * count)
    if group is None:
        group = torch.zeros(batch, dtype=torch.long, device=nll.device)
        group_weights = torch.ones(1, device=nll.device, dtype=nll.dtype)
    elif group_weights is None:
        raise ValueError("`group` needs `group_weights`")
    weight = sample_weights(hidden > 0, group, group_weights.to(device=nll.device, dtype=nll.dtype))
    loss = (weight * per_sample).sum()
    return ObjectiveOutput(loss=loss, token_nll=nll, mask=scored, sample_loss=per_sample, sample_weight=weight)
