"""``anyorder-generate``: BabyAI expert demonstrations -> Parquet shards.

anyorder-generate data=babyai_gotolocal data.num_episodes=1000 data.num_workers=2
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from anyorder.checks import TRAIN_RULES, check_settings
from anyorder.data.episodes import read_meta
from anyorder.errors import report_errors
from anyorder.naming import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    with report_errors():
        check_settings(cfg, TRAIN_RULES)  # its data.* and paths.* keys
        datamodule = instantiate(cfg.data)
        directory = datamodule.generate()
        meta = read_meta(directory)
    print(f"dataset: {directory}")
    for split, info in meta["splits"].items():
        print(
            f"  {split:<5} {info['episodes']:>6} episodes ({info['successful']} successful), "
            f"{info['steps']} steps, seeds [{info['seed_range'][0]}, {info['seed_range'][1]})"
        )


if __name__ == "__main__":
    main()
