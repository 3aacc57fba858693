"""Sweeps that train with DDP: each point its own process tree (no child re-runs the sweep)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import FAST

from hydra_plugins.anyorder_launcher.local_gpus import gpu_groups, threads_per_job


def test_gpus_are_dealt_in_groups() -> None:
    assert gpu_groups([0, 1, 2, 3], 1, 1) == ["0", "1", "2", "3"]
    assert gpu_groups([0, 1, 2, 3], 2, 1) == ["0,1", "2,3"]
    assert gpu_groups([0, 1, 2, 3], 4, 1) == ["0,1,2,3"]  # one point after another, DDP across all
    assert gpu_groups([], 1, 3) == ["", "", ""]  # CPU only: three jobs at once
    assert gpu_groups([0, 1], 1, 4) == ["0"] * 4 + ["1"] * 4  # four small jobs packed on each GPU
    with pytest.raises(ValueError, match="gpus_per_job"):
        gpu_groups([0, 1], 3, 1)
    with pytest.raises(ValueError, match="jobs_per_device"):
        gpu_groups([0], 1, 0)
    assert threads_per_job(2, cores=2) == 1 and threads_per_job(3, cores=16) == 5 and threads_per_job(8, 2) == 1


def test_sweep_of_ddp_jobs_runs_each_point_exactly_once(tmp_path: Path, data_root: Path) -> None:
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable, "-m", "anyorder.train", "-m", "launcher=local_gpus", "masking.prob=0.15,0.5",
            "strategy=ddp", "trainer.devices=2", "trainer.max_steps=2", f"paths.data_dir={data_root}",
            f"hydra.sweep.dir={sweep}", *FAST,
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_masking.prob=0.15", "1_masking.prob=0.5"]  # no extra sweeps from DDP children
    for job in jobs:
        log = (sweep / job / "launcher.log").read_text()
        assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in log
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    assert not list(tmp_path.glob("multirun")) and not list(tmp_path.glob("outputs"))


def test_slurm_launcher_config_composes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "anyorder.train", "launcher=slurm", "hydra.launcher.partition=gpu",
         "hydra.launcher.nodes=2", "--cfg", "hydra"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SlurmLauncher" in result.stdout and "partition: gpu" in result.stdout and "nodes: 2" in result.stdout
