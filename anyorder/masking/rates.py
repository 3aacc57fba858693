"""How much to hide per sample: a fixed rate, or masked-diffusion time t ~ U(eps, ceiling)."""

from __future__ import annotations

import torch

from anyorder.errors import ConfigError


def check_prob(prob: float | None, eps: float) -> None:
    if prob is not None and not 0 < prob <= 1:
        raise ConfigError("prob", f"must be in (0, 1] (or null for random t ~ U(eps, 1)), got {prob}")
    if not 0 < eps < 1:
        raise ConfigError("eps", f"must be in (0, 1), got {eps}")


def sample_rates(
    batch_size: int,
    prob: float | None,
    eps: float,
    ceiling: float,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``[B]`` rates: ``prob * ceiling`` each, or stratified t in U(eps, ceiling).

    Stratified (low-discrepancy) sampling puts one t in each of B equal slices of the
    interval, shifted by one shared uniform offset: the same marginal U(eps, ceiling) as
    i.i.d. draws, with much lower variance of the batch's loss (as in MDLM).
    """
    if prob is not None:
        return torch.full((batch_size,), prob * ceiling, device=device)
    top = max(ceiling, eps)
    offset = torch.rand(1, device=device, generator=generator)
    slices = (offset + torch.arange(batch_size, device=device) / batch_size) % 1.0
    order = torch.randperm(batch_size, device=device, generator=generator)
    return eps + (top - eps) * slices[order]
