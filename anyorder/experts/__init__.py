"""Experts that play MiniGrid levels: BabyAI's bot and a planner for the classic tasks."""

from anyorder.experts.base import EXPERTS, Expert, ExpertStuckError, make_expert, resolve_expert

__all__ = ["EXPERTS", "Expert", "ExpertStuckError", "make_expert", "resolve_expert"]
