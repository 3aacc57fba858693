"""What each classic MiniGrid level asks, as a judgement on one transition of the rule model.

A task says which transitions end the episode well (``SUCCESS``), which end it badly
(``FAILURE``: lava, a wrong object picked up, a door opened out of order) and which
interactions are worth searching (``may_pick``, ``may_drop``, ``may_finish``): dropping
never helps to reach a square, so reach tasks do not search drops, which keeps their state
space to pose x carried key x doors. The target is read from the mission text, the same
words the agent is given.

Levels are matched by environment class (one entry per family); a level whose rules are
stochastic is refused by an explicit list, since a probe with a fixed seed can make it look
deterministic.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import gymnasium as gym
from minigrid import envs
from minigrid.core.actions import Actions
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.minigrid_env import MiniGridEnv

from anyorder.errors import ConfigError
from anyorder.experts.world import BALL, BOX, DOOR, GOAL, KEY, LAVA, OPEN, PICKABLE, GridModel, State, Transition


class Outcome(Enum):
    CONTINUE = 0
    SUCCESS = 1
    FAILURE = 2


@dataclass(frozen=True)
class Task:
    """A goal over transitions plus the interactions a search should consider."""

    judge_step: Callable[[Transition, GridModel], Outcome]
    may_pick: frozenset[int] = frozenset({KEY})
    may_drop: bool = False
    may_finish: bool = False
    goal_square_wins: bool = False  # stepping onto a goal square ends every level; it succeeds only here
    target: tuple[int, int] | None = None  # (kind, colour) that must be seen before a plan can reach the goal
    description: str = ""

    def goal_in_sight(self, model: GridModel, state: State) -> bool:
        """Whether a search for the goal can succeed at all on what is known (else: explore)."""
        if self.goal_square_wins:
            return bool(model.positions_of(state, GOAL))
        if self.target is not None:
            return bool(model.positions_of(state, *self.target))
        return True

    def judge(self, transition: Transition, model: GridModel) -> Outcome:
        """Lava ends every level badly and a goal square ends it (well only where it is the target)."""
        if transition.action == Actions.forward and transition.front_before is not None:
            if transition.front_before[0] == LAVA:
                return Outcome.FAILURE
            if transition.front_before[0] == GOAL:
                return Outcome.SUCCESS if self.goal_square_wins else Outcome.FAILURE
        return self.judge_step(transition, model)


def _object(color: str, kind: str) -> tuple[int, int]:
    return OBJECT_TO_IDX[kind], COLOR_TO_IDX[color]


def _words(mission: str, pattern: str) -> tuple[str, ...]:
    match = re.search(pattern, mission)
    if match is None:
        raise ConfigError("mission", f"cannot read the planner's target from the mission {mission!r}")
    return match.groups()


def reach_goal(env: MiniGridEnv, mission: str) -> Task:
    return Task(lambda t, m: Outcome.CONTINUE, goal_square_wins=True, description="reach the goal")


def pick_up_named(env: MiniGridEnv, mission: str, may_pick: frozenset[int] | None = None) -> Task:
    """KeyCorridor, UnlockPickup: "pick up the <colour> <object>", usually behind a locked door,
    so a key is picked up and dropped again on the way."""
    target = _object(*_words(mission, r"pick up the (\w+) (\w+)$"))
    return Task(
        lambda t, m: Outcome.SUCCESS if t.action == Actions.pickup and t.after.carrying == target else Outcome.CONTINUE,
        may_pick=frozenset({KEY, target[0]}) if may_pick is None else may_pick,
        may_drop=True,
        target=target,
        description=f"pick up {target}",
    )


def pick_up_past_blocker(env: MiniGridEnv, mission: str) -> Task:
    """BlockedUnlockPickup: as above, but a ball blocks the door and must be carried aside."""
    return pick_up_named(env, mission, may_pick=PICKABLE)


def fetch(env: MiniGridEnv, mission: str) -> Task:
    """Fetch: any pick-up ends the episode; only the named colour and kind succeeds."""
    target = _object(*_words(mission, r"(\w+) (key|ball)$"))

    def judge(t: Transition, m: GridModel) -> Outcome:
        if t.action != Actions.pickup:
            return Outcome.CONTINUE
        return Outcome.SUCCESS if t.after.carrying == target else Outcome.FAILURE

    return Task(judge, may_pick=frozenset({KEY, BALL}), target=target, description=f"fetch {target}")


def put_near(env: MiniGridEnv, mission: str) -> Task:
    """PutNear: pick up the named object and drop it within one cell (8-neighbourhood) of the target."""
    words = _words(mission, r"put the (\w+) (\w+) near the (\w+) (\w+)$")
    moved, target = _object(*words[:2]), _object(*words[2:])

    def judge(t: Transition, m: GridModel) -> Outcome:
        if t.action == Actions.pickup:
            return Outcome.CONTINUE if t.after.carrying == moved else Outcome.FAILURE
        if t.action != Actions.drop:
            return Outcome.CONTINUE
        near = any(
            abs(t.front[0] - x) <= 1 and abs(t.front[1] - y) <= 1
            for x, y in m.positions_of(t.before, target[0], target[1])
        )
        return Outcome.SUCCESS if near else Outcome.FAILURE

    return Task(
        judge,
        may_pick=frozenset({KEY, BALL, BOX}),
        may_drop=True,
        target=target,
        description=f"put {moved} near {target}",
    )


def open_door(env: MiniGridEnv, mission: str) -> Task:
    """Unlock: "open the door" (its only door)."""

    def judge(t: Transition, m: GridModel) -> Outcome:
        opened = t.action == Actions.toggle and t.front_after is not None and t.front_after[2] == OPEN
        return Outcome.SUCCESS if opened else Outcome.CONTINUE

    return Task(judge, description="open the door")


def red_then_blue(env: MiniGridEnv, mission: str) -> Task:
    """RedBlueDoors: opening the blue door ends the episode, well only if the red one is open."""
    red, blue = COLOR_TO_IDX["red"], COLOR_TO_IDX["blue"]

    def judge(t: Transition, m: GridModel) -> Outcome:
        if t.action != Actions.toggle or t.front_after is None or t.front_after[1] != blue or t.front_after[2] != OPEN:
            return Outcome.CONTINUE
        red_open = any(m.cell(t.before, pos)[2] == OPEN for pos in m.positions_of(t.before, DOOR, red))
        return Outcome.SUCCESS if red_open else Outcome.FAILURE

    return Task(judge, description="open red then blue")


def go_to_door(env: MiniGridEnv, mission: str) -> Task:
    """GoToDoor: ``done`` next to (not necessarily facing) the named door; toggling ends the episode."""
    (color,) = _words(mission, r"go to the (\w+) door$")

    def judge(t: Transition, m: GridModel) -> Outcome:
        if t.action == Actions.toggle:
            return Outcome.FAILURE
        if t.action != Actions.done:
            return Outcome.CONTINUE
        x, y = t.before.x, t.before.y
        doors = m.positions_of(t.before, DOOR, COLOR_TO_IDX[color])
        return Outcome.SUCCESS if any(abs(x - dx) + abs(y - dy) == 1 for dx, dy in doors) else Outcome.FAILURE

    return Task(judge, may_pick=frozenset(), may_finish=True, description=f"go to the {color} door")


TASKS: dict[type, Callable[[MiniGridEnv, str], Task]] = {
    envs.DoorKeyEnv: reach_goal,
    envs.EmptyEnv: reach_goal,
    envs.FourRoomsEnv: reach_goal,
    envs.CrossingEnv: reach_goal,
    envs.LavaGapEnv: reach_goal,
    envs.MultiRoomEnv: reach_goal,
    envs.DistShiftEnv: reach_goal,
    envs.LockedRoomEnv: reach_goal,
    envs.KeyCorridorEnv: pick_up_named,
    envs.UnlockPickupEnv: pick_up_named,
    envs.BlockedUnlockPickupEnv: pick_up_past_blocker,
    envs.FetchEnv: fetch,
    envs.PutNearEnv: put_near,
    envs.UnlockEnv: open_door,
    envs.RedBlueDoorEnv: red_then_blue,
    envs.GoToDoorEnv: go_to_door,
}
STOCHASTIC: dict[type, str] = {
    envs.DynamicObstaclesEnv: "its obstacles move at random every step",
}


@functools.cache
def level_class(level: str) -> type:
    """The environment class behind an id (cached: generation resolves the expert per episode)."""
    env = gym.make(level)
    try:
        return type(env.unwrapped)
    finally:
        env.close()


@functools.cache
def level_step_limit(level: str) -> int:
    """The most steps an episode of ``level`` takes before the environment truncates it.

    BabyAI sets the limit on reset, from the navigations its mission needs: the largest over a
    few missions stands for the level (it is a bound for sizes, not a rule of the game)."""
    env = gym.make(level)
    try:
        limits = []
        for seed in range(5):
            with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints "Sampling rejected: ..."
                env.reset(seed=seed)
            limits.append(int(env.unwrapped.max_steps))
        return max(limits)
    finally:
        env.close()


def check_plannable(level: str) -> None:
    """One line naming the level when the planner cannot act in it."""
    cls = level_class(level)
    if cls in STOCHASTIC:
        reason = STOCHASTIC[cls]
        raise ConfigError("data.level", f"{level} is stochastic ({reason}); the planner needs deterministic rules")
    if cls not in TASKS:
        families = ", ".join(sorted(c.__name__.removesuffix("Env") for c in TASKS))
        raise ConfigError("data.level", f"the planner has no task for {level} ({cls.__name__}); it plans: {families}")


def task_for(env: MiniGridEnv, mission: str) -> Task:
    cls = type(env)
    if cls not in TASKS:
        check_plannable(env.spec.id if env.spec else cls.__name__)
    return TASKS[cls](env, mission)
