"""One interface for the experts that make demonstrations and play the reference episodes.

An expert is reset with the environment and its first observation, then asked for one action
per observation; it may read the agent's own pose from the environment (as BabyAI's bot
does) but plans from what it has seen. ``data.expert=auto`` picks BabyAI's bot for
``BabyAI-*`` levels and the planner for the rest.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Protocol

from minigrid.minigrid_env import MiniGridEnv

from anyorder.errors import ConfigError


class ExpertStuckError(RuntimeError):
    """The expert has no action for this state; the episode is recorded as failed."""


class Expert(Protocol):
    def reset(self, env: MiniGridEnv, observation: dict) -> None: ...

    def act(self, observation: dict) -> int: ...


class BabyAIBotExpert:
    """minigrid's ``BabyAIBot``, which reads the level's instructions and plans subgoals."""

    def reset(self, env: MiniGridEnv, observation: dict) -> None:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        self.bot = BabyAIBot(env)

    def act(self, observation: dict) -> int:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return int(self.bot.replan())
        except Exception as error:  # the bot signals a dead end by raising (assertions, lookups)
            raise ExpertStuckError(f"BabyAIBot: {type(error).__name__}: {error}") from None


def _planner() -> Expert:
    from anyorder.experts.planner import Planner

    return Planner()


def _privileged_planner() -> Expert:
    from anyorder.experts.planner import Planner

    return Planner(privileged=True)


EXPERTS: dict[str, Callable[[], Expert]] = {
    "bot": BabyAIBotExpert,
    "planner": _planner,
    "planner_privileged": _privileged_planner,  # sees the whole grid: optimal, but not imitable from the view
}
BABYAI_PREFIX = "BabyAI-"


def resolve_expert(name: str, level: str) -> str:
    """``auto`` -> ``bot`` for BabyAI levels, ``planner`` otherwise; other names are checked."""
    if name == "auto":
        name = "bot" if level.startswith(BABYAI_PREFIX) else "planner"
    if name not in EXPERTS:
        raise ConfigError("data.expert", f"unknown expert {name!r}; choose auto, {', '.join(EXPERTS)}")
    if name == "bot" and not level.startswith(BABYAI_PREFIX):
        raise ConfigError("data.expert", f"BabyAI's bot reads BabyAI instructions only; {level} needs the planner")
    if name != "bot":
        from anyorder.experts.tasks import check_plannable

        check_plannable(level)
    return name


def make_expert(name: str) -> Expert:
    """A fresh expert by its resolved name."""
    return EXPERTS[name]()
