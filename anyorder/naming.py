"""Sweep job directory names that say what differs between jobs, and stay short.

Hydra's ``override_dirname`` lists every override of a job, so a sweep with a dozen fixed
settings makes directory names past the file-system limit and TensorBoard run names nobody
can read. ``${job_dirname:${hydra.overrides.task}}`` keeps only the keys that the command
line sweeps (``key=a,b`` or a sweep function such as ``range(...)``), falling back to all
overrides when the sweep is not visible (jobs launched in other processes), and clips
long names with a hash so that they stay unique.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

MAX_LENGTH = 120
SWEEP_FUNCTIONS = ("range(", "choice(", "glob(", "interval(")
NEVER_IN_NAMES = ("paths.", "hydra.", "ckpt_path")


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


def job_dirname(task_overrides: Sequence[str], argv: Sequence[str] | None = None) -> str:
    """Directory name for one job from its overrides (see the module docstring)."""
    overrides = [o for o in task_overrides if not _key(o).startswith(NEVER_IN_NAMES)]
    swept = swept_keys(sys.argv[1:] if argv is None else argv)
    chosen = [o for o in overrides if _key(o) in swept] or overrides
    name = ",".join(sorted(chosen, key=_key)).replace("/", "_") or "defaults"
    if len(name) > MAX_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_LENGTH - 9]}-{digest}"
    return name


def register_resolvers() -> None:
    from anyorder.progress import stdout_is_tty

    if not OmegaConf.has_resolver("stdout_is_tty"):
        OmegaConf.register_new_resolver("stdout_is_tty", stdout_is_tty)
    if not OmegaConf.has_resolver("job_dirname"):
        OmegaConf.register_new_resolver("job_dirname", lambda overrides: job_dirname(list(overrides)))
