"""Every numeric and path setting checked before any work starts, each error naming its full key.

A NaN learning rate, a negative batch count or a data directory that is really a file would
otherwise surface minutes later as a traceback from deep inside torch or Lightning. Each
entry point checks its composed config against a table of rules (``fnmatch`` patterns over
dotted keys) and stops with one :class:`~anyorder.errors.ConfigError` line. Keys absent
from a config (another model family, a callback switched off) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from anyorder.errors import ConfigError

Rule = Callable[[Any], str | None]  # the problem with a value, or None when it is fine


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    open_low: bool = False,
    open_high: bool = False,
    also: tuple[Any, ...] = (),
) -> Rule:
    """A finite number in the range (``also``: special values allowed besides, e.g. -1 or None)."""
    left = "(" if open_low else "["
    right = ")" if open_high else "]"
    right = ")" if high is None else right
    span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
    kind = "an integer" if integer else "a number"
    extra = f" (or {', '.join('null' if a is None else repr(a) for a in also)})" if also else ""

    def check(value: Any) -> str | None:
        if any(value is a or (value == a and type(value) is type(a)) for a in also):
            return None
        wanted = f"must be {kind} in {span}{extra}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return wanted
        if integer and not isinstance(value, int):
            return wanted
        if not math.isfinite(value):
            return wanted
        if low is not None and (value < low or (open_low and value == low)):
            return wanted
        if high is not None and (value > high or (open_high and value == high)):
            return wanted
        return None

    return check


def either(*rules: Rule) -> Rule:
    """Fine when any rule accepts the value; otherwise every rule's complaint."""

    def check(value: Any) -> str | None:
        problems = [rule(value) for rule in rules]
        return None if any(p is None for p in problems) else " or ".join(p for p in problems if p)

    return check


def directory_if_present(value: Any) -> str | None:
    """A directory the command may create, but never an existing file."""
    if value is not None and Path(str(value)).exists() and not Path(str(value)).is_dir():
        return f"{value} is a file, not a directory"
    return None


def non_empty_fractions(value: Any) -> str | None:
    if not isinstance(value, list | ListConfig) or not value:
        return f"must be a non-empty list of fractions in [0, 1), got {value!r}"
    for item in value:
        problem = number(0, 1, open_high=True)(item)
        if problem:
            return f"every fraction {problem}"
    return None


COUNT = number(1, integer=True)
NON_NEGATIVE_COUNT = number(0, integer=True)
STEPS = number(1, integer=True, also=(-1,))  # -1: no limit
UNIT_OPEN = number(0, 1, open_high=True)

EVAL_RULES: dict[str, Rule] = {
    "paths.data_dir": directory_if_present,
    "eval.num_episodes": COUNT,
    "eval.num_envs": COUNT,
    "eval.occlusion_fractions": non_empty_fractions,
    "eval.occlusion_fractions.*": UNIT_OPEN,
    "eval.temperature": number(0),
    "eval.top_p": number(0, 1, open_low=True),
    "eval.decode_steps": COUNT,
    "eval.query_batches": COUNT,
    "eval.render_episodes": NON_NEGATIVE_COUNT,
    "eval.imagination_horizon": NON_NEGATIVE_COUNT,
    "eval.imagination_rollouts": COUNT,
    "eval.joint_nll_batches": NON_NEGATIVE_COUNT,
    "eval.chunk_size": COUNT,
    "eval.seed": NON_NEGATIVE_COUNT,
}

TRAIN_RULES: dict[str, Rule] = {
    **EVAL_RULES,  # a training job carries the eval.* settings it evaluates itself with (eval_after_fit)
    "seed": NON_NEGATIVE_COUNT,
    "paths.data_dir": directory_if_present,
    "paths.log_dir": directory_if_present,
    "data.num_episodes": number(3, integer=True),
    "data.seed": number(0, 199, integer=True),
    "data.val_fraction": number(0, 0.5, open_low=True, open_high=True),
    "data.test_fraction": number(0, 0.5, open_low=True, open_high=True),
    "data.shard_size": COUNT,
    "data.num_workers": COUNT,
    "data.window": COUNT,
    "data.mission_length": COUNT,
    "data.batch_size": COUNT,
    "data.loader_workers": NON_NEGATIVE_COUNT,
    "data.shuffle_seed": NON_NEGATIVE_COUNT,
    "masking.seed": NON_NEGATIVE_COUNT,
    "model.optimizer.lr": number(0, open_low=True),
    "model.optimizer.betas.*": UNIT_OPEN,
    "model.optimizer.weight_decay": number(0),
    "model.optimizer.eps": number(0, open_low=True),
    "model.lr_scheduler.num_warmup_steps": NON_NEGATIVE_COUNT,
    "model.backbone.hidden_size": COUNT,
    "model.backbone.num_layers": COUNT,
    "model.backbone.num_heads": COUNT,
    "model.backbone.intermediate_size": COUNT,
    "model.backbone.dropout": UNIT_OPEN,
    # the layout embedding's shape (model=tiny_layout; ${data.window} and ${data.mission_length} by default)
    "model.backbone.window": COUNT,
    "model.backbone.mission_length": COUNT,
    "model.lora.r": NON_NEGATIVE_COUNT,
    "model.lora.dropout": UNIT_OPEN,
    "masking.prob": number(0, 1, open_low=True, also=(None,)),
    "masking.eps": number(0, 1, open_low=True, open_high=True),
    "masking.strategy.weights.*": number(0),
    "masking.schedule.start": number(0, 1, open_low=True),
    "masking.schedule.steps": COUNT,
    "masking.schedule.warmup_steps": NON_NEGATIVE_COUNT,
    "trainer.max_steps": STEPS,
    "trainer.max_epochs": STEPS,
    # a step count, a fraction of an epoch, or null (once per epoch)
    "trainer.val_check_interval": either(COUNT, number(0, 1, open_low=True, also=(None,))),
    "trainer.limit_val_batches": either(NON_NEGATIVE_COUNT, number(0, 1)),
    "trainer.log_every_n_steps": COUNT,
    "trainer.gradient_clip_val": number(0, also=(None,)),
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.num_nodes": COUNT,
    "callbacks.*.save_top_k": number(-1, integer=True),
    "callbacks.*.every_n_train_steps": COUNT,
    "callbacks.*.every_n_steps": COUNT,
    "callbacks.closed_loop_eval.every_n_val_epochs": COUNT,
    "callbacks.closed_loop_eval.num_episodes": COUNT,
    "callbacks.closed_loop_eval.num_envs": COUNT,
    "callbacks.closed_loop_eval.temperature": number(0),
}


def keys(config: DictConfig) -> Iterator[str]:
    """Every dotted key of ``config``: lists are keys and so are their items."""

    def walk(node: Any, prefix: str) -> Iterator[str]:
        if isinstance(node, Mapping):
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        elif isinstance(node, list):
            yield prefix[:-1]
            for index, value in enumerate(node):
                yield from walk(value, f"{prefix}{index}.")
        else:
            yield prefix[:-1]

    yield from walk(OmegaConf.to_container(config, resolve=False), "")


def check_settings(config: DictConfig, rules: Mapping[str, Rule]) -> None:
    """Raise one :class:`ConfigError`, naming the full key, for the first setting a rule refuses."""
    for key in keys(config):
        for pattern, rule in rules.items():
            if fnmatchcase(key, pattern):
                problem = rule(OmegaConf.select(config, key, throw_on_resolution_failure=False))
                if problem:
                    raise ConfigError(key, problem)
