"""A job of an in-process sweep that fails costs only itself; the failures are listed at the end.

Hydra's basic launcher runs every job in the sweeping process, and a job that exits (as a
user error does, with one line and status 2) would end the whole sweep. In a sweep, a job
instead writes its error line to ``<job>/failure.txt`` and returns; :class:`ListFailures`
(a Hydra callback, ``hydra.callbacks.failures``) lists those files when the sweep ends and
exits non-zero. ``launcher=local_gpus`` runs each job as its own process and lists its
failures itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

FAILURE_FILE = "failure.txt"


def in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def failure_recorder(output_dir: str | Path) -> Callable[[str], None] | None:
    """Inside a sweep: a function that records a job's error line in its directory (a stale
    record of an earlier attempt is removed now). Outside one: ``None`` (exit as usual)."""
    if not in_sweep():
        return None
    record = Path(output_dir) / FAILURE_FILE
    record.unlink(missing_ok=True)

    def write(line: str) -> None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(line + "\n")

    return write


class ListFailures(Callback):
    """At the end of a sweep: every failed job with its error line, then exit status 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failures = sorted(Path(config.hydra.sweep.dir).glob(f"*/{FAILURE_FILE}"))
        if failures:
            lines = [f"{path.parent.name}: {path.read_text().strip()}" for path in failures]
            print(f"{len(failures)} job(s) failed:", *lines, sep="\n  ", file=sys.stderr)
            raise SystemExit(1)
