"""The strategy table as a Hydra sweep: its points, the table's arithmetic, a real packed sweep
through launcher=local_gpus read back by anyorder-results, TensorBoard's HParams and the notebook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from anyorder.errors import DataError
from anyorder.eval.metrics import wilson_interval
from anyorder.results import (
    JOB_FILE,
    compact_table,
    jobs_table,
    keep_records,
    load_jobs,
    main,
    markdown_table,
    read_against_references,
    reference_bands,
    summarize,
    write_tables,
)

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "strategy_sweep.ipynb"
POINTS = sorted(path.stem for path in files("anyorder.conf").joinpath("point").iterdir() if path.name.endswith(".yaml"))


def test_the_table_offers_every_strategy_once_and_every_prob_where_it_takes_one() -> None:
    strategies = {name.split("_p")[0] for name in POINTS}
    assert strategies == {"uniform_t", "cell", "attribute", "scheduled", "step", "behaviour_cloning"}
    for strategy in ("cell", "attribute", "scheduled", "step"):
        assert [p for p in POINTS if p.startswith(f"{strategy}_p")] == [f"{strategy}_p{q}" for q in (0.15, 0.3, 0.5)]


def fake_job(
    root: Path, strategy: str, prob: float | None, seed: int, wins: int, episodes: int = 50, **record: object
) -> Path:
    directory = root / "lvl" / f"{strategy}_{prob}" / f"seed{seed}"
    (directory / "eval").mkdir(parents=True)
    job = {"level": "lvl", "strategy": strategy, "prob": prob, "seed": seed, "train_seconds": 60.0 * (seed + 1)}
    (directory / JOB_FILE).write_text(json.dumps(job | record))
    metrics = {
        "seeds": [10_000, 10_000 + episodes],
        "success_rate": wins / episodes,
        "mean_episode_length": 9.0,
        "tasks": {
            "world_model": {"nll_per_token": 0.5 + seed, "nll_per_cell": 1.5, "exact_cell_accuracy_after_a_step": 0.7},
            "policy": {"accuracy": 0.8},
            "inverse": {"accuracy": 0.3 + 0.1 * seed},
            "mission": {"exact_match": 0.9},
        },
        "baselines": {
            "success_rate": {"random_policy": 0.02},
            "policy.accuracy": {"majority_action": 0.6},
            "world_model.nll_per_token": {"unigram": 1.1},
            "world_model.exact_cell_accuracy_after_a_step": {"copy_previous": 0.75},
            "inverse.accuracy": {"majority_action": 0.55},
            "mission.exact_match": {"most_frequent": 0.95},
        },
        "below_baseline": ["world_model.exact_cell_accuracy_after_a_step 0.700 does not beat copy_previous 0.750"],
        "robustness": {"fractions": [0.0, 1.0], "success_rate": [wins / episodes, 0.0], "success_area": 0.25},
    }
    (directory / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return directory


def test_the_table_averages_seeds_and_pools_episodes_for_the_interval(tmp_path: Path) -> None:
    fake_job(tmp_path, "cell", 0.3, seed=0, wins=40)
    fake_job(tmp_path, "cell", 0.3, seed=1, wins=30)
    fake_job(tmp_path, "action_bc", None, seed=0, wins=10)
    summary = summarize(load_jobs(tmp_path))
    assert len(summary) == 2
    cell = summary[summary["strategy"] == "cell"].iloc[0]
    assert cell["seeds"] == 2
    assert cell["success_rate"] == pytest.approx(0.7)
    pooled = (cell["success_pooled_ci95_low"], cell["success_pooled_ci95_high"])
    assert pooled == pytest.approx(wilson_interval(70, 100))
    # across seeds: 0.8 and 0.6, sd 0.1414, t_{0.975,1} = 12.706 -> 0.7 +- 1.270 (wide, as two seeds are)
    across = (cell["success_seed_ci95_low"], cell["success_seed_ci95_high"])
    assert across == pytest.approx((0.7 - 1.2706, 0.7 + 1.2706), abs=1e-3)
    assert across[0] < pooled[0] and across[1] > pooled[1]
    assert cell["world_model_nll"] == pytest.approx(1.0)
    assert cell["train_minutes"] == pytest.approx(1.5)
    baseline = summary[summary["strategy"] == "action_bc"].iloc[0]
    assert pd.isna(baseline["prob"]) and pd.isna(baseline["success_seed_std"])
    table = markdown_table(summary)
    assert "| cell | 0.3 | 2 | 0.700 | [-0.571, 1.971] | [0.604, 0.781] | 0.020 | 0.800 | 0.600" in table
    assert "| action_bc | U(ε,1) | 1 | 0.200 | n/a |" in table
    # every question's metric beside its trivial baseline: inverse vs majority, mission vs the most frequent one
    assert cell["inverse_accuracy"] == pytest.approx(0.35) and cell["majority_inverse_accuracy"] == pytest.approx(0.55)
    assert "| 0.700 | 0.750 | 0.350 | 0.550 | 0.900 | 0.950 | 2 |" in table


def test_the_world_model_table_sets_each_split_figure_beside_the_baseline_that_knows_the_geometry(
    tmp_path: Path,
) -> None:
    from anyorder.results import write_tables

    for seed, mapped in enumerate((0.97, 0.99, 0.98)):
        directory = fake_job(tmp_path, "mixture_world", None, seed=seed, wins=45)
        metrics = json.loads((directory / "eval" / "metrics.json").read_text())
        metrics["tasks"]["world_model"] |= {"exact_cell_accuracy_ego_mapped": mapped, "share_ego_mapped": 0.7}
        metrics["baselines"]["world_model.exact_cell_accuracy_after_a_step"]["ego_motion_copy"] = 0.6
        metrics["baselines"]["inverse.accuracy"]["direction_rule"] = 1.0
        metrics["imagination"] = {"k": [1, 2, 3], "model": [0.9, 0.8, 0.7], "ego_motion_copy": [1.0, 0.6, 0.5]}
        (directory / "eval" / "metrics.json").write_text(json.dumps(metrics))
    fake_job(tmp_path, "uniform_t", None, seed=0, wins=40)  # a record from before the split: not in this table
    write_tables(tmp_path)
    table = (tmp_path / "results_world_model.md").read_text()
    assert "uniform_t" not in table and table.count("| mixture_world | 3 |") == 1
    # ego-mapped: mean 0.98, sd 0.01, t_{0.975,2} = 4.303 -> +- 0.0248
    assert "| 0.980 [0.955, 1.005] |" in table
    assert "0.700 [0.700, 0.700] vs 0.500 |" in table  # imagination at k = 3 beside the iterated copy
    assert "0.700 [0.700, 0.700] vs 0.600 |" in table  # exact cells after a step clear the ego-motion copy
    assert "vs 1.000 **!**" in table  # the inverse model does not clear the direction rule
    row = next(line for line in table.splitlines() if line.startswith("| mixture_world |"))
    assert row.endswith("| 2.0 |")  # train minutes 1, 2, 3: their mean, no baseline


def test_a_left_to_right_record_splits_its_own_likelihood_the_chain_rule(tmp_path: Path) -> None:
    from anyorder.results import job_row

    directory = fake_job(tmp_path, "autoregressive", None, seed=0, wins=45)
    metrics = json.loads((directory / "eval" / "metrics.json").read_text())
    world = metrics["tasks"]["world_model"]
    del world["nll_per_token"]  # no one-shot likelihood left to right
    world |= {"joint_nll_per_token_all_windows": 0.1, "joint_nll_per_token_all_windows_new_in_view": 0.2}
    (directory / "eval" / "metrics.json").write_text(json.dumps(metrics))
    row = job_row(directory)
    assert pd.isna(row["world_model_nll"]) and row["world_model_nll_new_in_view"] == pytest.approx(0.2)
    assert pd.isna(row["world_model_nll_ego_mapped"])  # a part the record does not hold stays empty


def test_a_row_reads_better_or_worse_than_a_reference_only_where_the_seed_intervals_are_disjoint(
    tmp_path: Path,
) -> None:
    # wins of 50 per seed; three seeds 0.60/0.62/0.64 -> 0.62 +- 4.303 * 0.02 / sqrt(3) = [0.570, 0.670]
    rows = {"uniform_t": 30, "cell": 45, "step": 10, "attribute": 32}
    for strategy, wins in rows.items():
        for seed in range(3):
            fake_job(tmp_path, strategy, 0.5, seed, wins + seed)
    for seed in range(2):
        fake_job(tmp_path, "scheduled", 0.5, seed, wins=48)
    fake_job(tmp_path / "other", "cell", 0.5, 0, wins=49, level="other")  # a level without the reference
    summary = read_against_references(summarize(load_jobs(tmp_path)))
    reading = {(row.level, row.strategy): row.success_vs_uniform_t for row in summary.itertuples()}
    assert reading == {
        ("lvl", "cell"): "better",  # [0.870, 0.970]
        ("lvl", "step"): "worse",  # [0.170, 0.270]
        ("lvl", "attribute"): "not told apart",  # [0.610, 0.710] overlaps the reference
        ("lvl", "scheduled"): "too few seeds",  # two seeds, however far ahead
        ("lvl", "uniform_t"): "",
        ("other", "cell"): "",
    }
    assert "success_vs_behaviour_cloning" not in summary  # no such row: no column
    table = markdown_table(summary)
    assert "| pooled Wilson 95% CI | success vs uniform_t | random policy |" in table
    assert "| better | 0.020 |" in table and "| — | 0.020 |" in table
    (band,) = reference_bands(summary[summary["level"] == "lvl"])  # clipped to [0, 1] for the figure
    assert band == ("uniform_t", pytest.approx(0.5703, abs=1e-3), pytest.approx(0.6697, abs=1e-3))
    assert reference_bands(summary[summary["level"] == "other"]) == []


def test_the_compact_table_puts_the_reference_rows_first_and_flags_each_mean_that_misses_its_baseline(
    tmp_path: Path,
) -> None:
    for seed in range(3):
        fake_job(tmp_path, "cell_p0.15", 0.15, seed, wins=40 + seed)
        fake_job(tmp_path, "uniform_t", None, seed, wins=30 + seed)
    summary = read_against_references(summarize(load_jobs(tmp_path)))
    lines = compact_table(summary).splitlines()
    assert lines[2] == (
        "Trivial baselines: random policy 0.020; majority action 0.600 (inverse question: 0.550); unigram NLL "
        "1.100; copying the previous observation 0.750 exact cells; the most frequent mission 0.950 exact."
    )
    header, default, cell = lines[4], lines[6], lines[7]
    assert "| row | seeds | success: mean [95% t-CI across seeds] | pooled Wilson | vs default (uniform t) |" in header
    assert default.startswith("| default (uniform t) | 3 | **0.620** [0.570, 0.670] |")
    assert cell.startswith("| cell p=0.15 | 3 | **0.820** [0.770, 0.870] |")
    # action 0.8 beats 0.6; NLL 0.5+seed (mean 1.5) does not beat 1.1 (lower is better); exact cells 0.7 < 0.75
    # copy; inverse 0.3+0.1*seed (mean 0.4) < 0.55; mission 0.9 < 0.95; then the robustness area
    assert cell.endswith("| better | 0.800 | 1.500 **!** | 0.700 **!** | 0.400 **!** | 0.900 **!** | 0.250 |")
    assert "| — | 0.800 |" in default
    # an older metrics.json without baselines: its means are shown unflagged, its baselines as n/a
    metrics = fake_job(tmp_path / "old", "cell", 0.5, 0, wins=10) / "eval" / "metrics.json"
    metrics.write_text(json.dumps(json.loads(metrics.read_text()) | {"baselines": {}}))
    old = compact_table(summarize(load_jobs(tmp_path / "old")))
    assert "Trivial baselines: random policy n/a; majority action n/a" in old
    assert "| cell p=0.5 | 1 | **0.200** n/a | [0.112, 0.330] | 0.800 | 0.500 | 0.700 | 0.300 | 0.900 | 0.250 |" in old


def test_the_jobs_table_gives_every_job_its_own_line_judged_by_its_own_baselines(tmp_path: Path) -> None:
    for seed in range(2):
        fake_job(tmp_path, "cell_p0.15", 0.15, seed, wins=40 + seed)
    fake_job(tmp_path, "behaviour_cloning", None, 0, wins=30)
    lines = jobs_table(load_jobs(tmp_path)).splitlines()
    assert lines[2].startswith("Trivial baselines: random policy 0.020; majority action 0.600")
    assert lines[4].startswith("| row | seed | success [95% Wilson] | steps per episode | action acc. | WM NLL |")
    assert lines[6].startswith("| tuned BC | 0 | **0.600** ")  # the reference row first
    low, high = wilson_interval(40, 50)  # over the job's own 50 episodes
    # action 0.8 beats 0.6; NLL 0.5 beats the unigram's 1.1; exact cells 0.7 < copy 0.75; inverse 0.3 < 0.55;
    # mission 0.9 < 0.95
    assert lines[7] == (
        f"| cell p=0.15 | 0 | **0.800** [{low:.3f}, {high:.3f}] | 9.0 | 0.800 | 0.500 | 0.700 **!** | 0.300 **!** "
        "| 0.900 **!** | 0.250 |"
    )
    assert lines[8].startswith("| cell p=0.15 | 1 | **0.820** ") and "| 0.800 | 1.500 **!** |" in lines[8]  # NLL 1.5
    assert len(lines) == 9  # a heading, the baselines, the table head and three jobs: one line each


def hydra_record(job_dir: Path, num_episodes: int, model: str) -> None:
    """The .hydra/ files a Hydra job leaves: its composed config and its config-group choices."""
    (job_dir / ".hydra").mkdir()
    (job_dir / ".hydra" / "config.yaml").write_text(f"data:\n  num_episodes: {num_episodes}\nseed: 0\n")
    (job_dir / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      model: {model}\n")


def test_a_masking_chosen_on_the_command_line_names_the_row_not_the_point_it_replaced(tmp_path: Path) -> None:
    table_job = {"experiment": "strategy_table", "point": "uniform_t"}
    for seed in (0, 1):
        overrides = {**table_job, "seed": str(seed), "masking": "mixture_inverse"}
        fake_job(tmp_path, "mixture", None, seed, 40, overrides=overrides)
    fake_job(tmp_path, "point", None, 0, 30, overrides={**table_job, "seed": "0"})
    rows = {row.strategy: row for row in summarize(load_jobs(tmp_path)).itertuples()}
    assert set(rows) == {"mixture_inverse", "uniform_t"}
    assert rows["mixture_inverse"].seeds == 2 and rows["uniform_t"].seeds == 1
    assert rows["mixture_inverse"].settings == rows["uniform_t"].settings  # the label, never a setting as well


def test_any_sweep_tabulates_one_row_per_differing_setting_compared_by_its_run_value(tmp_path: Path) -> None:
    def job(name: str, seed: int, wins: int, overrides: dict[str, str], num_episodes: int) -> None:
        hydra_record(fake_job(tmp_path / name, "x", None, seed, wins, overrides=overrides), num_episodes, "tiny")

    # a default job (no override) ran with 10,000 demos: it shares a row with the one that asked for 1e4
    job("a", 0, 40, {"seed": "0", "data.num_episodes": "1e4", "eval.num_episodes": "50"}, 10_000)
    job("b", 1, 30, {"seed": "1", "eval.num_episodes": "50"}, 10_000)
    job("c", 0, 10, {"seed": "0", "data.num_episodes": "1000", "experiment": "behaviour_cloning"}, 1000)
    job("d", 0, 20, {"seed": "0", "data.num_episodes": "1000", "point": "cell_p0.3"}, 1000)
    summary = summarize(load_jobs(tmp_path))
    rows = {(row.strategy, row.settings): row for row in summary.itertuples()}
    assert set(rows) == {
        ("default", "data.num_episodes=10000"),
        ("behaviour_cloning", "data.num_episodes=1000"),
        ("cell_p0.3", "data.num_episodes=1000"),
    }  # seed, experiment, point and eval.* tell jobs apart or say how they ran: never a row key
    assert rows["default", "data.num_episodes=10000"].seeds == 2
    assert rows["default", "data.num_episodes=10000"].success_rate == pytest.approx(0.7)
    table = markdown_table(summary)
    assert "| behaviour_cloning | U(ε,1) | data.num_episodes=1000 | 1 | 0.200 |" in table


def test_a_value_only_its_run_could_resolve_reads_as_typed_and_how_a_job_ran_is_no_setting(tmp_path: Path) -> None:
    for name, overrides in (("a", {"seed": "0", "trainer.enable_progress_bar": "False", "model.width": "8"}),
                            ("b", {"seed": "0"})):  # fmt: skip
        job = fake_job(tmp_path / name, "x", None, 0, 40, overrides=overrides)
        (job / ".hydra").mkdir()
        (job / ".hydra" / "config.yaml").write_text(
            "trainer:\n  enable_progress_bar: ${stdout_is_tty:}\nmodel:\n  width: ${unregistered_resolver:}\n"
        )
    rows = load_jobs(tmp_path)
    assert sorted(str(settings) for settings in rows["settings"]) == ["model.width=", "model.width=8"]  # b: unknown


def test_a_later_test_evaluation_tabulates_on_its_own_and_a_job_without_it_is_named(tmp_path: Path) -> None:
    jobs = [fake_job(tmp_path, "cell", 0.3, seed, wins=10 + seed) for seed in (0, 1)]
    for job, wins in zip(jobs, (45, 47), strict=True):
        test = json.loads((job / "eval" / "metrics.json").read_text()) | {"split": "test", "success_rate": wins / 50}
        (job / "eval_test").mkdir()
        (job / "eval_test" / "metrics.json").write_text(json.dumps(test))
    dev, test = summarize(load_jobs(tmp_path)).iloc[0], summarize(load_jobs(tmp_path, "eval_test")).iloc[0]
    assert (dev["split"], dev["success_rate"]) == ("dev", pytest.approx(0.21))
    assert (test["split"], test["success_rate"]) == ("test", pytest.approx(0.92))
    csv_path, markdown_path, compact_path, jobs_path = write_tables(tmp_path, "eval_test")
    assert csv_path.name == "results_eval_test.csv" and "### lvl (test split)" in markdown_path.read_text()
    assert compact_path.name == "results_eval_test_compact.md" and "#### lvl (test split)" in compact_path.read_text()
    assert jobs_path.name == "results_eval_test_jobs.md" and "| cell p=0.3 | 1 | **0.940** " in jobs_path.read_text()
    fake_job(tmp_path, "cell", 0.3, seed=2, wins=10)
    with pytest.raises(DataError, match=r"seed2/eval_test/metrics.json: this job has no 'eval_test' evaluation"):
        load_jobs(tmp_path, "eval_test")


@pytest.mark.parametrize(
    ("broken", "message"),
    [(JOB_FILE, "unreadable job record"), ("eval/metrics.json", "unreadable evaluation result"),
     (".hydra/config.yaml", "unreadable Hydra record")],
)  # fmt: skip
def test_a_corrupt_job_file_is_named(tmp_path: Path, broken: str, message: str) -> None:
    job = fake_job(tmp_path, "cell", 0.3, seed=0, wins=10, overrides={"seed": "0", "model.optimizer.lr": "1e-3"})
    hydra_record(job, 1000, "tiny")
    (job / broken).write_text("{not: [closed")
    with pytest.raises(DataError, match=f"{broken}: {message}"):
        load_jobs(tmp_path)


def test_a_sweep_without_finished_jobs_names_its_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no finished jobs"):
        load_jobs(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_jobs(tmp_path / "missing")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match="a_file: is a file, not a sweep directory"):
        load_jobs(tmp_path / "a_file")


def test_a_table_gathers_linked_jobs_of_other_sweeps_once(tmp_path: Path) -> None:
    """Jobs of earlier sweeps linked into a table directory are tabulated beside its own jobs;
    a job linked twice, or a link back up the tree, counts once."""
    table, earlier = tmp_path / "table", tmp_path / "earlier"
    fake_job(table, "cell", 0.15, seed=0, wins=30)
    linked = fake_job(earlier, "cell", 0.15, seed=1, wins=40)
    (table / "lvl" / "cell_0.15" / "seed1").symlink_to(linked)
    (table / "again").symlink_to(linked)
    (table / "lvl" / "loop").symlink_to(table)
    frame = load_jobs(table)
    assert sorted(frame["seed"]) == [0, 1]
    cell = summarize(frame).iloc[0]
    assert cell["seeds"] == 2 and cell["success_rate"] == pytest.approx(0.7)


def test_kept_records_rebuild_the_table_without_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep, kept = tmp_path / "sweep", tmp_path / "kept"
    for seed, wins in ((0, 40), (1, 30)):
        job = fake_job(sweep, "cell", 0.3, seed, wins, overrides={"seed": str(seed), "model.optimizer.lr": "1e-3"})
        hydra_record(job, 1000, "tiny")
        (job / "checkpoints").mkdir()
        (job / "checkpoints" / "last.ckpt").write_bytes(b"weights")
        (job / "eval" / "episodes.csv").write_text("policy,success\n")
        (job / "eval_test").mkdir()
        (job / "eval_test" / "metrics.json").write_text((job / "eval" / "metrics.json").read_text())
    main([str(sweep), "--keep-records", str(kept)])
    assert "kept the records of 2 jobs" in capsys.readouterr().out
    copied = {str(path.relative_to(kept)) for path in kept.rglob("*") if path.is_file()}
    assert copied == {  # the table's own outputs (results.*, figures/) are written beside the records
        *[f"lvl/cell_0.3/seed{seed}/{name}" for seed in (0, 1) for name in
          (".hydra/config.yaml", ".hydra/hydra.yaml", "eval/metrics.json", "eval_test/metrics.json", JOB_FILE)],
        "figures/results_success.png", "results.csv", "results.md", "results_compact.md", "results_jobs.md",
    }  # fmt: skip
    for evaluation in ("eval", "eval_test"):
        original, rebuilt = (summarize(load_jobs(root, evaluation)) for root in (sweep, kept))
        pd.testing.assert_frame_equal(original, rebuilt)
    assert keep_records(sweep, tmp_path / "again") == 2


SHORT_JOB = [
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "callbacks.closed_loop_eval.num_episodes=4",
    "callbacks.closed_loop_eval.num_envs=4",
    "eval.num_episodes=4",
    "eval.num_envs=4",
    "eval.query_batches=1",
    "eval.occlusion_fractions=[0.0,0.5]",
]


def run_table(sweep_dir: Path, data_root: Path, job: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    """experiment=strategy_table cut to 2 points x 2 seeds of ``job``, 2 jobs at a time on the CPU."""
    command = [
        sys.executable, "-m", "anyorder.train", "-m", "experiment=strategy_table",
        "point=uniform_t,behaviour_cloning", "seed=0,1", "data=babyai_gotoredball",
        "launcher=local_gpus", "hydra.launcher.gpus=[]", "hydra.launcher.jobs_per_device=2",
        f"hydra.sweep.dir={sweep_dir}", f"paths.data_dir={data_root}", *job, *SHORT_JOB, *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})


def hparams_of(run: Path) -> tuple[dict, set[str]]:
    """The HParams session of a job's TensorBoard run: its hyperparameters and metric tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    hyperparameters, scalars = {}, set()
    for events in (run / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events)).Reload()
        scalars |= set(accumulator.Tags()["scalars"])
        try:
            contents = accumulator.PluginTagToContent("hparams").values()
        except KeyError:  # the training run's own event file: no HParams in it
            continue
        for content in contents:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                hyperparameters |= {k: v.string_value for k, v in data.session_start_info.hparams.items()}
    return hyperparameters, scalars


def test_the_table_is_a_packed_hydra_sweep_that_evaluates_itself(tmp_path: Path, data_root: Path, tiny_run) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_table(sweep_dir, data_root, tiny_run)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / JOB_FILE).is_file())
    assert {p.name.split("_", 1)[1] for p in jobs} == {
        "data=babyai_gotoredball,point=uniform_t,seed=0",
        "data=babyai_gotoredball,point=uniform_t,seed=1",
        "data=babyai_gotoredball,point=behaviour_cloning,seed=0",
        "data=babyai_gotoredball,point=behaviour_cloning,seed=1",
    }  # named by Hydra's record of the swept keys (data is swept by the grid too)
    for job in jobs:
        log = (job / "launcher.log").read_text()
        assert "Launching" not in log and "success rate" in log  # one job, evaluated by itself
        hyperparameters, scalars = hparams_of(job)
        assert hyperparameters["point"] in ("uniform_t", "behaviour_cloning") and hyperparameters["seed"] in ("0", "1")
        assert set(hyperparameters) == {"data", "point", "seed"}  # the grid's keys, not every job's fixed settings
        assert {"hparams/success_rate", "hparams/world_model_nll", "hparams/action_accuracy"} <= scalars
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        # one TensorBoard run per job: its evaluation's table and figures join the training run
        board = EventAccumulator(str(job / "tensorboard")).Reload()
        assert "eval/metrics/text_summary" in board.Tags()["tensors"]
        assert "eval/robustness" in board.Tags()["images"]
        assert not (job / "eval" / "tensorboard").exists()
    launcher_log = (sweep_dir / "multirun.yaml").read_text()
    assert "jobs_per_device: 2" in launcher_log

    results = subprocess.run(
        [sys.executable, "-m", "anyorder.results", str(sweep_dir)], capture_output=True, text=True, timeout=300
    )
    assert results.returncode == 0, results.stderr[-2000:]
    table = pd.read_csv(sweep_dir / "results.csv")
    assert sorted(table["strategy"]) == ["behaviour_cloning", "uniform_t"] and (table["seeds"] == 2).all()
    for row in table.itertuples():  # the table holds what each job's own evaluation measured
        measured = [
            json.loads((job / "eval" / "metrics.json").read_text())
            for job in jobs
            if json.loads((job / JOB_FILE).read_text())["strategy"] == row.strategy
        ]
        assert row.success_rate == pytest.approx(sum(m["success_rate"] for m in measured) / 2, abs=1e-4)
        random = sum(m["baselines"]["success_rate"]["random_policy"] for m in measured) / 2
        assert row.random_success == pytest.approx(random, abs=1e-4)
    assert (sweep_dir / "figures" / "results_success.png").stat().st_size > 10_000

    # the same command on the same directory resumes: finished jobs are skipped, not trained again
    # and keep the record of the settings that trained them (Hydra would rewrite .hydra/ first)
    stamp = (jobs[0] / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    records = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in (jobs[0] / ".hydra").iterdir()}
    again = run_table(sweep_dir, data_root, tiny_run)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (jobs[0] / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in (jobs[0] / ".hydra").iterdir()} == records
    assert "finished already" in (jobs[0] / "launcher.log").read_text()

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["ANYORDER_SWEEP_DIR"] = str(sweep_dir)
    try:
        NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        del os.environ["ANYORDER_SWEEP_DIR"]
    for figure in ("success_vs_prob", "nll_vs_success", "robustness", "training_success"):
        assert (sweep_dir / "figures" / f"{figure}.png").stat().st_size > 10_000


def test_a_failed_job_costs_only_itself_and_is_listed(tmp_path: Path, data_root: Path, tiny_run) -> None:
    sweep_dir = tmp_path / "sweep"
    points = ["seed=0", "point=uniform_t,behaviour_cloning"]
    result = run_table(sweep_dir, data_root, tiny_run, *points, "eval.temperature=-1")
    # every job refuses eval.temperature=-1 before training, one line each, and all are listed
    assert result.returncode != 0
    assert "2 of 2 jobs failed" in result.stdout + result.stderr
    for job in (p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        assert "error: eval.temperature" in (job / "launcher.log").read_text()


def test_the_table_trains_one_recipe_on_every_level(compose_train) -> None:
    """Between the table's levels only the level may change; a level's own data defaults (GoToLocal:
    1,000 demos, window 4) would confound the level with the recipe."""
    from omegaconf import OmegaConf

    recipes = []
    for level in ("babyai_gotoredball", "babyai_gotolocal"):
        recipe = OmegaConf.to_container(compose_train("experiment=strategy_table", f"data={level}"))
        assert recipe["data"].pop("level").startswith("BabyAI-GoTo")
        recipes.append(recipe)
    assert recipes[0] == recipes[1]
    assert (recipes[0]["data"]["num_episodes"], recipes[0]["data"]["window"]) == (10_000, 2)


def test_every_offered_strategy_and_prob_point_trains_something_different(compose_train) -> None:
    """No two points of the table may be the same experiment: the share of each token kind that
    their masks hide, or of cells they hide in part (at the start, middle and end of
    training), must differ somewhere."""
    import torch
    from hydra.utils import instantiate

    from anyorder.data.layout import TokenKind

    tokens, signatures = None, {}
    for point in POINTS:
        cfg = compose_train(f"point={point}", "data.num_episodes=60", "data.shard_size=20")
        if tokens is None:  # one batch of windows with the table's window length, all real steps
            datamodule = instantiate(cfg.data)
            datamodule.prepare_data()
            batch = next(iter(datamodule.train_dataloader()))
            tokens = {key: value.repeat(64, 1) for key, value in batch.items()}
        callback = instantiate(cfg.masking)
        steps = cfg.trainer.max_steps
        shares = []
        for step in (0, steps // 2, steps):
            callback.apply(tokens, step, torch.Generator().manual_seed(0))
            for kind in (TokenKind.MISSION, TokenKind.OBJECT, TokenKind.DIRECTION, TokenKind.ACTION):
                where = tokens["kind"] == kind
                shares.append(float(tokens["mask"][where].float().mean()))
            attributes = tokens["mask"][tokens["cell"] >= 0].view(-1, 3).sum(dim=1)
            shares.append(float(((attributes > 0) & (attributes < 3)).float().mean()))  # cells partly hidden
        signatures[point] = torch.tensor(shares)
    names = list(signatures)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            gap = (signatures[first] - signatures[second]).abs().max()
            assert gap > 0.02, f"{first} and {second} mask alike (largest share gap {gap:.3f})"


def test_a_job_is_labelled_by_its_objective_before_its_masking() -> None:
    from anyorder.results import strategy_label

    assert strategy_label({"objective": "autoregressive_actions", "masking": "mixture"}) == "autoregressive_actions"
    assert strategy_label({"objective": "masked_diffusion", "masking": "next_action"}) == "next_action"
    assert strategy_label({}) == "default"


def test_the_objective_names_the_row_not_its_settings(tmp_path: Path) -> None:
    from anyorder.results import load_jobs

    for objective in ("autoregressive", "autoregressive_actions"):
        for lr in ("5e-4", "1e-3"):
            overrides = {"objective": objective, "model.optimizer.lr": lr}
            fake_job(tmp_path, f"{objective}{lr}", None, seed=0, wins=40, overrides=overrides)
    jobs = load_jobs(tmp_path)
    assert set(jobs["strategy"]) == {"autoregressive", "autoregressive_actions"}
    assert {str(settings) for settings in jobs["settings"]} == {"model.optimizer.lr=5e-4", "model.optimizer.lr=1e-3"}
