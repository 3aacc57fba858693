"""Closed-loop rollouts: many environments stepped together, one batched forward per step.

Each environment slot keeps its own episode's history; at every step the slots still
running are tokenized into one batch of windows whose last action is hidden (the policy
question), the policy answers for all of them at once, and every environment steps. A slot
whose episode ends takes the next seed, until all seeds are played.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from minigrid.core.actions import Actions
from tqdm.auto import tqdm

from anyorder.data.layout import STEP_LENGTH
from anyorder.data.tokenizer import TokenBatch, TrajectoryTokenizer
from anyorder.errors import ConfigError
from anyorder.eval.occlusion import OcclusionWrapper
from anyorder.experts import Expert, ExpertStuckError, make_expert, resolve_expert
from anyorder.masking.queries import policy_query


class Policy(Protocol):
    """Chooses actions for a batch of windows; ``slots`` says which environment each row is."""

    def reset(self, slot: int, env: gym.Env) -> None: ...

    def act(self, batch: TokenBatch, slots: Sequence[int]) -> np.ndarray: ...


class ModelPolicy:
    """The trained model as a policy: the action at the hidden last position.

    With ``temperature`` > 0 the action is sampled from the model's distribution over the
    actions (seeded, so runs repeat); 0 takes the argmax. Sampling is the default because a
    deterministic policy with a short memory walks into loops it cannot leave (on
    GoToRedBall the default model succeeds about 3 times as often sampling as with argmax).
    ``top_p`` < 1 samples from the nucleus only (the most likely actions whose probabilities
    add up to ``top_p``): it drops the tail of unlikely actions that waste steps while
    keeping the randomness that breaks loops. ``chunk_size`` caps the rows of one forward: on
    a CPU the cost per window is flat up to about 8 rows and grows beyond (attention maps fall
    out of cache); on a GPU raise it.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        device: str | torch.device = "cpu",
        temperature: float = 1.0,
        seed: int = 0,
        chunk_size: int = 8,
        top_p: float = 1.0,
    ) -> None:
        if temperature < 0:
            raise ConfigError("temperature", f"must be >= 0 (0 = argmax), got {temperature}")
        if not 0 < top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1] (1 = the whole distribution), got {top_p}")
        self.top_p = top_p
        self.module = module.eval().to(device)
        self.device = torch.device(device)
        self.temperature = temperature
        self.generator = torch.Generator().manual_seed(seed)
        self.chunk_size = chunk_size

    def reset(self, slot: int, env: gym.Env) -> None:
        """The model keeps no state outside the window."""

    @torch.no_grad()
    def act(self, batch: TokenBatch, slots: Sequence[int]) -> np.ndarray:
        actions = []
        for start in range(0, len(slots), self.chunk_size):
            chunk = {key: value[start : start + self.chunk_size].to(self.device) for key, value in batch.items()}
            query = policy_query(chunk)
            logits = self.module(chunk, query)[query][:, self.module.action_ids].float().cpu()
            if self.temperature == 0:
                actions.append(logits.argmax(dim=1))
            else:
                probabilities = nucleus((logits / self.temperature).softmax(dim=1), self.top_p)
                actions.append(torch.multinomial(probabilities, 1, generator=self.generator).flatten())
        return torch.cat(actions).numpy()


def nucleus(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """Each row kept on its smallest set of most likely entries whose mass reaches ``top_p``
    (the most likely one always), the rest zeroed; unnormalised, as multinomial accepts."""
    if top_p >= 1:
        return probabilities
    ordered, order = probabilities.sort(dim=1, descending=True)
    before = ordered.cumsum(dim=1) - ordered  # mass of the entries ranked above each one
    keep = torch.zeros_like(probabilities, dtype=torch.bool).scatter(1, order, before < top_p)
    return probabilities * keep


@dataclass
class RolloutResult:
    seeds: list[int] = field(default_factory=list)
    success: list[bool] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    frames: list[list[np.ndarray]] = field(default_factory=list)  # only when rendering

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.success)) if self.success else 0.0


@dataclass
class _Slot:
    env: gym.Env
    seed: int = -1
    mission: np.ndarray | None = None
    history: list[np.ndarray] = field(default_factory=list)  # encoded past steps [STEP_LENGTH]
    current: np.ndarray | None = None  # encoded current observation, action not yet known
    steps: int = 0
    frames: list[np.ndarray] = field(default_factory=list)


def make_env(level: str, occlusion: float = 0.0, render: bool = False) -> gym.Env:
    env = gym.make(level, render_mode="rgb_array" if render else None)
    return OcclusionWrapper(env, occlusion) if occlusion > 0 else env


def run_rollouts(
    policy: Policy,
    tokenizer: TrajectoryTokenizer,
    level: str,
    seeds: Sequence[int],
    num_envs: int = 32,
    occlusion: float = 0.0,
    render: bool = False,
    progress: bool = False,
) -> RolloutResult:
    """Play one episode per seed with ``policy`` choosing every action; ``num_envs`` at once."""
    queue = list(seeds)[::-1]
    slots = [_Slot(make_env(level, occlusion, render)) for _ in range(min(num_envs, len(seeds)))]
    result = RolloutResult()
    bar = tqdm(total=len(seeds), desc=f"rollouts {level}", unit="ep", disable=not progress)

    def observe(slot: _Slot, obs: dict) -> None:
        hidden = obs.get("occluded")
        slot.current = tokenizer.encode_steps(
            obs["image"][None], [obs["direction"]], [0], None if hidden is None else hidden[None]
        )[0]
        if render:
            slot.frames.append(slot.env.render())

    def start(index: int) -> bool:
        slot = slots[index]
        if not queue:
            slot.env.close()
            return False
        slot.seed, slot.history, slot.steps, slot.frames = queue.pop(), [], 0, []
        with contextlib.redirect_stdout(io.StringIO()):
            obs, _ = slot.env.reset(seed=slot.seed)
        slot.mission = tokenizer.encode_mission(obs["mission"])
        policy.reset(index, slot.env)
        observe(slot, obs)
        return True

    active = [i for i in range(len(slots)) if start(i)]
    window = tokenizer.window
    while active:
        steps = np.zeros((len(active), window, STEP_LENGTH), dtype=np.int64)
        valid = np.zeros((len(active), window), dtype=bool)
        for row, index in enumerate(active):
            slot = slots[index]
            recent = [*slot.history[-(window - 1) :], slot.current] if window > 1 else [slot.current]
            steps[row, window - len(recent) :] = recent
            valid[row, window - len(recent) :] = True
        batch = tokenizer.assemble(np.stack([slots[i].mission for i in active]), steps, valid)
        actions = policy.act(batch, active)
        still = []
        for index, action in zip(active, actions, strict=True):
            slot = slots[index]
            slot.current[-1] = tokenizer.vocabulary.action_ids[int(action)]
            slot.history.append(slot.current)
            obs, reward, terminated, truncated, _ = slot.env.step(int(action))
            slot.steps += 1
            if terminated or truncated:
                result.seeds.append(slot.seed)
                result.success.append(bool(terminated and reward > 0))
                result.lengths.append(slot.steps)
                if render:
                    result.frames.append([*slot.frames, slot.env.render()])
                bar.update(1)
                if start(index):
                    still.append(index)
            else:
                observe(slot, obs)
                still.append(index)
        active = still
    bar.close()
    return result


class ExpertPolicy:
    """The level's expert (:mod:`anyorder.experts`) behind the Policy interface: the reference
    episodes of the level being evaluated, BabyAI's bot or the planner as ``data.expert=auto``
    would pick. An expert that gives up says ``done`` until the episode runs out of steps."""

    def __init__(self, level: str, expert: str = "auto") -> None:
        self.name = resolve_expert(expert, level)
        self.experts: dict[int, Expert | None] = {}
        self.envs: dict[int, gym.Env] = {}

    def reset(self, slot: int, env: gym.Env) -> None:
        expert = make_expert(self.name)
        expert.reset(env.unwrapped, env.unwrapped.gen_obs())
        self.experts[slot], self.envs[slot] = expert, env

    def act(self, batch: TokenBatch, slots: Sequence[int]) -> np.ndarray:
        return np.array([self._act(slot) for slot in slots])

    def _act(self, slot: int) -> int:
        expert = self.experts[slot]
        if expert is not None:
            try:
                return expert.act(self.envs[slot].unwrapped.gen_obs())
            except ExpertStuckError:
                self.experts[slot] = None
        return int(Actions.done)
