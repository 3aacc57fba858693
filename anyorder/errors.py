"""User-facing errors and the one place that turns them into a one-line CLI message.

Bad input must end a command with a single line that names the field or file, never a
traceback from deep inside torch. Code raises :class:`ConfigError` (a bad setting) or
:class:`DataError` (a bad file); the entry points wrap their work in :func:`report_errors`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf.errors import MissingMandatoryValue


class AnyorderError(Exception):
    """Base class of errors that are the user's to fix, reported without a traceback."""


class ConfigError(AnyorderError, ValueError):
    """A setting is out of range or inconsistent; ``field`` is its name in the config node."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DataError(AnyorderError):
    """A dataset file or directory is missing, empty or corrupt; ``path`` names it."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"{path}: {message}")


def require_at_least(field: str, value: float, minimum: float) -> None:
    """The most common setting check, with the one wording every such error uses."""
    if value < minimum:
        raise ConfigError(field, f"must be >= {minimum}, got {value}")


_FULL_KEY = re.compile(r"full_key: (\S+)")


def describe(error: BaseException) -> str | None:
    """One line for a user error anywhere in ``error``'s cause chain, else ``None``.

    Hydra wraps constructor errors in an ``InstantiationException`` whose message ends with
    ``full_key: <node>``; the node is prefixed to a :class:`ConfigError`'s field so that the
    line reads ``masking.prob: ...`` rather than just ``prob: ...``.
    """
    node = None
    current: BaseException | None = error
    while current is not None:
        match = _FULL_KEY.search(str(current))
        if match and node is None:
            node = match.group(1)
        if isinstance(current, ConfigError):
            field = f"{node}.{current.field}" if node and not current.field.startswith(node) else current.field
            return f"{field}: {current.message}"
        if isinstance(current, AnyorderError):
            return str(current)
        if isinstance(current, MissingMandatoryValue):
            key = getattr(current, "full_key", None) or "a setting"
            return f"{key}: missing value; give it on the command line, e.g. {key}=<value>"
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def report_errors(keep_going: Callable[[str], None] | None = None) -> Iterator[None]:
    """Exit with status 2 and one line on stderr for user errors; re-raise anything else.

    ``keep_going`` (a job of an in-process sweep): hand it the line and return instead of
    exiting, so that the sweep's other jobs still run.
    """
    try:
        yield
    except Exception as error:
        line = describe(error)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        if keep_going is not None:
            keep_going(line)
            return
        raise SystemExit(2) from None
