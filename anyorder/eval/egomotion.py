"""Where each cell of the next view was in the previous one, given the agent's own action.

The 7x7 view is egocentric: the agent stands at (x=3, y=6) facing up, cells are numbered
row-major ``y * 7 + x``. After a step the new view is the old one moved by the agent's motion:

* a forward move into a free cell shifts it down a row: ``new[x, y] = old[x, y - 1]``, row 0 new;
* a left turn rotates it: ``new[9 - y, x + 3] = old[x, y]`` (what was on the left is ahead);
* a right turn: ``new[y - 3, 9 - x] = old[x, y]``;
* anything else (a blocked move, pick-up, drop, toggle, done) leaves the geometry as it was;
* the agent's own cell shows what it carries, whatever the motion: it maps to itself.

A cell whose source lies in the old view is *ego-mapped* (determined, unless the world changed
or an occluder moved); the others are *new in view* (only a prior can say what they hold). This
is the split the world-model metrics are reported on, and the ego-motion copy baseline.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch
from minigrid.core.actions import Actions
from minigrid.core.constants import OBJECT_TO_IDX, STATE_TO_IDX

from anyorder.data.layout import AGENT_CELL, ATTRIBUTES_PER_CELL, NUM_CELLS, VIEW_SIZE
from anyorder.data.vocabulary import Vocabulary

AGENT_X, AGENT_Y = VIEW_SIZE // 2, VIEW_SIZE - 1
FRONT_CELL = (AGENT_Y - 1) * VIEW_SIZE + AGENT_X
# objects the agent can step onto (minigrid's can_overlap), doors only when open
WALKABLE = ("empty", "floor", "goal", "lava")


class Motion(IntEnum):
    STAY = 0
    FORWARD = 1
    LEFT = 2
    RIGHT = 3


def _source_table(motion: Motion) -> np.ndarray:
    """int64 ``[49]``: the old cell each new cell shows, -1 where it is new in view."""
    sources = np.full(NUM_CELLS, -1, dtype=np.int64)
    for y in range(VIEW_SIZE):
        for x in range(VIEW_SIZE):
            if motion == Motion.STAY:
                old = (x, y)
            elif motion == Motion.FORWARD:
                old = (x, y - 1)
            elif motion == Motion.LEFT:  # inverse of new[9 - y, x + 3] = old[x, y]
                old = (y - 3, 9 - x)
            else:  # RIGHT: inverse of new[y - 3, 9 - x] = old[x, y]
                old = (9 - y, x + 3)
            if 0 <= old[0] < VIEW_SIZE and 0 <= old[1] < VIEW_SIZE:
                sources[y * VIEW_SIZE + x] = old[1] * VIEW_SIZE + old[0]
    sources[AGENT_CELL] = AGENT_CELL  # the agent's own cell shows what it carries, and it moves along
    return sources


SOURCES = torch.from_numpy(np.stack([_source_table(motion) for motion in Motion]))  # [4, 49]
TURNS = {Motion.LEFT: -1, Motion.RIGHT: 1}


class EgoMotion:
    """The previous view moved by the agent's action, on token ids of one vocabulary."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        size = vocabulary.size
        self.motion_of_action = torch.full((size,), int(Motion.STAY), dtype=torch.long)
        for action, motion in ((Actions.forward, Motion.FORWARD), (Actions.left, Motion.LEFT),
                               (Actions.right, Motion.RIGHT)):  # fmt: skip
            self.motion_of_action[int(vocabulary.action_ids[int(action)])] = int(motion)
        self.walkable = torch.zeros(size, dtype=torch.bool)
        self.walkable[[int(vocabulary.object_ids[OBJECT_TO_IDX[name]]) for name in WALKABLE]] = True
        self.unseen = int(vocabulary.object_ids[OBJECT_TO_IDX["unseen"]])
        self.door = int(vocabulary.object_ids[OBJECT_TO_IDX["door"]])
        self.open = int(vocabulary.state_ids[STATE_TO_IDX["open"]])
        directions = torch.as_tensor(np.asarray(vocabulary.direction_ids), dtype=torch.long)
        self.direction_ids = directions
        self.direction_of_id = torch.full((size,), -1, dtype=torch.long)
        self.direction_of_id[directions] = torch.arange(len(directions))

    def motion(self, previous_cells: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """long ``[N]`` :class:`Motion` for cells ``[N, 49, 3]`` and action ids ``[N]``: a forward
        move into a wall, a closed door or an object stays put."""
        motion = self.motion_of_action.to(action.device)[action]
        front = previous_cells[:, FRONT_CELL]
        free = self.walkable.to(front.device)[front[:, 0]] | ((front[:, 0] == self.door) & (front[:, 2] == self.open))
        return torch.where((motion == Motion.FORWARD) & ~free, int(Motion.STAY), motion)

    def sources(self, motion: torch.Tensor) -> torch.Tensor:
        """long ``[N, 49]``: the old cell each new cell shows, -1 where it is new in view."""
        return SOURCES.to(motion.device)[motion]

    def predict(
        self, previous_cells: torch.Tensor, previous_direction: torch.Tensor, action: torch.Tensor, fill: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ego-motion copy: cells ``[N, 49, 3]`` (``fill [49, 3]`` where new in view), the
        bool ``[N, 49]`` ego-mapped cells and the direction ids ``[N]`` after the action."""
        motion = self.motion(previous_cells, action)
        sources = self.sources(motion)
        mapped = sources >= 0
        index = sources.clamp(min=0)[..., None].expand(-1, -1, ATTRIBUTES_PER_CELL)
        moved = torch.gather(previous_cells, 1, index)
        cells = torch.where(mapped[..., None], moved, fill.to(moved.device)[None].expand_as(moved))
        turn = torch.zeros_like(motion)
        for kind, delta in TURNS.items():
            turn = torch.where(motion == kind, delta, turn)
        heading = (self.direction_of_id.to(action.device)[previous_direction] + turn) % len(self.direction_ids)
        return cells, mapped, self.direction_ids.to(action.device)[heading]
