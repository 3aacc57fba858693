"""The command line as a user meets it: help, config printing, one-line errors, a sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FAST = [
    "data.num_episodes=60",
    "data.shard_size=20",
    "data.num_workers=1",
    "data.window=2",
    "data.batch_size=4",
    "model.backbone.hidden_size=32",
    "model.backbone.num_layers=1",
    "model.backbone.num_heads=2",
    "model.backbone.intermediate_size=64",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_help_lists_the_config_groups(tmp_path: Path) -> None:
    result = run("anyorder.train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for group in ("masking:", "data:", "experiment:", "schedule:", "Examples:"):
        assert group in result.stdout
    assert "cell_masking" in result.stdout


def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    result = run("anyorder.train", "--cfg", "job", "experiment=cell_masking", "masking.prob=0.3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "anyorder.masking.CellMasking" in result.stdout and "prob: 0.3" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["masking.prob=1.5"], "masking.prob"),
        (["masking=foo"], "masking/foo"),
        (["data.window=0"], "data.window"),
        (["data.generate_if_missing=false", "paths.data_dir=nowhere"], "nowhere"),
        (["ckpt_path=missing.ckpt"], "missing.ckpt"),
        (["model.optimizer.lr=nan"], "model.optimizer.lr"),
        (["model.backbone.num_heads=3"], "error: model.backbone.hidden_size"),  # found while building the model
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, data_root: Path, overrides: list[str], needle: str) -> None:
    result = run("anyorder.train", f"paths.data_dir={data_root}", *FAST, *overrides, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if needle in line]
    assert lines, result.stderr
    if needle != "masking/foo":  # Hydra's own message also lists the available options
        assert len([ln for ln in result.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_eval_without_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = run("anyorder.evaluate", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: ckpt_path: missing value; give it on the command line, e.g. ckpt_path=<value>"
    ]


def test_sweep_runs_every_job_in_its_own_directory(tmp_path: Path, data_root: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run(
        "anyorder.train",
        "-m",
        "masking=cell,attribute",
        "masking.prob=0.15,0.5",
        "trainer.max_steps=2",
        f"paths.data_dir={data_root}",
        f"hydra.sweep.dir={sweep}",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 4
    names = {job.name.split("_", 1)[1] for job in jobs}  # named by the swept keys only
    assert names == {f"masking={m},masking.prob={p}" for m in ("cell", "attribute") for p in ("0.15", "0.5")}
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert (job / ".hydra" / "config.yaml").is_file()


def test_generate_command_writes_a_dataset(tmp_path: Path) -> None:
    result = run(
        "anyorder.generate",
        "data=babyai_gotolocal",
        "data.num_episodes=12",
        "data.num_workers=2",
        f"paths.data_dir={tmp_path / 'data'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    directory = tmp_path / "data" / "BabyAI-GoToLocal-v0-bot-n12-s0-val0.1-test0.1"  # keyed by the expert too
    assert (directory / "meta.json").is_file()
    assert "train" in result.stdout and "seeds [" in result.stdout


def test_a_failed_job_of_an_in_process_sweep_costs_only_itself(tmp_path: Path, data_root: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run(
        "anyorder.train", "-m", "masking.prob=1.5,0.5", f"paths.data_dir={data_root}", *FAST,
        "trainer.max_steps=2", "callbacks.closed_loop_eval=null", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "1 job(s) failed:\n  0_masking.prob=1.5: masking.prob: must be a number in (0, 1]" in result.stderr
    assert (sweep / "1_masking.prob=0.5" / "checkpoints" / "last.ckpt").is_file()  # the next job still ran


def test_without_a_terminal_training_prints_progress_lines(tmp_path: Path, data_root: Path) -> None:
    """Captured stdout is not a TTY, as under nohup, SLURM or CI: lines, not a bar."""
    result = run(
        "anyorder.train", f"paths.data_dir={data_root}", *[a for a in FAST if "progress_bar" not in a],
        "trainer.max_steps=4", "callbacks.text_progress.every_n_steps=2", "callbacks.closed_loop_eval=null",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/4", "4/4"], result.stdout
    assert "loss " in lines[0] and "steps/s" in lines[0] and "ETA " in lines[0]
    assert "it/s" not in result.stdout + result.stderr  # no progress bar drawn into the log


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path, data_root: Path) -> None:
    import signal
    import time

    import torch

    run_dir = tmp_path / "run"
    args = [
        f"paths.data_dir={data_root}",
        f"hydra.run.dir={run_dir}",
        *FAST,
        "callbacks.last_checkpoint.every_n_train_steps=5",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "anyorder.train", *args, "trainer.max_steps=100000"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (
        last.is_file() and torch.load(last, weights_only=True)["global_step"] >= 10
    ):
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert killed_at >= 10

    result = run("anyorder.train", *args, "ckpt_path=last", f"trainer.max_steps={killed_at + 5}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(last, weights_only=True)["global_step"] == killed_at + 5
