"""Imagination: the world model rolled k steps open loop under the logged actions.

From an episode's first step, the model predicts step 1's observation (the world-model query),
then step 2's from a window that holds its own decoded step 1, and so on: each step after the
first is fed the model's own views, never the true ones; the actions are the logged ones. At
each k the decoded view is scored on the cells ego-mapped from the true previous view (what
the geometry determines), beside the ego-motion copy iterated the same way (its own previous
prediction moved by the logged action).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from anyorder.data.datamodule import EpisodeTable
from anyorder.data.layout import NUM_CELLS, STEP_LENGTH
from anyorder.data.tokenizer import TokenBatch, TrajectoryTokenizer
from anyorder.eval.baselines import OBSERVATION_LENGTH, ego_prediction
from anyorder.eval.egomotion import EgoMotion
from anyorder.eval.metrics import ClusteredMean
from anyorder.masking.queries import last_step, world_model_query

Decoder = Callable[[TokenBatch, torch.Tensor], torch.Tensor]
CELL_TOKENS = NUM_CELLS * 3


def starting_episodes(table: EpisodeTable, horizon: int, limit: int) -> np.ndarray:
    """Episodes long enough for ``horizon`` imagined steps after their first, at most ``limit``."""
    return np.flatnonzero(table.lengths > horizon)[:limit]


def window_batch(tokenizer: TrajectoryTokenizer, missions: np.ndarray, steps: torch.Tensor, end: int) -> TokenBatch:
    """Windows of ``tokenizer.window`` steps ending at step ``end`` of ``steps [N, T, STEP_LENGTH]``,
    left-padded before step 0 as the data module pads them."""
    window = tokenizer.window
    index = np.arange(end - window + 1, end + 1)
    valid = np.broadcast_to(index >= 0, (len(missions), window))
    chosen = steps[:, np.maximum(index, 0)].numpy()
    return tokenizer.assemble(missions, chosen, np.ascontiguousarray(valid))


@torch.no_grad()
def imagine(
    decode: Decoder,
    tokenizer: TrajectoryTokenizer,
    table: EpisodeTable,
    fill: torch.Tensor,
    horizon: int = 5,
    max_rollouts: int = 256,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> dict:
    """Exact cells on ego-mapped cells at k = 1..``horizon``, the model's and the iterated copy's,
    with 95% intervals over episodes. ``fill``: the position mode (cells new in view, for the copy)."""
    egomotion = EgoMotion(tokenizer.vocabulary)
    episodes = starting_episodes(table, horizon, max_rollouts)
    model = [ClusteredMean() for _ in range(horizon)]
    copy = [ClusteredMean() for _ in range(horizon)]
    for start in range(0, len(episodes), batch_size):
        chosen = episodes[start : start + batch_size]
        rows = table.offsets[chosen][:, None] + np.arange(horizon + 1)[None]
        truth = torch.from_numpy(table.steps[rows].astype(np.int64))  # [N, H+1, STEP_LENGTH]
        missions = table.missions[chosen]
        imagined, copied = truth.clone(), truth.clone()
        for k in range(1, horizon + 1):
            batch = {key: value.to(device) for key, value in window_batch(tokenizer, missions, imagined, k).items()}
            decoded = decode(batch, world_model_query(batch))
            last = decoded[last_step(batch)].view(len(chosen), STEP_LENGTH).cpu()
            imagined[:, k, :OBSERVATION_LENGTH] = last[:, :OBSERVATION_LENGTH]
            previous = copied[:, k - 1].clone()
            previous[:, -1] = truth[:, k - 1, -1]  # the logged action moves the copy's own view
            predicted, _ = ego_prediction(egomotion, previous, fill)
            copied[:, k, :OBSERVATION_LENGTH] = predicted
            # scored: the cells the true previous view determines under the logged action
            _, known = ego_prediction(egomotion, truth[:, k - 1], fill)
            mapped = known[:, :CELL_TOKENS:3]
            cells = truth[:, k, :CELL_TOKENS].view(-1, NUM_CELLS, 3)
            index = torch.from_numpy(chosen)[:, None].expand_as(mapped)[mapped]  # one cluster per episode
            for means, guess in ((model, imagined), (copy, copied)):
                right = (guess[:, k, :CELL_TOKENS].view(-1, NUM_CELLS, 3) == cells).all(dim=2)
                means[k - 1].update(right[mapped].float(), index)
    return {
        "k": list(range(1, horizon + 1)),
        "rollouts": len(episodes),
        "model": [m.compute() for m in model],
        "model_ci95": [list(m.interval()) for m in model],
        "ego_motion_copy": [m.compute() for m in copy],
        "ego_motion_copy_ci95": [list(m.interval()) for m in copy],
    }
