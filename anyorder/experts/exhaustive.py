"""Exhaustive search over copies of the simulator: the independent check of the planner.

Breadth-first over deep copies of the environment, every action, nothing modelled: slow (a
copy per transition) but it knows only what minigrid does, so its optimum is the reference
for the rule-model planner's plans (``tests/test_experts.py``, ``benchmarks/generate.py``).
"""

from __future__ import annotations

import copy
from collections import deque

from minigrid.minigrid_env import MiniGridEnv


def _key(env: MiniGridEnv) -> tuple:
    carried = None if env.carrying is None else (env.carrying.type, env.carrying.color)
    return tuple(env.agent_pos), env.agent_dir, carried, env.grid.encode().tobytes()


def optimal_length(env: MiniGridEnv, limit: int = 60) -> int | None:
    """Fewest actions from ``env``'s current state to a rewarded end; None past ``limit``."""
    seen, frontier = {_key(env)}, deque([(env, 0)])
    while frontier:
        state, depth = frontier.popleft()
        if depth >= limit:
            return None
        for action in range(env.action_space.n):
            child = copy.deepcopy(state)
            _, reward, terminated, truncated, _ = child.step(action)
            if terminated and reward > 0:
                return depth + 1
            if terminated or truncated or _key(child) in seen:
                continue
            seen.add(_key(child))
            frontier.append((child, depth + 1))
    return None
