"""anyorder-sweep: the job plan, the table's arithmetic, and a real two-job sweep read by the notebook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from nbclient import NotebookClient

from anyorder.errors import ConfigError, DataError
from anyorder.eval.metrics import wilson_interval
from anyorder.results import JOB_FILE, load_jobs, markdown_table, summarize
from anyorder.sweep import plan_jobs

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "strategy_sweep.ipynb"


def sweep_settings(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="anyorder.conf", version_base="1.3"):
        cfg = compose(config_name="sweep", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg.sweep


def test_the_default_plan_covers_every_strategy_prob_seed_and_level() -> None:
    from omegaconf import OmegaConf

    settings = sweep_settings()
    strategies = OmegaConf.to_container(settings.strategies)
    jobs = plan_jobs(strategies, settings.levels, settings.probs, settings.seeds)
    with_prob = sum(spec["sweep_prob"] for spec in strategies.values())
    without = len(strategies) - with_prob
    assert len(jobs) == len(settings.levels) * len(settings.seeds) * (with_prob * len(settings.probs) + without)
    assert len({job.name for job in jobs}) == len(jobs)
    assert {"uniform_t", "cell", "attribute", "scheduled", "step", "action_bc"} <= {job.strategy for job in jobs}
    cell = next(job for job in jobs if job.strategy == "cell" and job.prob == 0.3)
    assert cell.train_overrides()[-1] == "masking.prob=0.3"
    assert all(job.prob is None for job in jobs if job.strategy in ("uniform_t", "action_bc"))


def test_plan_rejects_unknown_strategies_and_bad_probs() -> None:
    strategies = {"cell": {"overrides": ["experiment=cell_masking"], "sweep_prob": True}}
    with pytest.raises(ConfigError, match=r"sweep\.only"):
        plan_jobs(strategies, ["babyai_gotoredball"], [0.3], [0], only=["celll"])
    with pytest.raises(ConfigError, match=r"sweep\.probs"):
        plan_jobs(strategies, ["babyai_gotoredball"], [1.5], [0])
    with pytest.raises(ConfigError, match=r"sweep\.strategies\.cell"):
        plan_jobs({"cell": {"override": []}}, ["babyai_gotoredball"], [0.3], [0])


def fake_job(root: Path, strategy: str, prob: float | None, seed: int, wins: int, episodes: int = 50) -> None:
    directory = root / "lvl" / f"{strategy}_{prob}" / f"seed{seed}"
    (directory / "eval").mkdir(parents=True)
    job = {"level": "lvl", "strategy": strategy, "prob": prob, "seed": seed, "train_seconds": 60.0 * (seed + 1)}
    (directory / JOB_FILE).write_text(json.dumps(job))
    metrics = {
        "seeds": [10_000, 10_000 + episodes],
        "success_rate": wins / episodes,
        "mean_episode_length": 9.0,
        "tasks": {
            "world_model": {"nll_per_token": 0.5 + seed, "nll_per_cell": 1.5, "exact_cell_accuracy_after_a_step": 0.7},
            "policy": {"accuracy": 0.8},
        },
        "baselines": {
            "success_rate": {"random_policy": 0.02},
            "policy.accuracy": {"majority_action": 0.6},
            "world_model.nll_per_token": {"unigram": 1.1},
            "world_model.exact_cell_accuracy_after_a_step": {"copy_previous": 0.75},
        },
        "below_baseline": ["world_model.exact_cell_accuracy_after_a_step 0.700 does not beat copy_previous 0.750"],
        "robustness": {"fractions": [0.0, 1.0], "success_rate": [wins / episodes, 0.0], "success_area": 0.25},
    }
    (directory / "eval" / "metrics.json").write_text(json.dumps(metrics))


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


def test_a_sweep_without_finished_jobs_names_its_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no finished jobs"):
        load_jobs(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_jobs(tmp_path / "missing")


TINY_TRAINING = [
    "data.num_episodes=60",
    "data.shard_size=20",
    "data.window=2",
    "data.batch_size=8",
    "model.backbone.hidden_size=32",
    "model.backbone.num_layers=1",
    "model.backbone.num_heads=2",
    "model.backbone.intermediate_size=64",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "callbacks.closed_loop_eval.num_episodes=4",
    "callbacks.closed_loop_eval.num_envs=4",
    "trainer.enable_progress_bar=false",
]
TINY_EVAL = ["eval.num_episodes=4", "eval.num_envs=4", "eval.query_batches=1", "eval.occlusion_fractions=[0.0,0.5]"]


def run_sweep(sweep_dir: Path, data_root: Path) -> subprocess.CompletedProcess[str]:
    def as_list(overrides: list[str]) -> str:
        return "[" + ",".join(f"'{o}'" for o in overrides) + "]"

    command = [
        sys.executable,
        "-m",
        "anyorder.sweep",
        f"hydra.run.dir={sweep_dir}",
        f"sweep.data_dir={data_root}",
        "sweep.levels=[babyai_gotoredball]",
        "sweep.seeds=[0]",
        "sweep.only=[uniform_t,action_bc]",
        f"sweep.train={as_list(TINY_TRAINING)}",
        f"sweep.eval={as_list(TINY_EVAL)}",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ})


def test_a_two_job_sweep_writes_the_table_and_the_notebook_draws_it(tmp_path: Path, data_root: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(sweep_dir, data_root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for job in ("babyai_gotoredball/uniform_t/seed0", "babyai_gotoredball/action_bc/seed0"):
        assert (sweep_dir / job / "checkpoints" / "last.ckpt").is_file()
        assert (sweep_dir / job / "eval" / "metrics.json").is_file()
    table = pd.read_csv(sweep_dir / "results.csv")
    assert sorted(table["strategy"]) == ["action_bc", "uniform_t"]
    for row in table.itertuples():  # the table holds what each job's own evaluation measured
        job = "babyai_gotoredball/" + ("uniform_t" if row.strategy == "uniform_t" else "action_bc") + "/seed0"
        measured = json.loads((sweep_dir / job / "eval" / "metrics.json").read_text())
        assert row.success_rate == pytest.approx(measured["success_rate"], abs=1e-4)
        assert row.random_success == pytest.approx(measured["baselines"]["success_rate"]["random_policy"], abs=1e-4)
    assert "| uniform_t |" in (sweep_dir / "results.md").read_text()

    # rerunning the same directory is a resume: nothing is trained again
    stamp = (sweep_dir / "babyai_gotoredball/uniform_t/seed0/checkpoints/last.ckpt").stat().st_mtime_ns
    again = run_sweep(sweep_dir, data_root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (sweep_dir / "babyai_gotoredball/uniform_t/seed0/checkpoints/last.ckpt").stat().st_mtime_ns == stamp

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["ANYORDER_SWEEP_DIR"] = str(sweep_dir)
    try:
        NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        del os.environ["ANYORDER_SWEEP_DIR"]
    for figure in ("success_vs_prob", "nll_vs_success", "robustness", "training_success"):
        assert (sweep_dir / "figures" / f"{figure}.png").stat().st_size > 0


def test_a_failed_job_is_reported_with_its_log_and_the_sweep_exits_nonzero(tmp_path: Path, data_root: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "anyorder.sweep",
        f"hydra.run.dir={tmp_path / 'sweep'}",
        f"sweep.data_dir={data_root}",
        "sweep.levels=[babyai_gotoredball]",
        "sweep.seeds=[0]",
        "sweep.only=[action_bc]",
        "sweep.train=['data.window=0']",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "babyai_gotoredball/action_bc/seed0: training failed: data.window" in result.stderr
    assert "console.log" in result.stderr


def test_every_offered_strategy_and_prob_point_trains_something_different(compose_train) -> None:
    """No two points of the table may be the same experiment: the share of each token kind that
    their masks hide, or of cells they hide in part (at the start, middle and end of
    training), must differ somewhere."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from anyorder.data.layout import TokenKind

    settings = sweep_settings()
    jobs = plan_jobs(OmegaConf.to_container(settings.strategies), settings.levels[:1], settings.probs, [0])
    tokens, signatures = None, {}
    for job in jobs:
        cfg = compose_train(*job.train_overrides(), "data.num_episodes=60", "data.shard_size=20")
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
        signatures[job.name] = torch.tensor(shares)
    names = list(signatures)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            gap = (signatures[first] - signatures[second]).abs().max()
            assert gap > 0.02, f"{first} and {second} mask alike (largest share gap {gap:.3f})"
