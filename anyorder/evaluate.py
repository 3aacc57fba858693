"""``anyorder-eval``: closed-loop success, world-model NLL and robustness of a checkpoint.

Not part of this release yet: the evaluation issue brings it. The command exists so that
scripts can already call it and get a clear answer.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from anyorder.naming import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    print("anyorder-eval: closed-loop evaluation is coming in a later release.", file=sys.stderr)
    raise SystemExit(3)


if __name__ == "__main__":
    main()
