"""``hydra/launcher=local_gpus``: one process tree per sweep point, placed on its own GPU(s).

Hydra's basic launcher runs every sweep point inside the sweeping process; when a point
trains with DDP, Lightning starts its other ranks by re-running the command line, which is
the *sweep*, so every child re-runs the whole sweep. This launcher instead starts each point
as its own single-run command (``python -m <task module> <overrides> hydra.run.dir=<job dir>``),
so a DDP child re-runs only its own point. The GPUs are dealt out in groups of
``gpus_per_job`` through ``CUDA_VISIBLE_DEVICES`` and ``jobs_per_device`` points share each
group (small jobs packed on one GPU), or run at once on the CPU when there is no GPU: one
setting for both. Each job gets ``cores / concurrent jobs`` threads (``OMP_NUM_THREADS``), so
packed jobs never oversubscribe the cores. A failed job costs only itself; the failures are
listed when the sweep ends.
"""

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from anyorder.naming import SWEPT_KEYS_VARIABLE, varying_keys

log = logging.getLogger(__name__)
# (no `from __future__ import annotations` here: Hydra imports plugins so that a dataclass
# cannot resolve string annotations)


@dataclass
class LocalGPUsConf:
    _target_: str = "hydra_plugins.anyorder_launcher.local_gpus.LocalGPUsLauncher"
    gpus: Any = None  # list of GPU ids; null: every GPU this machine has; []: no GPUs (CPU jobs)
    gpus_per_job: int = 1  # all GPUs per job: points run one after another, each DDP across all
    jobs_per_device: int = 1  # points sharing one GPU group at a time; without GPUs, points at once
    poll_seconds: float = 1.0


ConfigStore.instance().store(group="hydra/launcher", name="local_gpus", node=LocalGPUsConf, provider="anyorder")


def gpu_groups(gpus: Sequence[int] | None, gpus_per_job: int, jobs_per_device: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES value of each concurrent slot ("" for a CPU slot)."""
    if jobs_per_device < 1:
        raise ValueError(f"hydra.launcher.jobs_per_device must be >= 1, got {jobs_per_device}")
    if gpus is None:
        import torch

        gpus = list(range(torch.cuda.device_count()))
    if not gpus:
        return [""] * jobs_per_device
    if not 1 <= gpus_per_job <= len(gpus):
        raise ValueError(f"hydra.launcher.gpus_per_job must be in [1, {len(gpus)}], got {gpus_per_job}")
    groups = [
        ",".join(str(g) for g in gpus[i : i + gpus_per_job])
        for i in range(0, len(gpus) - gpus_per_job + 1, gpus_per_job)
    ]
    return [group for group in groups for _ in range(jobs_per_device)]


def threads_per_job(concurrent: int, cores: int | None = None) -> int:
    """The cores shared evenly by the jobs that run at once (at least one thread each)."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, concurrent))


def task_module(task_function: TaskFunction) -> str:
    """The importable name of the entry point's module (``python -m`` makes it ``__main__``)."""
    module = task_function.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise RuntimeError("launcher=local_gpus needs the entry point run as a module or console script")
        module = spec.name
    return module


class LocalGPUsLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        self.settings = LocalGPUsConf(**settings)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _job_directory(self, overrides: Sequence[str], number: int) -> tuple[Path, DictConfig]:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = number
            sweep_config.hydra.job.num = number
        state = Singleton.get_state()
        HydraConfig.instance().set_config(sweep_config)
        directory = Path(sweep_config.hydra.sweep.dir) / str(sweep_config.hydra.sweep.subdir)
        Singleton.set_state(state)
        return directory, sweep_config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.task_function is not None
        module = task_module(self.task_function)
        slots = gpu_groups(self.settings.gpus, self.settings.gpus_per_job, self.settings.jobs_per_device)
        threads = str(threads_per_job(min(len(slots), len(job_overrides))))
        params = self.config.hydra.sweeper.get("params") or {}
        swept = ",".join(sorted(varying_keys(job_overrides) | {str(key).lstrip("+~") for key in params}))
        free = list(range(len(slots)))
        log.info(
            f"Launching {len(job_overrides)} jobs, {len(slots)} at a time, {threads} threads each"
            f" (devices per slot: {slots})"
        )
        pending = list(enumerate(job_overrides, start=initial_job_idx))
        running: list[tuple[subprocess.Popen, int, JobReturn, Any]] = []
        results: dict[int, JobReturn] = {}
        while pending or running:
            while pending and free:
                number, overrides = pending.pop(0)
                slot = free.pop(0)
                directory, sweep_config = self._job_directory(overrides, number)
                directory.mkdir(parents=True, exist_ok=True)
                log.info(f"\t#{number} on [{slots[slot] or 'cpu'}] : {' '.join(filter_overrides(overrides))}")
                quoted = str(directory).replace("\\", "\\\\").replace("'", "\\'")
                command = [sys.executable, "-m", module, *overrides, f"hydra.run.dir='{quoted}'"]
                output = (directory / "launcher.log").open("w")
                env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, SWEPT_KEYS_VARIABLE: swept}
                if slots[slot]:
                    env["CUDA_VISIBLE_DEVICES"] = slots[slot]
                process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
                job = JobReturn(
                    overrides=list(overrides),
                    cfg=sweep_config,
                    hydra_cfg=sweep_config,
                    working_dir=str(directory),
                    task_name=sweep_config.hydra.job.name,
                )
                running.append((process, slot, job, output))
                results[number] = job
            time.sleep(self.settings.poll_seconds)
            for entry in list(running):
                process, slot, job, output = entry
                if process.poll() is None:
                    continue
                output.close()
                running.remove(entry)
                free.append(slot)
                if process.returncode == 0:
                    job.status = JobStatus.COMPLETED
                else:
                    job.status = JobStatus.FAILED
                    job.return_value = RuntimeError(
                        f"job exited with status {process.returncode}; see {job.working_dir}/launcher.log"
                    )
        failed = [job for job in results.values() if job.status == JobStatus.FAILED]
        if failed:
            log.error(f"{len(failed)} of {len(results)} jobs failed:")
            for job in failed:
                log.error(f"\t{' '.join(filter_overrides(job.overrides))}: {job.return_value}")
        return [results[number] for number in sorted(results)]
