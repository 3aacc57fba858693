"""Sweep job directory names that say what differs between jobs, and stay short.

Hydra's ``override_dirname`` lists every override of a job, so a sweep with a dozen fixed
settings makes directory names past the file-system limit and TensorBoard run names nobody
can read. ``${job_dirname:${hydra.overrides.task},${hydra.sweeper.params}}`` keeps only the
keys that the command line sweeps (``key=a,b`` or a sweep function such as ``range(...)``)
or that a grid declared in config sweeps (``hydra.sweeper.params``), falling back to all
overrides when the sweep is not visible (jobs launched in other processes), and clips
long names with a hash so that they stay unique.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence

from omegaconf import OmegaConf

MAX_LENGTH = 120
SWEEP_FUNCTIONS = ("range(", "choice(", "glob(", "interval(")
NEVER_IN_NAMES = ("paths.", "hydra.", "ckpt_path")
SWEPT_KEYS_VARIABLE = "ANYORDER_SWEPT_KEYS"  # set by launchers that run each job in its own process


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys(argv: Sequence[str]) -> set[str]:
    """Keys that the command line gives several values."""
    keys = set()
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        value = arg.split("=", 1)[1]
        if ("," in value and not value.startswith(("[", "{"))) or value.startswith(SWEEP_FUNCTIONS):
            keys.add(_key(arg))
    return keys


def job_dirname(
    task_overrides: Sequence[str], sweeper_params: Mapping[str, str] | None = None, argv: Sequence[str] | None = None
) -> str:
    """Directory name for one job from its overrides (see the module docstring): the keys swept
    on the command line and those of a grid declared in config (``hydra.sweeper.params``)."""
    overrides = [o for o in task_overrides if not _key(o).startswith(NEVER_IN_NAMES)]
    swept = swept_keys(sys.argv[1:] if argv is None else argv) | {_key(k) for k in (sweeper_params or {})}
    chosen = [o for o in overrides if _key(o) in swept] or overrides
    name = ",".join(sorted(chosen, key=_key)).replace("/", "_") or "defaults"
    if len(name) > MAX_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_LENGTH - 9]}-{digest}"
    return name


def job_overrides() -> dict[str, str]:
    """This job's overrides as Hydra recorded them (command line and sweeper alike), minus
    paths and Hydra's own keys: what makes the job differ from the others of its sweep."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    pairs = (o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    return {_key(k): v for k, v in pairs if not _key(k).startswith(NEVER_IN_NAMES)}


def varying_keys(overrides_per_job: Sequence[Sequence[str]]) -> set[str]:
    """Keys whose value differs between the jobs of one launch (what a launcher tells each job)."""
    parsed = [dict(o.split("=", 1) for o in overrides if "=" in o) for overrides in overrides_per_job]
    keys = {key for job in parsed for key in job}
    return {_key(k) for k in keys if len({job.get(k) for job in parsed}) > 1 and not _key(k).startswith(NEVER_IN_NAMES)}


def sweep_hparams() -> dict[str, str]:
    """The job's values of the keys its sweep varies: the HParams columns that tell jobs apart.

    The swept keys are those a launcher passed on (``ANYORDER_SWEPT_KEYS``), else those of the
    command line and of a grid declared in config; a job outside any sweep reports all its
    overrides. Fixed settings (a smaller batch for every job, say) stay out of the table.
    """
    from hydra.core.hydra_config import HydraConfig

    overrides = job_overrides()
    if not overrides:
        return {}
    passed = os.environ.get(SWEPT_KEYS_VARIABLE)
    if passed:
        keys = set(passed.split(","))
    else:
        params = HydraConfig.get().sweeper.get("params") or {}
        keys = swept_keys(sys.argv[1:]) | {_key(k) for k in params}
    return {k: v for k, v in overrides.items() if k in keys} or overrides


def register_resolvers() -> None:
    from anyorder.progress import stdout_is_tty
    from anyorder.results import record_subdir

    if not OmegaConf.has_resolver("stdout_is_tty"):
        OmegaConf.register_new_resolver("stdout_is_tty", stdout_is_tty)
    if not OmegaConf.has_resolver("record_subdir"):
        OmegaConf.register_new_resolver("record_subdir", record_subdir)
    if not OmegaConf.has_resolver("full_fine_tuning"):  # lora.r of 0 (or no lora node): every weight trains
        OmegaConf.register_new_resolver("full_fine_tuning", lambda lora_r: not lora_r)
    if not OmegaConf.has_resolver("job_dirname"):
        OmegaConf.register_new_resolver(
            "job_dirname", lambda overrides, params=None: job_dirname(list(overrides), dict(params or {}))
        )
