"""The masked-diffusion objective, in one place.

Let ``m`` be the hidden positions, ``CE_i = -log p(x_i | x with m replaced by [MASK])``
and ``N_b`` the number of positions sample ``b``'s strategy could hide.

* Random time t ~ U(eps, 1) per sample (masked diffusion, as LLaDA / MDLM): each hidden
  token's loss is weighted 1/t, giving an estimator of the negative ELBO per token::

      L = 1/B * sum_b  1/(t_b * N_b) * sum_{i in m_b} CE_bi

* Fixed rate: the plain mean over hidden tokens::

      L = sum_{b, i in m_b} CE_bi / |m|

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


def token_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CE at the positions of ``mask`` only (computed in float32 for bf16 logits)."""
    return F.cross_entropy(logits[mask].float(), targets[mask], reduction="none")


def masked_diffusion_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor,
    maskable: torch.Tensor | None = None,
    time: torch.Tensor | None = None,
) -> ObjectiveOutput:
    """See the module docstring; ``time`` given means the 1/t-weighted ELBO."""
    scored = mask & valid
    nll = token_nll(logits, targets, scored)
    if time is None:
        loss = nll.sum() / scored.sum().clamp(min=1)
    else:
        if maskable is None:
            raise ValueError("the ELBO needs `maskable` to normalise each sample")
        per_sample = torch.zeros(scored.shape[0], device=nll.device, dtype=nll.dtype)
        per_sample.index_add_(0, scored.nonzero()[:, 0], nll)
        count = (maskable & valid).sum(dim=1).clamp(min=1)
        loss = (per_sample / (time.to(nll.dtype) * count)).mean()
    return ObjectiveOutput(loss=loss, token_nll=nll, mask=scored)
