"""``anyorder-sweep``: the masking-strategy table in one command.

    anyorder-sweep                                       # every strategy x prob x seed x level
    anyorder-sweep sweep.seeds=[0] 'sweep.train=["trainer.max_steps=200"]'   # each override quoted
    anyorder-sweep hydra.run.dir=multirun/sweep/<time>   # resume: finished jobs are skipped

Each job is ``anyorder-train`` then ``anyorder-eval`` in a child process, in its own
directory ``<level>/<strategy>[_p<prob>]/seed<k>`` of the sweep directory, so a job that
crashes (or the sweep, killed) costs only that job: rerunning the same sweep directory skips
every job whose ``eval/metrics.json`` exists and resumes a half-trained one from its
``last.ckpt``. The table is rebuilt from whatever has finished.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from anyorder.errors import ConfigError, report_errors
from anyorder.naming import register_resolvers
from anyorder.results import JOB_FILE, write_tables

register_resolvers()

STRATEGY_KEYS = {"overrides", "sweep_prob"}


@dataclass(frozen=True)
class Job:
    """One cell of the table: a level, a strategy (at one prob, if it takes one) and a seed."""

    level: str
    strategy: str
    prob: float | None
    seed: int
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        variant = self.strategy if self.prob is None else f"{self.strategy}_p{self.prob:g}"
        return f"{self.level}/{variant}/seed{self.seed}"

    def train_overrides(self) -> list[str]:
        prob = [] if self.prob is None else [f"masking.prob={self.prob}"]
        return [f"data={self.level}", f"seed={self.seed}", *self.overrides, *prob]


def plan_jobs(
    strategies: Mapping[str, Mapping],
    levels: Sequence[str],
    probs: Sequence[float],
    seeds: Sequence[int],
    only: Sequence[str] | None = None,
) -> list[Job]:
    """The jobs of a sweep, level-major so that a level's table fills first."""
    if only is not None:
        unknown = sorted(set(only) - set(strategies))
        if unknown:
            raise ConfigError("sweep.only", f"unknown strategies {unknown}; choose from {sorted(strategies)}")
    for name, spec in strategies.items():
        extra = set(spec) - STRATEGY_KEYS
        if extra or "overrides" not in spec:
            raise ConfigError(f"sweep.strategies.{name}", f"needs keys {sorted(STRATEGY_KEYS)}, got {sorted(spec)}")
    for prob in probs:
        if not 0.0 < float(prob) <= 1.0:
            raise ConfigError("sweep.probs", f"every masking prob must be in (0, 1], got {prob}")
    jobs = []
    for level in levels:
        for name, spec in strategies.items():
            if only is not None and name not in only:
                continue
            for prob in probs if spec.get("sweep_prob", False) else [None]:
                for seed in seeds:
                    value = None if prob is None else float(prob)
                    jobs.append(Job(level, name, value, int(seed), tuple(spec["overrides"])))
    if not jobs:
        raise ConfigError("sweep", "no jobs: sweep.levels, sweep.seeds and sweep.strategies must not be empty")
    return jobs


def _run_logged(command: list[str], log: Path) -> int:
    with log.open("a") as stream:
        stream.write(f"$ {' '.join(command)}\n")
        stream.flush()
        return subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, check=False).returncode


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].removeprefix("error: ") if lines else "(no output)"


def run_job(job: Job, job_dir: Path, train: Sequence[str], evaluate: Sequence[str], data_dir: str) -> str | None:
    """Train and evaluate ``job`` unless done already; returns an error line, or ``None``."""
    metrics = job_dir / "eval" / "metrics.json"
    if metrics.is_file():
        return None
    job_dir.mkdir(parents=True, exist_ok=True)
    log = job_dir / "console.log"
    resume = ["ckpt_path=last"] if (job_dir / "checkpoints" / "last.ckpt").is_file() else []
    train_command = [
        sys.executable,
        "-m",
        "anyorder.train",
        f"hydra.run.dir={job_dir}",
        f"paths.data_dir={data_dir}",
        *job.train_overrides(),
        *train,
        *resume,
    ]
    started = time.monotonic()
    if _run_logged(train_command, log):
        return f"training failed: {_last_line(log)}"
    train_seconds = time.monotonic() - started
    eval_command = [
        sys.executable,
        "-m",
        "anyorder.evaluate",
        f"ckpt_path={job_dir / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={job_dir / 'eval'}",
        "eval.progress=false",
        *evaluate,
    ]
    if _run_logged(eval_command, log):
        return f"evaluation failed: {_last_line(log)}"
    record = {**asdict(job), "name": job.name, "train_seconds": round(train_seconds, 1)}
    (job_dir / JOB_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return None


def sweep(settings: DictConfig, output_dir: Path) -> list[str]:
    """Run every job of ``settings`` under ``output_dir``; returns the failures (job: reason)."""
    strategies = OmegaConf.to_container(settings.strategies, resolve=True)
    only = None if settings.only is None else list(settings.only)
    jobs = plan_jobs(strategies, list(settings.levels), list(settings.probs), list(settings.seeds), only)
    train, evaluate = list(settings.train), list(settings.eval)
    print(f"{len(jobs)} jobs in {output_dir}")
    if settings.dry_run:
        for job in jobs:
            print(f"  {job.name}: anyorder-train {' '.join(job.train_overrides() + train)}")
        return []
    failures = []
    progress = tqdm(jobs, desc="sweep", unit="job", file=sys.stdout)
    for job in progress:
        progress.set_postfix_str(job.name)
        error = run_job(job, output_dir / job.name, train, evaluate, str(settings.data_dir))
        if error is not None:
            failures.append(f"{job.name}: {error} (log: {output_dir / job.name / 'console.log'})")
    return failures


@hydra.main(version_base="1.3", config_path="conf", config_name="sweep")
def main(cfg: DictConfig) -> None:
    output_dir = Path(cfg.paths.output_dir)
    with report_errors():
        failures = sweep(cfg.sweep, output_dir)
        if not cfg.sweep.dry_run and any(output_dir.rglob(JOB_FILE)):
            csv_path, markdown_path = write_tables(output_dir)
            print(markdown_path.read_text())
            print(f"table: {csv_path} and {markdown_path}; figures: notebooks/strategy_sweep.ipynb")
    if failures:
        print(f"{len(failures)} job(s) failed:", *failures, sep="\n  ", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
