"""A rule model of MiniGrid: what each action does to (pose, carried object, doors, objects).

The planner searches this model instead of stepping copies of the simulator: a state is a
small hashable tuple, so a breadth-first search over a level of DoorKey-8x8's size visits its
few thousand states in milliseconds. The rules are minigrid's own (``MiniGridEnv.step`` and
``WorldObj.toggle``); ``tests/test_experts.py`` checks the model against the simulator by
comparing optimal plan lengths with an exhaustive search over simulator copies.

Cells are minigrid's encoding ``(object, colour, state)``; ``None`` is a cell the agent has
not seen. The model knows only the cells it is given, so under partial observability an
unknown cell is neither walked into nor looked through.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from minigrid.core.actions import Actions
from minigrid.core.constants import DIR_TO_VEC, OBJECT_TO_IDX, STATE_TO_IDX

Cell = tuple[int, int, int]
Pos = tuple[int, int]

EMPTY, WALL, FLOOR, DOOR, KEY, BALL, BOX, GOAL, LAVA = (
    OBJECT_TO_IDX[name] for name in ("empty", "wall", "floor", "door", "key", "ball", "box", "goal", "lava")
)
OPEN, CLOSED, LOCKED = (STATE_TO_IDX[name] for name in ("open", "closed", "locked"))
EMPTY_CELL: Cell = (EMPTY, 0, 0)
PICKABLE = frozenset({KEY, BALL, BOX})
STEPS = tuple((int(dx), int(dy)) for dx, dy in DIR_TO_VEC)  # agent_dir 0..3 -> unit step


@dataclass(frozen=True)
class State:
    """Agent pose, carried object (type, colour) and the cells changed since planning began."""

    x: int
    y: int
    direction: int
    carrying: tuple[int, int] | None
    changes: tuple[tuple[Pos, Cell], ...] = ()

    @property
    def front(self) -> Pos:
        dx, dy = STEPS[self.direction]
        return self.x + dx, self.y + dy

    def with_cell(self, pos: Pos, cell: Cell) -> tuple[tuple[Pos, Cell], ...]:
        """``changes`` with ``pos`` set to ``cell``, sorted so that equal states hash equal."""
        return tuple(sorted([*((p, c) for p, c in self.changes if p != pos), (pos, cell)], key=lambda item: item[0]))


@dataclass(frozen=True)
class Transition:
    """What one action did: the task judges success or failure from this alone."""

    action: Actions
    before: State
    after: State
    front: Pos
    front_before: Cell | None
    front_after: Cell | None


class GridModel:
    """The known grid (``None`` = unseen) and the action rules over it."""

    def __init__(self, cells: list[list[Cell | None]]) -> None:
        self.cells = cells  # [x][y]
        self.width, self.height = len(cells), len(cells[0])
        self.locked = {(x, y): c[1] for x, col in enumerate(cells) for y, c in enumerate(col)
                       if c is not None and c[0] == DOOR and c[2] == LOCKED}  # fmt: skip

    def key_still_needed(self, state: State, color: int) -> bool:
        """Whether a door of ``color`` is still locked (so its key must not be put down)."""
        return any(c == color and self.cell(state, pos)[2] == LOCKED for pos, c in self.locked.items())

    @classmethod
    def from_array(cls, grid: np.ndarray) -> GridModel:
        """``grid`` int ``[W, H, 3]`` with -1 for unseen cells."""
        cells = [[None if grid[x, y, 0] < 0 else tuple(int(v) for v in grid[x, y]) for y in range(grid.shape[1])]
                 for x in range(grid.shape[0])]  # fmt: skip
        return cls(cells)

    def cell(self, state: State, pos: Pos) -> Cell | None:
        for changed, value in state.changes:
            if changed == pos:
                return value
        x, y = pos
        if not (0 <= x < self.width and 0 <= y < self.height):
            return (WALL, 0, 0)
        return self.cells[x][y]

    def positions_of(self, state: State, kind: int, color: int | None = None) -> list[Pos]:
        """Where objects of ``kind`` (and ``color``) are in ``state``, as far as the model knows."""
        found = {
            (x, y)
            for x in range(self.width)
            for y in range(self.height)
            if (c := self.cells[x][y]) is not None and c[0] == kind and (color is None or c[1] == color)
        }
        for pos, value in state.changes:
            matches = value[0] == kind and (color is None or value[1] == color)
            (found.add if matches else found.discard)(pos)
        return sorted(found)

    def transitions(
        self,
        state: State,
        may_pick: frozenset[int],
        may_drop: bool,
        may_finish: bool,
    ) -> Iterator[Transition]:
        """Every action whose outcome the model knows; actions that change nothing are left out,
        and so is putting a key down while a door of its colour is locked (it would only have
        to be picked up again), which keeps a search from placing the key on every cell."""
        front = state.front
        ahead = self.cell(state, front)
        yield self._turned(state, Actions.left, (state.direction - 1) % 4, front, ahead)
        yield self._turned(state, Actions.right, (state.direction + 1) % 4, front, ahead)
        if ahead is None:
            return
        kind, color, door_state = ahead
        if kind in (EMPTY, FLOOR, GOAL, LAVA) or (kind == DOOR and door_state == OPEN):
            moved = State(front[0], front[1], state.direction, state.carrying, state.changes)
            yield Transition(Actions.forward, state, moved, front, ahead, ahead)
        if kind in PICKABLE and kind in may_pick and state.carrying is None:
            after = State(state.x, state.y, state.direction, (kind, color), state.with_cell(front, EMPTY_CELL))
            yield Transition(Actions.pickup, state, after, front, ahead, EMPTY_CELL)
        carried = state.carrying
        needed_key = carried is not None and carried[0] == KEY and self.key_still_needed(state, carried[1])
        if kind == EMPTY and carried is not None and may_drop and not needed_key:
            dropped = (carried[0], carried[1], 0)
            after = State(state.x, state.y, state.direction, None, state.with_cell(front, dropped))
            yield Transition(Actions.drop, state, after, front, ahead, dropped)
        if kind == DOOR:
            opened = self._toggled_door(ahead, state.carrying)
            if opened is not None:
                after = State(state.x, state.y, state.direction, state.carrying, state.with_cell(front, opened))
                yield Transition(Actions.toggle, state, after, front, ahead, opened)
        if may_finish:
            yield Transition(Actions.done, state, state, front, ahead, ahead)

    @staticmethod
    def _turned(state: State, action: Actions, direction: int, front: Pos, ahead: Cell | None) -> Transition:
        turned = State(state.x, state.y, direction, state.carrying, state.changes)
        return Transition(action, state, turned, front, ahead, ahead)

    @staticmethod
    def _toggled_door(door: Cell, carrying: tuple[int, int] | None) -> Cell | None:
        """minigrid's ``Door.toggle``: a key of the door's colour unlocks and opens a locked door.

        Closing an open door is left out: no level rewards it, and each door that may be open
        or closed would double the states a search visits."""
        _, color, door_state = door
        if door_state == LOCKED:
            return (DOOR, color, OPEN) if carrying == (KEY, color) else None
        return (DOOR, color, OPEN) if door_state == CLOSED else None
