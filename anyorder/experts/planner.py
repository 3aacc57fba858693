"""A planning expert for the classic MiniGrid levels.

Like BabyAI's bot it acts on what the agent has seen: a belief grid collects every cell the
7x7 view has shown (the agent knows its own pose and the grid's size, as the bot does). Each
step it searches the rule model (:mod:`anyorder.experts.world`) breadth-first:

1. for the task's goal (:mod:`anyorder.experts.tasks`) through known cells only; if found,
   the plan is optimal for what is known;
2. otherwise to the nearest pose that faces an unseen cell (the cell ahead is always in
   view, so every such move reveals something), opening doors and fetching keys on the way;
3. if neither exists, or a search exceeds its budget of states, it gives up
   (:class:`~anyorder.experts.base.ExpertStuckError`) and the episode is recorded as failed.

With ``privileged=True`` the belief is the full grid from the start: its plans are optimal,
which ``tests/test_experts.py`` checks against an exhaustive search of simulator copies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
from minigrid.core.actions import Actions
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.minigrid_env import MiniGridEnv

from anyorder.experts.base import ExpertStuckError
from anyorder.experts.tasks import Outcome, Task, task_for
from anyorder.experts.world import EMPTY_CELL, STEPS, GridModel, State

VIEW = 7
Pose = tuple[tuple[int, int], int, "tuple[int, int] | None"]  # position, direction, carried (kind, colour)


def visible_cells(env: MiniGridEnv, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World ``x, y`` and codes of the cells the observation shows (unseen ones left out).

    The view is egocentric: the agent stands at view (3, 6) looking towards decreasing view y,
    so view cell (i, j) lies ``6 - j`` steps ahead and ``i - 3`` steps to the right. The agent's
    own cell shows what it carries, not the floor, and is left out.
    """
    ax, ay = env.agent_pos
    fx, fy = STEPS[env.agent_dir]
    rx, ry = -fy, fx
    i, j = np.meshgrid(np.arange(VIEW), np.arange(VIEW), indexing="ij")
    ahead, right = VIEW - 1 - j, i - VIEW // 2
    x, y = ax + fx * ahead + rx * right, ay + fy * ahead + ry * right
    seen = (image[..., 0] > 0) & ~((ahead == 0) & (right == 0))
    seen &= (x >= 0) & (x < env.width) & (y >= 0) & (y < env.height)
    return x[seen], y[seen], image[seen].astype(np.int64)


def full_grid(env: MiniGridEnv) -> np.ndarray:
    """Every cell's code (privileged); the agent's cell as what lies under it."""
    return env.grid.encode().astype(np.int64)


class Planner:
    """The planning expert for one level; ``reset`` per episode, then ``act`` per step."""

    def __init__(self, privileged: bool = False, budget: int = 200_000) -> None:
        self.privileged = privileged
        self.budget = budget
        self.env: MiniGridEnv | None = None

    def reset(self, env: MiniGridEnv, observation: dict) -> None:
        self.env = env
        self.task: Task = task_for(env, observation["mission"])
        self.belief = np.full((env.width, env.height, 3), -1, dtype=np.int64)
        self.plan: list[tuple[Actions, Pose]] = []
        self.expected: Pose | None = None
        self._observe(observation)

    def act(self, observation: dict) -> int:
        changed = self._observe(observation)
        if changed or not self.plan or _pose(self.env) != self.expected:
            self.plan = self._replan()
        action, self.expected = self.plan.pop(0)
        return int(action)

    # -- belief ---------------------------------------------------------------------------
    def _observe(self, observation: dict) -> bool:
        """Fold the observation into the belief; whether anything known changed or appeared."""
        before = self.belief.copy()
        if self.privileged:
            self.belief[:] = full_grid(self.env)
        else:
            x, y, codes = visible_cells(self.env, observation["image"])
            self.belief[x, y] = codes
        ax, ay = self.env.agent_pos
        if self.belief[ax, ay, 0] < 0:
            self.belief[ax, ay] = EMPTY_CELL  # it stands there, so the cell can be stood on
        return not np.array_equal(before, self.belief)

    # -- search ---------------------------------------------------------------------------
    def _replan(self) -> list[tuple[Actions, Pose]]:
        env = self.env
        model = GridModel.from_array(self.belief)
        start = State(int(env.agent_pos[0]), int(env.agent_pos[1]), int(env.agent_dir), _carried(env))
        plan = self._search(model, start, lambda state: False) if self.task.goal_in_sight(model, start) else None
        if plan is None and not self.privileged:
            plan = self._search(model, start, lambda state: model.cell(state, state.front) is None)
        if not plan:
            raise ExpertStuckError(f"no plan to {self.task.description} or to explore from {start}")
        return plan

    def _search(
        self, model: GridModel, start: State, is_target: Callable[[State], bool]
    ) -> list[tuple[Actions, Pose]] | None:
        """Shortest action sequence to a SUCCESS transition, or to a state where ``is_target``."""
        task = self.task
        parents: dict[State, tuple[State, Actions] | None] = {start: None}
        frontier = deque([start])
        while frontier:
            state = frontier.popleft()
            for transition in model.transitions(state, task.may_pick, task.may_drop, task.may_finish):
                outcome = task.judge(transition, model)
                if outcome is Outcome.FAILURE:
                    continue
                after = transition.after
                if outcome is Outcome.SUCCESS or (after not in parents and is_target(after)):
                    return _unwind(parents, state, transition.action, after)
                if after in parents:
                    continue
                parents[after] = (state, transition.action)
                if len(parents) > self.budget:
                    raise ExpertStuckError(f"search budget of {self.budget} states exceeded")
                frontier.append(after)
        return None


def _unwind(parents: dict, state: State, action: Actions, final: State) -> list[tuple[Actions, Pose]]:
    """The plan that reaches ``final``: each action with the pose it should leave the agent in."""
    steps = [(action, final)]
    while parents[state] is not None:
        previous, previous_action = parents[state]
        steps.append((previous_action, state))
        state = previous
    return [(act, ((after.x, after.y), after.direction, after.carrying)) for act, after in reversed(steps)]


def _pose(env: MiniGridEnv) -> Pose:
    return (int(env.agent_pos[0]), int(env.agent_pos[1])), int(env.agent_dir), _carried(env)


def _carried(env: MiniGridEnv) -> tuple[int, int] | None:
    carrying = env.carrying
    return None if carrying is None else (OBJECT_TO_IDX[carrying.type], COLOR_TO_IDX[carrying.color])
