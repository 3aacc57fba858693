"""``anyorder-results <sweep dir>``: one row per evaluated job, one table row per strategy.

    anyorder-results multirun/strategy_table/<time>     # results.csv, results*.md, figures/

A job directory holds ``job.json`` (what was trained) and ``eval/metrics.json`` (what the
evaluation measured), both written by a training job that evaluates itself
(``eval_after_fit=true``, as ``experiment=strategy_table`` sets it). The notebook
``notebooks/strategy_sweep.ipynb`` draws from the same functions.

Any sweep tabulates, not only the strategy table: a setting that differs between the jobs
(``data.num_episodes=1000,50000``, ``model.optimizer.lr=5e-4,1e-3``) becomes part of a row's
key (its ``settings`` column), compared by the value the job ran with, so ``lr=5e-4`` on one
command line and an unswept default of 0.0005 on another land in the same row.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from anyorder.data.episodes import atomic_write_bytes
from anyorder.errors import DataError
from anyorder.eval.baselines import CHAIN_RULE, beats
from anyorder.eval.metrics import t_interval, wilson_interval

JOB_FILE = "job.json"
OWN_EVALUATION = "eval"  # <job>/eval/: the dev evaluation a job makes of itself (eval_after_fit)
TABLE_KEYS = ["level", "strategy", "prob", "settings"]
# overrides that say which job of a sweep it is, how it ran or how it was evaluated -- never a row key
# (paths, Hydra's own keys and ckpt_path never reach job.json: naming.job_overrides drops them)
NOT_SETTINGS = (
    "seed",
    "point",
    "recipe",
    "experiment",
    "masking",
    "objective",
    "data",
    "launcher",
    "eval_after_fit",
)  # the label
NOT_SETTING_PREFIXES = (
    "eval.", "callbacks.", "logger.", "trainer.devices", "trainer.accelerator", "trainer.enable_progress_bar"
)  # fmt: skip
# the trivial baseline beside each headline metric: (column, metrics.json baselines key, baseline)
BASELINE_COLUMNS = {
    "random_success": ("success_rate", "random_policy"),
    "majority_action_accuracy": ("policy.accuracy", "majority_action"),
    "unigram_world_model_nll": ("world_model.nll_per_token", "unigram"),
    "copy_exact_cells": ("world_model.exact_cell_accuracy_after_a_step", "copy_previous"),
    "majority_inverse_accuracy": ("inverse.accuracy", "majority_action"),
    "most_frequent_mission_exact": ("mission.exact_match", "most_frequent"),
    # the baselines that know the view's geometry (#34); NaN in records made before them
    "ego_mixture_world_model_nll": ("world_model.nll_per_token", "ego_motion_mixture"),
    "ego_copy_exact_cells": ("world_model.exact_cell_accuracy_after_a_step", "ego_motion_copy"),
    "direction_rule_inverse_accuracy": ("inverse.accuracy", "direction_rule"),
}


NAN = float("nan")  # a metric that an older metrics.json does not hold
# the strategy table's reference rows (the default recipe, tuned behaviour cloning) and how many
# training seeds a row needs before it is read against them -- the rule fixed in docs/results.md
REFERENCE_ROWS = ("uniform_t", "behaviour_cloning")
ROW_LABELS = {"uniform_t": "default (uniform t)", "behaviour_cloning": "tuned BC"}  # what the docs call them
# a recipe whose settings are a table point's reads as that point, so that a sweep over recipes
# (experiment=demo_counts) has the reference rows its readings are taken against
RECIPE_POINTS = {"any_order_default": "uniform_t"}
SEEDS_TO_READ = 3
READING_PREFIX = "success_vs_"
# what a table needs of a job, beside every evaluation's <job>/<evaluation>/metrics.json
RECORD_FILES = (JOB_FILE, ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


def evaluated_job(job_dir: str | Path) -> bool:
    """A job that has trained (its job.json) and evaluated itself (its eval/metrics.json): what a
    resumed sweep skips. A job killed during its evaluation is not one: it resumes and evaluates."""
    return (Path(job_dir) / JOB_FILE).is_file() and (Path(job_dir) / OWN_EVALUATION / "metrics.json").is_file()


def record_subdir(output_dir: str | None) -> str | None:
    """Where Hydra writes a job's config record: ``.hydra``, or nowhere once the job has finished.

    Hydra rewrites ``<job>/.hydra/`` before the job starts, even a job that then finds itself
    finished and skips; a resumed sweep would overwrite a finished job's record with the
    resuming command's settings, and the table could label a result with settings that did
    not produce it. Used as ``hydra.output_subdir`` (null: Hydra saves nothing)."""
    if output_dir is not None and evaluated_job(output_dir):
        return None
    return ".hydra"


def _baseline(metrics: dict, metric: str, baseline: str) -> float:
    return float(metrics.get("baselines", {}).get(metric, {}).get(baseline, NAN))


def strategy_label(overrides: dict[str, str]) -> str:
    """What a job trained, by name: an objective other than masked diffusion (it draws no masks:
    ``autoregressive``, ``autoregressive_actions``), else a masking group chosen on the command
    line (it replaces the point's or the experiment's), else its frozen recipe (``recipe/``, by the
    table point it equals where it equals one), else its table point, else its experiment, else the
    default recipe."""
    if overrides.get("objective", "masked_diffusion") != "masked_diffusion":
        return overrides["objective"]
    if "masking" in overrides:
        return overrides["masking"]
    if "recipe" in overrides:
        return RECIPE_POINTS.get(overrides["recipe"], overrides["recipe"])
    experiment = overrides.get("experiment", "default")
    return overrides.get("point", "default" if experiment == "strategy_table" else experiment)


def write_job_record(
    output_dir: str | Path, train_cfg: DictConfig, overrides: dict[str, str], train_seconds: float
) -> None:
    """``<job>/job.json``: what a finished training job trained and for how long, written after
    every fit (evaluated by itself or not), so that a later anyorder-eval of its checkpoint can
    join a table. Written atomically: a job killed mid-write leaves no half record."""
    levels = train_cfg.data.get("levels") or [train_cfg.data.level]
    record = {
        "level": ",".join(str(level) for level in levels),
        "strategy": strategy_label(overrides),
        "prob": train_cfg.masking.get("prob"),
        "seed": int(train_cfg.seed),
        "train_seconds": round(train_seconds, 1),
        "overrides": overrides,
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write_bytes(Path(output_dir) / JOB_FILE, lambda tmp: Path(tmp).write_text(text))


def _is_setting(key: str) -> bool:
    return key not in NOT_SETTINGS and not key.startswith(NOT_SETTING_PREFIXES)


def composed_settings(job_dir: Path, keys: set[str], overrides: dict[str, str]) -> dict[str, str]:
    """Each key's value as the job ran it: the config group it chose, else its composed config's
    value, else the override as typed (a job directory without Hydra's record, or a value that
    only the run could resolve: an interpolation whose resolver this process has not registered)."""
    config, hydra = (_hydra_record(job_dir / ".hydra" / name) for name in ("config.yaml", "hydra.yaml"))
    choices = OmegaConf.select(hydra, "hydra.runtime.choices", default=None) or {}
    values = {}
    for key in sorted(keys):
        value = choices.get(key, OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False))
        if value is None or isinstance(value, DictConfig | ListConfig):
            value = overrides.get(key, "")
        values[key] = str(value)
    return values


def _hydra_record(path: Path) -> DictConfig:
    """One of the files Hydra leaves in ``<job>/.hydra/`` (empty where it is absent)."""
    if not path.is_file():
        return OmegaConf.create()
    try:
        return OmegaConf.load(path)
    except Exception as error:  # YAML's own errors have no common base class worth naming
        raise DataError(path, f"unreadable Hydra record ({error})") from error


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(path, f"unreadable {what} ({error})") from error


def _imagined(metrics: dict, who: str, k: int) -> float:
    imagination = metrics.get("imagination") or {}
    return imagination[who][k - 1] if k <= len(imagination.get(who, [])) else NAN


def _world_model_columns(metrics: dict) -> dict[str, float]:
    """The world model split by what the previous view determines, with the baselines that know
    the view's geometry (NaN in records made before #34)."""
    world = metrics["tasks"]["world_model"]
    return {
        "world_model_exact_cells_ego_mapped": world.get("exact_cell_accuracy_ego_mapped", NAN),
        "world_model_exact_cells_new_in_view": world.get("exact_cell_accuracy_new_in_view", NAN),
        # the model's own likelihood split: one shot, else (left to right) the chain rule
        "world_model_nll_ego_mapped": world.get("nll_per_token_ego_mapped", world.get(f"{CHAIN_RULE}_ego_mapped", NAN)),
        "world_model_nll_new_in_view": world.get("nll_per_token_new_in_view",
                                                 world.get(f"{CHAIN_RULE}_new_in_view", NAN)),
        "share_ego_mapped": world.get("share_ego_mapped", NAN),
        "ego_copy_exact_cells_ego_mapped": _baseline(metrics, "world_model.exact_cell_accuracy_ego_mapped",
                                                     "ego_motion_copy"),
        "ego_copy_exact_cells_new_in_view": _baseline(metrics, "world_model.exact_cell_accuracy_new_in_view",
                                                      "ego_motion_copy"),
        "position_unigram_nll_new_in_view": _baseline(metrics, "world_model.nll_per_token_new_in_view",
                                                      "position_unigram"),
        "imagination_k3": _imagined(metrics, "model", 3),
        "imagination_k3_copy": _imagined(metrics, "ego_motion_copy", 3),
        "inpainting_exact_cells": metrics["tasks"].get("inpainting", {}).get("exact_cell_accuracy", NAN),
        "inpainting_ego_copy": _baseline(metrics, "inpainting.exact_cell_accuracy", "ego_motion_copy"),
    }  # fmt: skip


def job_row(job_dir: Path, evaluation: str = OWN_EVALUATION) -> dict:
    """The flat record of one finished job: its settings and the headline metrics of one of its
    evaluations (``<job>/<evaluation>/metrics.json``)."""
    job = _read_json(job_dir / JOB_FILE, "job record")
    overrides = job.get("overrides")
    metrics_path = job_dir / evaluation / "metrics.json"
    if not metrics_path.is_file():
        raise DataError(
            metrics_path,
            f"this job has no '{evaluation}' evaluation; anyorder-eval ckpt_path={job_dir}/checkpoints/last.ckpt "
            f"eval.split=<dev|test> hydra.run.dir={job_dir}/{evaluation} writes it",
        )
    metrics = _read_json(metrics_path, "evaluation result")
    tasks, robustness = metrics["tasks"], metrics["robustness"]
    episodes = metrics["seeds"][1] - metrics["seeds"][0]
    return {
        "level": job["level"],
        "strategy": job["strategy"] if overrides is None else strategy_label(overrides),
        "prob": job["prob"],
        "overrides": overrides or {},
        "seed": job["seed"],
        "split": metrics.get("split", "dev"),
        "train_seconds": job["train_seconds"],
        "train_minutes": job["train_seconds"] / 60,
        "episodes": episodes,
        "successes": round(metrics["success_rate"] * episodes),
        "success_rate": metrics["success_rate"],
        "mean_episode_length": metrics["mean_episode_length"],
        "world_model_nll": tasks["world_model"].get("nll_per_token", NAN),  # one shot: none for a left-to-right model
        "world_model_joint_nll": tasks["world_model"].get("joint_nll_per_token", NAN),
        "world_model_nll_per_cell": tasks["world_model"]["nll_per_cell"],
        "action_accuracy": tasks["policy"]["accuracy"],
        "world_model_exact_cells_after_a_step": tasks["world_model"].get("exact_cell_accuracy_after_a_step", NAN),
        **_world_model_columns(metrics),
        "inverse_accuracy": tasks.get("inverse", {}).get("accuracy", NAN),
        "mission_exact_match": tasks.get("mission", {}).get("exact_match", NAN),
        **{column: _baseline(metrics, *where) for column, where in BASELINE_COLUMNS.items()},
        "below_baseline": len(metrics.get("below_baseline", [])),
        "robustness_area": robustness["success_area"],
        "robustness_fractions": robustness["fractions"],
        "robustness_success": robustness["success_rate"],
        "job_dir": str(job_dir),
    }


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every job directory (one holding ``job.json``) below ``sweep_dir``, linked directories
    followed, so that a table can gather jobs of several sweeps by linking them into one
    directory; a job reached twice (or a link back up the tree) is taken once."""
    found, seen = [], set()
    for directory, subdirs, names in os.walk(sweep_dir, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirs.clear()
            continue
        seen.add(real)
        if JOB_FILE in names:
            found.append(Path(directory))
        subdirs.sort()
    return sorted(found)


def keep_records(sweep_dir: str | Path, destination: str | Path) -> int:
    """Copy what a table is made from -- each job's record, Hydra's config and every evaluation's
    metrics.json, no checkpoints or event files (kilobytes, not megabytes) -- into ``destination``,
    each job at its path relative to ``sweep_dir``. A figure in the docs can then be rebuilt
    (``anyorder-results <destination>``) after the run directories are gone. Returns the job count."""
    root, kept = Path(sweep_dir), Path(destination)
    jobs = job_dirs(root)
    for job_dir in jobs:
        sources = [job_dir / name for name in RECORD_FILES] + sorted(job_dir.glob("*/metrics.json"))
        for source in filter(Path.is_file, sources):
            target = kept / job_dir.relative_to(root) / source.relative_to(job_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return len(jobs)


def load_jobs(sweep_dir: str | Path, evaluation: str = OWN_EVALUATION) -> pd.DataFrame:
    """Every finished job of a sweep, one row each (sorted by level, strategy, prob, settings,
    seed), with the metrics of its ``evaluation`` (the job's own dev evaluation by default)."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise DataError(root, "is a file, not a sweep directory" if root.exists() else "sweep directory not found")
    rows = [job_row(job_dir, evaluation) for job_dir in job_dirs(root)]
    if not rows:
        raise DataError(
            root, f"no finished jobs (no {JOB_FILE} below it); run anyorder-train -m experiment=strategy_table first"
        )
    keys = {key for row in rows for key in row["overrides"] if _is_setting(key)}
    settings = [composed_settings(Path(row["job_dir"]), keys, row.pop("overrides")) for row in rows]
    varying = sorted(key for key in keys if len({values[key] for values in settings}) > 1)
    for row, values in zip(rows, settings, strict=True):
        row["settings"] = " ".join(f"{key}={values[key]}" for key in varying)
    frame = pd.DataFrame(rows)
    return frame.sort_values([*TABLE_KEYS, "seed"], na_position="first").reset_index(drop=True)


def summarize(jobs: pd.DataFrame) -> pd.DataFrame:
    """One row per level x strategy x prob x differing settings: means over training seeds with a
    t-interval across them (seed-to-seed spread counts), the pooled-episode Wilson interval beside
    it (named so), and each metric's trivial baseline."""
    rows = []
    for (level, strategy, prob, settings), group in jobs.groupby(TABLE_KEYS, dropna=False, sort=False):
        pooled_low, pooled_high = wilson_interval(int(group["successes"].sum()), int(group["episodes"].sum()))
        mean, low, high = t_interval(group["success_rate"].to_numpy())
        rows.append(
            {
                "level": level,
                "strategy": strategy,
                "prob": prob,
                "settings": settings,
                "split": ",".join(sorted(set(group["split"]))),
                "seeds": len(group),
                "success_rate": mean,
                "success_seed_ci95_low": low,
                "success_seed_ci95_high": high,
                "success_pooled_ci95_low": pooled_low,
                "success_pooled_ci95_high": pooled_high,
                "success_seed_std": group["success_rate"].std(ddof=1) if len(group) > 1 else float("nan"),
                "world_model_nll": group["world_model_nll"].mean(),
                "action_accuracy": group["action_accuracy"].mean(),
                "world_model_exact_cells_after_a_step": group["world_model_exact_cells_after_a_step"].mean(),
                "inverse_accuracy": group["inverse_accuracy"].mean(),
                "mission_exact_match": group["mission_exact_match"].mean(),
                **{column: group[column].mean() for column in BASELINE_COLUMNS},
                "jobs_below_a_baseline": int((group["below_baseline"] > 0).sum()),
                "robustness_area": group["robustness_area"].mean(),
                "train_minutes": group["train_seconds"].mean() / 60,
            }
        )
    return pd.DataFrame(rows)


def success_reading(row: pd.Series, reference: pd.Series, min_seeds: int = SEEDS_TO_READ) -> str:
    """How a row's success reads against a reference row: "better" or "worse" only where their
    95% t-intervals across training seeds are disjoint, else "not told apart"; "too few seeds"
    until both rows have ``min_seeds``. Fixed before the results came in, so it is not tuned."""
    if min(row["seeds"], reference["seeds"]) < min_seeds:
        return "too few seeds"
    if row["success_seed_ci95_low"] > reference["success_seed_ci95_high"]:
        return "better"
    if row["success_seed_ci95_high"] < reference["success_seed_ci95_low"]:
        return "worse"
    return "not told apart"


def read_against_references(
    summary: pd.DataFrame, references: tuple[str, ...] = REFERENCE_ROWS, min_seeds: int = SEEDS_TO_READ
) -> pd.DataFrame:
    """A ``success_vs_<reference>`` column for each reference strategy present in the table: each row's
    success read against that strategy's row of the same level and settings (empty for the
    reference itself and where a level has no such row)."""
    summary = summary.copy()
    for reference in references:
        if reference not in set(summary["strategy"]):
            continue
        readings = []
        for _, row in summary.iterrows():
            same = summary[
                (summary["strategy"] == reference)
                & (summary["level"] == row["level"])
                & (summary["settings"].map(_settings_text) == _settings_text(row["settings"]))
            ]
            own = row["strategy"] == reference or same.empty
            readings.append("" if own else success_reading(row, same.iloc[0], min_seeds))
        summary[f"{READING_PREFIX}{reference}"] = readings
    return summary


def _reading_columns(summary: pd.DataFrame) -> list[str]:
    return [column for column in summary.columns if column.startswith(READING_PREFIX)]


def _settings_text(settings: str | float) -> str:
    return "" if pd.isna(settings) else str(settings)  # a CSV round trip reads "" back as NaN


def _short_setting(setting: str) -> str:
    """``model.optimizer.lr=0.0005`` -> ``lr=0.0005``: an axis label, not a config path."""
    key, value = setting.split("=", 1)
    return f"{key.rsplit('.', 1)[-1]}={value}"


def _interval(low: float, high: float) -> str:
    return "n/a" if pd.isna(low) else f"[{low:.3f}, {high:.3f}]"


def markdown_table(summary: pd.DataFrame) -> str:
    """The table as GitHub Markdown, one section per level; each metric beside its baseline."""
    lines, readings = [], _reading_columns(summary)
    with_settings = bool(summary["settings"].map(_settings_text).any())
    columns = [
        "strategy", "prob", *(["settings"] if with_settings else []), "seeds", "success (mean)",
        "95% t-CI across seeds", "pooled Wilson 95% CI", *(c.replace("_vs_", " vs ", 1) for c in readings),
        "random policy", "action acc", "majority action",
        "WM NLL/token", "unigram NLL", "WM exact cells after a step", "copy previous",
        "inverse acc", "majority action (inverse)", "mission exact", "most frequent mission", "jobs below a baseline",
        "robustness area", "train min",
    ]  # fmt: skip
    for level, rows in summary.groupby("level", sort=False):
        split = ",".join(sorted(set(rows["split"])))
        lines += [f"### {level} ({split} split)", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in rows.itertuples():
            prob = "U(ε,1)" if pd.isna(row.prob) else f"{row.prob:g}"
            settings = f" {_settings_text(row.settings)} |" if with_settings else ""
            lines.append(
                f"| {row.strategy} | {prob} |{settings} {row.seeds} | {row.success_rate:.3f}"
                f" | {_interval(row.success_seed_ci95_low, row.success_seed_ci95_high)}"
                f" | {_interval(row.success_pooled_ci95_low, row.success_pooled_ci95_high)}"
                + "".join(f" | {getattr(row, column) or '—'}" for column in readings)
                + f" | {row.random_success:.3f} | {row.action_accuracy:.3f} | {row.majority_action_accuracy:.3f}"
                f" | {row.world_model_nll:.3f} | {row.unigram_world_model_nll:.3f}"
                f" | {row.world_model_exact_cells_after_a_step:.3f} | {row.copy_exact_cells:.3f}"
                f" | {row.inverse_accuracy:.3f} | {row.majority_inverse_accuracy:.3f}"
                f" | {row.mission_exact_match:.3f} | {row.most_frequent_mission_exact:.3f}"
                f" | {row.jobs_below_a_baseline} | {row.robustness_area:.3f} | {row.train_minutes:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def _row_label(strategy: str, prob: float, settings: str | float) -> str:
    """``cell_p0.15`` (a table point) or ``cell`` at prob 0.15 -> ``cell p=0.15``; a reference row by its name."""
    if strategy in ROW_LABELS:
        return " ".join(filter(None, [ROW_LABELS[strategy], _settings_text(settings)]))
    if pd.isna(prob):
        return " ".join(filter(None, [strategy, _settings_text(settings)]))
    return " ".join(filter(None, [strategy.removesuffix(f"_p{prob:g}"), f"p={prob:g}", _settings_text(settings)]))


def _against(row: tuple, value_column: str, *baseline_columns: str) -> str:
    """A mean to three places, **!** where it does not beat the strongest of its trivial baselines
    (none where an older metrics.json has no baseline to judge it by)."""
    value = getattr(row, value_column)
    if pd.isna(value):
        return "n/a"
    metric = BASELINE_COLUMNS[baseline_columns[0]][0]
    known = [getattr(row, column) for column in baseline_columns if not pd.isna(getattr(row, column))]
    if not known:
        return f"{value:.3f}"
    return f"{value:.3f}" + ("" if all(beats(metric, value, baseline) for baseline in known) else " **!**")


def _level_value(rows: pd.DataFrame, column: str) -> str:
    """A baseline of one level: one figure where every row shares it (same data, same seeds), else its range."""
    low, high = rows[column].min(), rows[column].max()
    if pd.isna(low):
        return "n/a"
    return f"{low:.3f}" if abs(high - low) < 5e-4 else f"{low:.3f}–{high:.3f}"


def _references_first(rows: pd.DataFrame) -> pd.DataFrame:
    """The reference rows (the default, tuned BC) first, the rest in their own order."""
    rank = rows["strategy"].map(
        lambda name: REFERENCE_ROWS.index(name) if name in REFERENCE_ROWS else len(REFERENCE_ROWS)
    )
    return rows.iloc[rank.argsort(kind="stable")]


def _baselines_line(rows: pd.DataFrame) -> str:
    """One level's trivial baselines, said once above its table instead of beside every figure."""
    return (
        f"Trivial baselines: random policy {_level_value(rows, 'random_success')}; "
        f"majority action {_level_value(rows, 'majority_action_accuracy')} "
        f"(inverse question: {_level_value(rows, 'majority_inverse_accuracy')}); "
        f"unigram NLL {_level_value(rows, 'unigram_world_model_nll')}; "
        f"copying the previous observation {_level_value(rows, 'copy_exact_cells')} exact cells; "
        f"the most frequent mission {_level_value(rows, 'most_frequent_mission_exact')} exact."
        + _structured_baselines(rows)
    )


def _structured_baselines(rows: pd.DataFrame) -> str:
    """The baselines that know the view's geometry, where the records hold them."""
    if rows["ego_copy_exact_cells"].isna().all():
        return ""
    return (
        f" Strongest: the ego-motion copy {_level_value(rows, 'ego_copy_exact_cells')} exact cells after a step"
        f" and its mixture {_level_value(rows, 'ego_mixture_world_model_nll')} NLL;"
        f" the direction rule {_level_value(rows, 'direction_rule_inverse_accuracy')} inverse accuracy."
    )


def _level_tables(frame: pd.DataFrame, columns: list[str], cells: Callable[[tuple], list[str]]) -> str:
    """Per level: a heading, its baselines line, then one table row per record, references first."""
    lines = []
    for level, rows in frame.groupby("level", sort=False):
        split = ",".join(sorted(set(rows["split"])))
        rows = _references_first(rows)
        lines += [f"#### {level} ({split} split)", "", _baselines_line(rows), ""]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cells(row)) + " |" for row in rows.itertuples()]
        lines.append("")
    return "\n".join(lines)


def compact_table(summary: pd.DataFrame) -> str:
    """The table as the docs show it: per level, one line of trivial baselines, then one row per
    strategy with success (mean, t-interval across seeds, pooled Wilson, the reading against each
    reference row) and every other metric's mean over seeds, **!** where it does not beat its
    baseline -- the wide ``results.md`` with each baseline folded into a flag."""
    readings = _reading_columns(summary)
    reading_names = [f"vs {ROW_LABELS.get(c.removeprefix(READING_PREFIX), c.removeprefix(READING_PREFIX))}"
                     for c in readings]  # fmt: skip
    columns = [
        "row", "seeds", "success: mean [95% t-CI across seeds]", "pooled Wilson", *reading_names, "action acc.",
        "WM NLL", "exact cells after a step", "inverse acc.", "mission exact", "robustness area",
    ]  # fmt: skip

    def cells(row: tuple) -> list[str]:
        success = _against(row, "success_rate", "random_success")
        return [
            _row_label(row.strategy, row.prob, row.settings), str(row.seeds),
            f"**{success}** {_interval(row.success_seed_ci95_low, row.success_seed_ci95_high)}",
            _interval(row.success_pooled_ci95_low, row.success_pooled_ci95_high),
            *(getattr(row, column) or "—" for column in readings),
            *_offline_figures(row), f"{row.robustness_area:.3f}",
        ]  # fmt: skip

    return _level_tables(summary, columns, cells)


def _offline_figures(row: tuple) -> list[str]:
    """Action, world-model, inverse and mission figures, each flagged against its baseline."""
    return [
        _against(row, "action_accuracy", "majority_action_accuracy"),
        _against(row, "world_model_nll", "unigram_world_model_nll", "ego_mixture_world_model_nll"),
        _against(row, "world_model_exact_cells_after_a_step", "copy_exact_cells", "ego_copy_exact_cells"),
        _against(row, "inverse_accuracy", "majority_inverse_accuracy", "direction_rule_inverse_accuracy"),
        _against(row, "mission_exact_match", "most_frequent_mission_exact"),
    ]


def jobs_table(jobs: pd.DataFrame) -> str:
    """Every job on its own line (per level, references first): success with the Wilson interval
    over its own episodes, steps per episode and each offline figure flagged against the job's
    own baselines -- what a row's mean is made of, and where one seed stands out."""
    columns = [
        "row", "seed", "success [95% Wilson]", "steps per episode", "action acc.", "WM NLL",
        "exact cells after a step", "inverse acc.", "mission exact", "robustness area",
    ]  # fmt: skip

    def cells(row: tuple) -> list[str]:
        low, high = wilson_interval(row.successes, row.episodes)
        success = _against(row, "success_rate", "random_success")
        return [
            _row_label(row.strategy, row.prob, row.settings), str(row.seed), f"**{success}** {_interval(low, high)}",
            f"{row.mean_episode_length:.1f}", *_offline_figures(row), f"{row.robustness_area:.3f}",
        ]  # fmt: skip

    return _level_tables(jobs, columns, cells)


def write_tables(sweep_dir: str | Path, evaluation: str = OWN_EVALUATION) -> tuple[Path, Path, Path, Path]:
    """``results.csv``, ``results.md`` (every column), ``results_compact.md`` (the view the docs
    show) and ``results_jobs.md`` (one line per job) in the sweep directory, from its finished
    jobs (``results_<evaluation>*`` for an evaluation other than the jobs' own)."""
    root = Path(sweep_dir)
    jobs = load_jobs(root, evaluation)
    summary = read_against_references(summarize(jobs))
    stem = "results" if evaluation == OWN_EVALUATION else f"results_{evaluation}"
    paths = tuple(root / f"{stem}{end}" for end in (".csv", ".md", "_compact.md", "_jobs.md"))
    csv_path, markdown_path, compact_path, jobs_path = paths
    summary.to_csv(csv_path, index=False, float_format="%.4f")
    markdown_path.write_text(markdown_table(summary))
    compact_path.write_text(compact_table(summary))
    jobs_path.write_text(jobs_table(jobs))
    if jobs["world_model_exact_cells_ego_mapped"].notna().any():
        (root / f"{stem}_world_model.md").write_text(world_model_table(jobs))
    return csv_path, markdown_path, compact_path, jobs_path


# (column, its strongest baseline's column or None, lower is better): results_world_model.md
WORLD_MODEL_COLUMNS = {
    "success": ("success_rate", "random_success", False),
    "action acc.": ("action_accuracy", "majority_action_accuracy", False),
    "WM NLL (one-shot)": ("world_model_nll", "ego_mixture_world_model_nll", True),
    # the chain rule (in order): a left-to-right model's own; the ego mixture is factorised (its joint is the same)
    "WM NLL (joint)": ("world_model_joint_nll", "ego_mixture_world_model_nll", True),
    "NLL, new in view (own)": ("world_model_nll_new_in_view", "position_unigram_nll_new_in_view", True),
    "exact cells after a step": ("world_model_exact_cells_after_a_step", "ego_copy_exact_cells", False),
    "… ego-mapped": ("world_model_exact_cells_ego_mapped", "ego_copy_exact_cells_ego_mapped", False),
    "… new in view": ("world_model_exact_cells_new_in_view", "ego_copy_exact_cells_new_in_view", False),
    "imagination k=3": ("imagination_k3", "imagination_k3_copy", False),
    "inverse acc.": ("inverse_accuracy", "direction_rule_inverse_accuracy", False),
    "in-painting": ("inpainting_exact_cells", "inpainting_ego_copy", False),
    "train min.": ("train_minutes", None, True),
}


def world_model_table(jobs: pd.DataFrame) -> str:
    """Per level and row: each world-model figure as mean [95% t-interval across training seeds]
    beside its strongest trivial baseline (mean over the jobs; the same windows for every job of
    a level); **!** where the interval does not lie wholly beyond the baseline; last, the mean
    training minutes (wall clock on the machine that ran them)."""
    jobs = jobs[jobs["world_model_exact_cells_ego_mapped"].notna()]
    lines = []
    for level, rows in jobs.groupby("level", sort=False):
        split = ",".join(sorted(set(rows["split"])))
        lines += [f"#### {level} ({split} split)", "", "| row | seeds | " + " | ".join(WORLD_MODEL_COLUMNS) + " |"]
        lines.append("|" + "---|" * (len(WORLD_MODEL_COLUMNS) + 2))
        for (strategy, prob, settings), group in rows.groupby(TABLE_KEYS[1:], dropna=False, sort=False):
            cells = [_row_label(strategy, prob, settings), str(len(group))]
            for value_column, baseline_column, lower in WORLD_MODEL_COLUMNS.values():
                mean, low, high = t_interval(group[value_column].dropna().to_numpy())
                if pd.isna(mean):  # not measured for this row (an older record; a question it cannot be asked)
                    cells.append("—")
                    continue
                if baseline_column is None:  # what it cost (minutes), not a figure read against a baseline
                    cells.append(f"{mean:.1f}")
                    continue
                text = f"{mean:.3f}" + ("" if pd.isna(low) else f" [{low:.3f}, {high:.3f}]")
                reference = group[baseline_column].mean()
                if not pd.isna(mean) and not pd.isna(reference):
                    edge = mean if pd.isna(low) else (high if lower else low)
                    clear = edge < reference if lower else edge > reference
                    text += f" vs {reference:.3f}" + ("" if clear else " **!**")
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def reference_bands(rows: pd.DataFrame, references: tuple[str, ...] = REFERENCE_ROWS) -> list[tuple[str, float, float]]:
    """(strategy, low, high): the across-seed success interval of each reference row of one level
    that has one, drawn behind the bars so that a row's reading can be seen, not only read."""
    bands = []
    for row in rows[rows["strategy"].isin(references)].itertuples():
        if not pd.isna(row.success_seed_ci95_low):
            bands.append((row.strategy, max(row.success_seed_ci95_low, 0.0), min(row.success_seed_ci95_high, 1.0)))
    return bands


def success_figure(summary: pd.DataFrame, path: Path) -> Path:
    """Success per table point (mean over seeds, 95% t-interval across seeds), one panel per level,
    each reference row's interval as a band behind the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(dict.fromkeys(summary["level"]))
    width = max(6.0, 1.2 * summary["level"].value_counts().max())  # room for every bar's label
    figure, axes = plt.subplots(1, len(levels), figsize=(width * len(levels), 4.5), squeeze=False)
    for axis, level in zip(axes[0], levels, strict=True):
        rows = summary[summary["level"] == level]
        labels = [
            "\n".join(
                filter(None, [s, "" if pd.isna(p) else f"p={p:g}", *map(_short_setting, _settings_text(extra).split())])
            )
            for s, p, extra in zip(rows["strategy"], rows["prob"], rows["settings"], strict=True)
        ]
        low = (rows["success_rate"] - rows["success_seed_ci95_low"]).fillna(0).clip(lower=0)
        high = (rows["success_seed_ci95_high"] - rows["success_rate"]).fillna(0).clip(lower=0)
        for index, (strategy, band_low, band_high) in enumerate(reference_bands(rows)):
            colour = f"C{index + 2}"
            axis.axhspan(band_low, band_high, color=colour, alpha=0.15, label=f"{strategy} 95% t-CI")
            for edge in (band_low, band_high):  # the edges stay visible where a bar covers the band
                axis.axhline(edge, color=colour, linestyle="--", linewidth=1, zorder=3)
        axis.bar(range(len(rows)), rows["success_rate"], yerr=[low, high], capsize=3)
        axis.plot(range(len(rows)), rows["random_success"], "k_", markersize=14, label="random policy")
        axis.set_xticks(range(len(rows)), labels, fontsize=7)
        axis.set_ylim(0, 1)
        axis.set_title(level)
        axis.set_ylabel(f"{','.join(sorted(set(rows['split'])))} success\n(mean over seeds, 95% t-CI)")
        axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> None:
    """``anyorder-results <sweep dir>``: the table and its figure from a sweep's finished jobs."""
    import argparse
    import sys

    from anyorder.errors import report_errors

    parser = argparse.ArgumentParser(prog="anyorder-results", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or any directory above job dirs)")
    parser.add_argument(
        "--eval",
        dest="evaluation",
        default=OWN_EVALUATION,
        help="which evaluation of each job: its own dev one (default: eval), or the directory an anyorder-eval "
        "run wrote inside the job (e.g. eval_test, for the sealed test split, once the choices are frozen)",
    )
    parser.add_argument(
        "--keep-records",
        type=Path,
        metavar="DIR",
        help="first copy every job's record (job.json, .hydra/, each evaluation's metrics.json; no checkpoints) "
        "to DIR, keeping the sweep's layout, and tabulate from there: the record a figure in the docs cites",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with report_errors():
        if args.keep_records is not None:
            load_jobs(args.sweep_dir, args.evaluation)  # a sweep that cannot be tabulated is not copied
            print(f"kept the records of {keep_records(args.sweep_dir, args.keep_records)} jobs in {args.keep_records}")
            args.sweep_dir = args.keep_records
        csv_path, markdown_path, compact_path, jobs_path = write_tables(args.sweep_dir, args.evaluation)
        figure = success_figure(pd.read_csv(csv_path), args.sweep_dir / "figures" / f"{csv_path.stem}_success.png")
    print(compact_path.read_text())
    print(
        f"table: {compact_path} (as above), {markdown_path} (every column, each baseline beside its metric), "
        f"{jobs_path} (one line per job), {csv_path}; figure: {figure}"
    )


def training_curves(sweep_dir: str | Path, tag: str = "eval/success_rate") -> pd.DataFrame:
    """One TensorBoard scalar of every job's training run: columns job, step, value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    for job_dir in job_dirs(sweep_dir):
        for events in sorted((job_dir / "tensorboard").glob("events.out.tfevents.*")):
            accumulator = EventAccumulator(str(events))
            accumulator.Reload()
            if tag not in accumulator.Tags()["scalars"]:
                continue
            name = str(job_dir.relative_to(sweep_dir))
            rows += [{"job": name, "step": e.step, "value": e.value} for e in accumulator.Scalars(tag)]
    return pd.DataFrame(rows, columns=["job", "step", "value"])


if __name__ == "__main__":
    main()
