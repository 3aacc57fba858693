"""Partial observability: hide a fraction of the *visible* cells of every observation.

The wrapper only decides which cells are hidden (``obs["occluded"]``, bool ``[7, 7]`` indexed
like the image) and blanks them in the image with a code that is no minigrid value, so
nothing downstream can read them by accident; the tokenizer turns occluded cells into MASK
tokens (``TrajectoryTokenizer.encode_steps(hidden_cells=...)``). Turning them into
"unseen" instead would tell the model something false about the world.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from minigrid.core.constants import OBJECT_TO_IDX

from anyorder.errors import ConfigError

OCCLUDED_CODE = 255  # not an object, colour or state index: an occluded cell reads as garbage
_UNSEEN = OBJECT_TO_IDX["unseen"]


def occlusion_mask(image: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """bool ``[7, 7]``: exactly ``round(fraction * visible)`` of the visible cells, chosen at random."""
    visible = np.flatnonzero(image[..., 0].reshape(-1) != _UNSEEN)
    count = round(fraction * len(visible))
    hidden = np.zeros(image.shape[0] * image.shape[1], dtype=bool)
    hidden[rng.choice(visible, size=count, replace=False)] = True
    return hidden.reshape(image.shape[:2])


class OcclusionWrapper(gym.ObservationWrapper):
    """Hides ``fraction`` of the visible cells of each observation (seeded by ``seed``)."""

    def __init__(self, env: gym.Env, fraction: float, seed: int = 0) -> None:
        if not 0 <= fraction < 1:
            raise ConfigError("occlusion", f"fractions must be in [0, 1), got {fraction}")
        super().__init__(env)
        self.fraction = fraction
        self.rng = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if seed is not None:  # the same episode seed occludes the same way, whatever ran before
            self.rng = np.random.default_rng((seed, round(self.fraction * 1000)))
        return super().reset(seed=seed, options=options)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        hidden = occlusion_mask(observation["image"], self.fraction, self.rng)
        image = observation["image"].copy()
        image[hidden] = OCCLUDED_CODE
        return {**observation, "image": image, "occluded": hidden}
