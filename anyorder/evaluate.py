"""``anyorder-eval``: which masking made the better agent and the better world model?

    anyorder-eval ckpt_path=outputs/train/<run>/checkpoints/last.ckpt
    anyorder-eval ckpt_path=... eval.level=BabyAI-GoToLocal-v0 eval.render=true

Prints one table and writes ``metrics.json``, ``episodes.csv`` (every closed-loop episode: policy,
occlusion, seed, success, length), PNG/GIF figures and a TensorBoard run into its own run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from anyorder.checks import EVAL_RULES, check_settings
from anyorder.data.episodes import read_meta
from anyorder.data.layout import NUM_CELLS
from anyorder.data.mixing import level_family
from anyorder.errors import ConfigError, report_errors
from anyorder.eval.autoregressive import AutoregressiveEvaluator
from anyorder.eval.baselines import (
    CHAIN_RULE,
    ONE_SHOT,
    RandomPolicy,
    StepView,
    TrainingPriors,
    compare,
    lookup,
    strongest,
)
from anyorder.eval.checkpoint import TrainedRun, load_trained
from anyorder.eval.egomotion import EgoMotion, Motion
from anyorder.eval.imagination import imagine
from anyorder.eval.metrics import area_under_curve, wilson_interval
from anyorder.eval.rollout import ExpertPolicy, ModelPolicy, RolloutResult, run_rollouts
from anyorder.eval.seeds import OFFLINE_SPLIT, check_held_out, eval_seeds
from anyorder.eval.tasks import TaskEvaluator
from anyorder.eval.visualize import (
    mark_cells,
    render_observation,
    robustness_figure,
    save_gif,
    save_png,
    side_by_side,
)
from anyorder.masking.queries import has_previous_step, world_model_query
from anyorder.models.autoregressive import AutoregressiveModule
from anyorder.models.module import AnyOrderModule
from anyorder.naming import register_resolvers, sweep_hparams
from anyorder.results import OWN_EVALUATION

register_resolvers()

# episodes.csv: one row per closed-loop episode, so that two checkpoints on the same seeds compare
# episode by episode (paired) and a failure is found by its seed
EPISODE_COLUMNS = ["policy", "occlusion", "seed", "success", "length"]


# how each objective's model is asked the evaluation's questions (the most specific class first)
EVALUATORS: tuple[tuple[type[AnyOrderModule], type[TaskEvaluator]], ...] = (
    (AutoregressiveModule, AutoregressiveEvaluator),
    (AnyOrderModule, TaskEvaluator),
)


def evaluator_for(module: AnyOrderModule) -> type[TaskEvaluator]:
    return next(evaluator for kind, evaluator in EVALUATORS if isinstance(module, kind))


def model_policy(run: TrainedRun, settings: DictConfig) -> ModelPolicy:
    """The trained model as a policy, decoded and batched as ``eval.*`` says."""
    return ModelPolicy(
        run.module, settings.device, settings.temperature, settings.seed, settings.chunk_size, settings.top_p
    )


def closed_loop(
    run: TrainedRun, level: str, seeds: list[int], settings: DictConfig
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Success per occlusion level with the expert's and a random policy's beside it, and every
    episode played (``EPISODE_COLUMNS``)."""
    tokenizer = run.datamodule.tokenizer
    policy = model_policy(run, settings)
    curve, episodes = {}, []
    for fraction in settings.occlusion_fractions:
        result = run_rollouts(
            policy, tokenizer, level, seeds, settings.num_envs, occlusion=fraction, progress=settings.progress
        )
        episodes += episode_rows("model", float(fraction), result)
        wins = int(np.sum(result.success))
        low, high = wilson_interval(wins, len(seeds))
        curve[str(fraction)] = {
            "success_rate": result.success_rate,
            "ci95": [low, high],
            "mean_length": float(np.mean(result.lengths)),
        }
    expert = ExpertPolicy(level)
    reference = run_rollouts(expert, tokenizer, level, seeds, settings.num_envs)
    chance = run_rollouts(RandomPolicy(seed=settings.seed), tokenizer, level, seeds, settings.num_envs)
    episodes += episode_rows("expert", 0.0, reference) + episode_rows("random_policy", 0.0, chance)
    summary = {
        "by_occlusion": curve,
        "expert": {
            "name": expert.name,
            "success_rate": reference.success_rate,
            "mean_length": float(np.mean(reference.lengths)),
        },
        "random_policy": {"success_rate": chance.success_rate, "mean_length": float(np.mean(chance.lengths))},
    }
    return summary, pd.DataFrame(episodes, columns=EPISODE_COLUMNS).sort_values(["policy", "occlusion", "seed"])


def episode_rows(policy: str, occlusion: float, result: RolloutResult) -> list[dict[str, Any]]:
    """The ``EPISODE_COLUMNS`` record of every episode of ``result``."""
    return [
        {"policy": policy, "occlusion": occlusion, "seed": seed, "success": success, "length": length}
        for seed, success, length in zip(result.seeds, result.success, result.lengths, strict=True)
    ]


def world_model_pictures(run: TrainedRun, evaluator: TaskEvaluator, count: int = 4) -> list[np.ndarray]:
    """Previous | true | predicted observation of a few validation windows that follow a real step
    (a move or a turn where there is one), cells the prediction got wrong framed in red."""
    loader = iter(run.datamodule.val_dataloader())
    batch = next(loader)
    keep = has_previous_step(batch)
    motion = EgoMotion(run.datamodule.tokenizer.vocabulary)
    previous = StepView.of(batch).previous
    moved = keep & (motion.motion(previous[:, : NUM_CELLS * 3].view(-1, NUM_CELLS, 3), previous[:, -1]) != Motion.STAY)
    order = torch.argsort((moved.int() + keep.int()), descending=True, stable=True)[:count]
    batch = {key: value[order].to(run.module.device) for key, value in batch.items()}
    decoded = evaluator.decode(batch, world_model_query(batch))
    tokenizer = run.datamodule.tokenizer
    pictures = []
    for index in range(decoded.shape[0]):
        window = tokenizer.decode_window(batch, index)
        true = window.observations[-1]
        predicted = tokenizer.decode_window({**batch, "input_ids": decoded}, index).observations[-1]
        wrong = (predicted != true).any(axis=2)
        views = [render_observation(true), mark_cells(render_observation(predicted), wrong)]
        if len(window.observations) > 1:
            views.insert(0, render_observation(window.observations[-2]))
        pictures.append(side_by_side(*views))
    return pictures


def imagination(
    run: TrainedRun, evaluator: TaskEvaluator, priors: TrainingPriors, split: str, horizon: int, rollouts: int
) -> dict | None:
    """The world model rolled open loop (:mod:`anyorder.eval.imagination`) on the split's episodes."""
    if not horizon:
        return None
    table = run.datamodule.datasets[split].table
    return imagine(
        evaluator.decode, run.datamodule.tokenizer, table, priors.position_mode, horizon, rollouts, run.module.device
    )


def check_eval_settings(cfg: DictConfig) -> None:
    """Every eval.* setting, before the checkpoint is even read: a wrong one costs nothing."""
    check_settings(cfg, EVAL_RULES)
    settings = cfg.eval
    eval_seeds(0, settings.split, settings.num_episodes)  # split and episode count
    if settings.level is not None and settings.level not in gym.registry:
        raise ConfigError("eval.level", f"unknown environment {settings.level!r} (a registered MiniGrid/BabyAI id)")
    try:
        device = torch.device(settings.device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError("eval.device", f"not a device: {settings.device!r} ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("eval.device", f"{settings.device} asked for, but this machine has no CUDA device")


def evaluate(cfg: DictConfig, output_dir: Path, job_board: Path | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` into ``output_dir`` (metrics.json, figures, a TensorBoard run).

    ``job_board``: a training job evaluating itself passes its own TensorBoard run, which gets the
    table and figures and, from the caller, the job's HParams row, so a sweep shows one run per
    job; a second run (a second session keyed by checkpoint/level/split) would split its table.
    """
    check_eval_settings(cfg)
    settings = cfg.eval
    torch.manual_seed(settings.seed)
    run = load_trained(cfg.ckpt_path, cfg.paths.data_dir, settings.device)
    trained_levels = run.datamodule.levels
    level = settings.level or trained_levels[0]
    # the offline queries and the trivial baselines read the evaluated level's own dataset
    data = run.datamodule.with_levels([level])
    data.prepare_data()
    run.datamodule = data  # same tokenizer and settings; the evaluated level's windows
    meta = read_meta(data.directory)
    block = eval_seeds(meta["seed"], settings.split, settings.num_episodes)
    check_held_out(level, block, meta)
    seeds = list(block)

    offline = OFFLINE_SPLIT[settings.split]
    data.setup("fit")
    priors = TrainingPriors.from_table(data.datasets["train"].table, data.tokenizer.vocabulary)
    evaluator = evaluator_for(run.module)(
        run.module,
        data.tokenizer.vocabulary,
        settings.decode_steps,
        settings.occlusion_fractions,
        seed=settings.seed,
        priors=priors,
        joint_nll_batches=settings.get("joint_nll_batches", 0),  # a run configured before it has none
    )
    loader = data.val_dataloader() if offline == "val" else data.test_dataloader()
    tasks = evaluator.run(loader, settings.query_batches, settings.progress)
    horizon = settings.get("imagination_horizon", 0)  # a run configured before imagination has none
    imagined = imagination(run, evaluator, priors, offline, horizon, settings.get("imagination_rollouts", 256))
    loop, episodes = closed_loop(run, level, seeds, settings)

    fractions = [float(f) for f in settings.occlusion_fractions]
    success = [loop["by_occlusion"][str(f)]["success_rate"] for f in settings.occlusion_fractions]
    accuracy = [tasks["robustness_action_accuracy"][str(f)] for f in settings.occlusion_fractions]
    clean = loop["by_occlusion"][str(settings.occlusion_fractions[0])]
    baselines = {"success_rate": {"random_policy": loop["random_policy"]["success_rate"]}, **tasks.pop("baselines")}
    baseline_intervals = tasks.pop("baseline_intervals")
    intervals = {"success_rate": clean["ci95"], **tasks.pop("intervals")}
    windows = tasks.pop("windows")
    paired = tasks.pop("paired_differences")
    metrics = {
        "checkpoint": str(run.checkpoint),
        "level": level,
        "trained_levels": trained_levels,
        "held_out_family": level_family(level) not in {level_family(name) for name in trained_levels},
        "split": settings.split,
        "offline_split": offline,
        "offline_dataset": str(data.directory),
        "seeds": [block.start, block.stop],
        "success_rate": clean["success_rate"],
        "success_ci95": clean["ci95"],
        "mean_episode_length": clean["mean_length"],
        "expert": loop["expert"],
        "random_policy": loop["random_policy"],
        "query_windows": windows,
        "tasks": tasks,
        "intervals": intervals,
        "imagination": imagined,
        "robustness": {
            "fractions": fractions,
            "success_rate": success,
            "action_accuracy": accuracy,
            "success_area": area_under_curve(fractions, success),
            "action_accuracy_area": area_under_curve(fractions, accuracy),
            "closed_loop": loop["by_occlusion"],
        },
    }
    metrics["baselines"] = baselines
    metrics["baseline_intervals"] = baseline_intervals
    metrics["paired_differences"] = paired
    values = {"success_rate": metrics["success_rate"], **tasks}
    metrics["below_baseline"] = compare(values, baselines, intervals, paired)
    write_outputs(metrics, episodes, run, evaluator, output_dir, level, seeds, settings, job_board)
    return metrics


def write_outputs(
    metrics: dict[str, Any],
    episodes: pd.DataFrame,
    run: TrainedRun,
    evaluator: TaskEvaluator,
    output_dir: Path,
    level: str,
    seeds: list[int],
    settings: DictConfig,
    job_board: Path | None = None,
) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    episodes.to_csv(output_dir / "episodes.csv", index=False)
    figures = output_dir / "figures"
    robustness = metrics["robustness"]
    figure = robustness_figure(
        robustness["fractions"], robustness["success_rate"], robustness["action_accuracy"], metrics["offline_split"]
    )
    figures.mkdir(parents=True, exist_ok=True)
    figure.savefig(figures / "robustness.png")
    with SummaryWriter(str(job_board or output_dir / "tensorboard")) as writer:
        # one evaluation is one point per metric: a table (Text tab) and the HParams view, not charts
        writer.add_text("eval/metrics", "```\n" + format_table(metrics) + "\n```")
        if job_board is None:
            for name, value in hparam_metrics(metrics).items():
                writer.add_scalar(name, value)
            exp, start, end = hparams_summary(
                {"checkpoint": str(run.checkpoint), "split": metrics["split"], "level": level},
                hparam_metrics(metrics),
            )
            for summary in (exp, start, end):
                writer.file_writer.add_summary(summary)
        writer.add_figure("eval/robustness", figure)
        for index, picture in enumerate(world_model_pictures(run, evaluator)):
            save_png(picture, figures / f"world_model_{index}.png")
            writer.add_image(f"eval/world_model_previous_true_predicted/{index}", picture, dataformats="HWC")
    if settings.render:
        policy = model_policy(run, settings)
        result = run_rollouts(policy, run.datamodule.tokenizer, level, seeds[: settings.render_episodes], render=True)
        for seed, frames, won in zip(result.seeds, result.frames, result.success, strict=True):
            save_gif(frames, figures / f"rollout_seed{seed}_{'success' if won else 'failure'}.gif")


def format_table(metrics: dict[str, Any]) -> str:
    """The printout: every metric with its 95% interval beside its trivial baselines (the
    strongest first); ``!`` marks one that is not clear of the strongest (:func:`compare`)."""
    tasks, robust, baselines = metrics["tasks"], metrics["robustness"], metrics["baselines"]
    intervals = metrics.get("intervals", {})
    flagged = {line.split(" ")[0] for line in metrics["below_baseline"]}
    expert = metrics["expert"]

    def row(label: str, key: str, extra: str = "") -> str:
        value = lookup({"success_rate": metrics["success_rate"], **tasks}, key)
        if value is None:  # e.g. what a left-to-right model cannot be asked, or a joint NLL not measured
            return f"{label:<46}{'n/a':>7}"
        by_baseline = baselines.get(key, {})
        best = strongest(key, by_baseline)
        ordered = sorted(by_baseline, key=lambda name: name != (best[0] if best else None))
        against = ", ".join(f"{name} {by_baseline[name]:.3f}" for name in ordered)
        mark = "!" if key in flagged else " "
        low, high = intervals.get(key, (float("nan"), float("nan")))
        interval = f"[{low:.3f}, {high:.3f}]" if not np.isnan(low) else ""
        return f"{label:<46}{value:>7.3f}{mark} {interval:<16}{extra}{'  vs ' + against if against else ''}"

    world = tasks["world_model"]
    share = world.get("share_ego_mapped", float("nan"))
    # split by what the previous view determines: the one-shot NLL's parts, else (left to right) the chain rule's
    one_shot = ONE_SHOT in world
    parts_key = ONE_SHOT if one_shot else CHAIN_RULE
    parts_label = "per cell token" if one_shot else "chain rule per cell"
    lines = [
        f"level {metrics['level']} (trained on {', '.join(metrics['trained_levels'])}"
        f"{'; a held-out family' if metrics['held_out_family'] else ''}), {metrics['split']} split: "
        f"closed-loop seeds [{metrics['seeds'][0]}, {metrics['seeds'][1]}), "
        f"{metrics.get('query_windows', '?')} {metrics['offline_split']} windows; 95% intervals over episodes",
        row("success rate", "success_rate"),
        f"{'mean episode length (model / expert)':<46}{metrics['mean_episode_length']:>7.1f}  / "
        f"{expert['mean_length']:.1f}   ({expert['name']} success {expert['success_rate']:.3f})",
        row("world-model NLL (nats/obs token, one-shot)", "world_model.nll_per_token"),
        row("world-model NLL (joint: chain rule, in order)", "world_model.joint_nll_per_token"),
        row("  one-shot on the same windows", "world_model.nll_per_token_joint_windows"),
        row("  chain rule on every window (left to right)", "world_model.joint_nll_per_token_all_windows"),
        *(
            row(f"  {parts_label}: {part}", f"world_model.{parts_key}_{key}")
            for part, key in (
                ("ego-mapped", "ego_mapped"),
                ("new in view", "new_in_view"),
                ("first-step windows", "first_step"),
            )
        ),
        row("world-model NLL (nats per cell)", "world_model.nll_per_cell"),
        row("world-model exact cells (decoded)", "world_model.exact_cell_accuracy"),
        row("  impossible cells among them", "world_model.impossible_cell_share"),
        row("  after a real step", "world_model.exact_cell_accuracy_after_a_step"),
        row(f"    ego-mapped ({share:.0%} of those)", "world_model.exact_cell_accuracy_ego_mapped"),
        row(f"    new in view ({1 - share:.0%})", "world_model.exact_cell_accuracy_new_in_view"),
        row(
            f"  first-step windows ({world.get('share_first_step', float('nan')):.0%} of windows)",
            "world_model.exact_cell_accuracy_first_step",
        ),
        row("action accuracy", "policy.accuracy"),
        row("inverse-model accuracy", "inverse.accuracy"),
        row("mission inference exact", "mission.exact_match"),
        row("mission inference token acc.", "mission.token_accuracy"),
        row("in-painting exact cells (25% hidden)", "inpainting.exact_cell_accuracy"),
    ]
    imagination = metrics.get("imagination")
    if imagination:
        lines.append("imagination (open loop, ego-mapped exact) k = " + "  ".join(f"{k:>5}" for k in imagination["k"]))
        lines.append(f"{'  model':<46}" + "  ".join(f"{v:5.3f}" for v in imagination["model"]))
        lines.append(
            f"{'  ego-motion copy, iterated':<46}" + "  ".join(f"{v:5.3f}" for v in imagination["ego_motion_copy"])
        )
    lines += [
        "occlusion robustness   f = " + "  ".join(f"{f:5.2f}" for f in robust["fractions"]) + "   area",
        "  success                  "
        + "  ".join(f"{v:5.3f}" for v in robust["success_rate"])
        + f"   {robust['success_area']:.3f}",
        "  action accuracy          "
        + "  ".join(f"{v:5.3f}" for v in robust["action_accuracy"])
        + f"   {robust['action_accuracy_area']:.3f}",
    ]
    if metrics["below_baseline"]:
        lines.append("! not clear of the strongest trivial baseline (95% interval of the paired difference):")
        lines.extend(f"    {line}" for line in metrics["below_baseline"])
    return "\n".join(lines)


def hparam_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(value(metrics)) for name, value in HPARAM_METRICS.items()}


HPARAM_METRICS = {  # TensorBoard's HParams view: the sweep's headline metrics, one column each
    "hparams/success_rate": lambda m: m["success_rate"],
    # the model's own likelihood: one shot for the any-order model, the chain rule for a left-to-right one
    "hparams/world_model_nll": lambda m: (
        lookup(m["tasks"], "world_model.nll_per_token") or m["tasks"]["world_model"]["joint_nll_per_token_all_windows"]
    ),
    "hparams/action_accuracy": lambda m: m["tasks"]["policy"]["accuracy"],
    "hparams/robustness_area": lambda m: m["robustness"]["success_area"],
}


def eval_config(train_cfg: DictConfig) -> DictConfig:
    """anyorder-eval's config for a training run's own last.ckpt, from the run's ``eval`` node."""
    checkpoint = Path(train_cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return OmegaConf.create(
        {"ckpt_path": str(checkpoint), "paths": {"data_dir": train_cfg.paths.data_dir}, "eval": train_cfg.eval}
    )


def evaluate_after_fit(train_cfg: DictConfig, logger: Any) -> dict[str, Any]:
    """A training job evaluating itself: ``<run>/eval/`` as anyorder-eval writes it and the final
    metrics in the run's HParams view (hyperparameters: the job's overrides as Hydra recorded them)."""
    run = Path(train_cfg.paths.output_dir)
    board = Path(logger.log_dir) if isinstance(logger, TensorBoardLogger) else None
    metrics = evaluate(eval_config(train_cfg), run / OWN_EVALUATION, job_board=board)
    print(format_table(metrics))
    if isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(sweep_hparams() or {"run": run.name}, hparam_metrics(metrics))
        logger.finalize("success")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    with report_errors():
        output_dir = Path(cfg.paths.output_dir)
        metrics = evaluate(cfg, output_dir)
    print(format_table(metrics))
    print(f"metrics, figures and TensorBoard run: {output_dir}")
    return metrics["success_rate"]


if __name__ == "__main__":
    main()
