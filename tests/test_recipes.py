"""The frozen recipes of ``recipe/`` are the settings docs/results.md froze, and the demo-count
sweep runs each of them at 1,000 demos on three training seeds."""

from __future__ import annotations

from importlib.resources import files

import pytest
from omegaconf import OmegaConf

from anyorder.results import RECIPE_POINTS, ROW_LABELS, strategy_label

RECIPES = files("anyorder.conf").joinpath("recipe")
TRAINED = ("model", "masking", "callbacks", "data", "trainer")  # what decides the weights a job ends with


def _plain(cfg, key: str):
    return OmegaConf.to_container(OmegaConf.select(cfg, key))  # interpolations as written


def test_the_default_recipe_changes_nothing(compose_train) -> None:
    assert _plain(compose_train("recipe=any_order_default"), "model") == _plain(compose_train(), "model")
    assert _plain(compose_train("recipe=any_order_default"), "masking") == _plain(compose_train(), "masking")


@pytest.mark.parametrize(
    ("recipe", "same_as"),
    [
        ("behaviour_cloning", ["experiment=behaviour_cloning"]),
        ("autoregressive", ["objective=autoregressive", "model.optimizer.lr=1e-3"]),
        ("autoregressive_actions", ["objective=autoregressive_actions", "model.optimizer.lr=1e-3"]),
        (
            "autoregressive_3400",
            ["objective=autoregressive", "model.optimizer.lr=2e-3", "trainer.max_steps=3400"],
        ),
        ("any_order_world_model", ["model=tiny_layout", "masking=mixture_world_even"]),
    ],
)
def test_a_recipe_is_the_command_line_it_froze(compose_train, recipe: str, same_as: list[str]) -> None:
    named, typed = compose_train(f"recipe={recipe}"), compose_train(*same_as)
    for key in TRAINED:
        assert _plain(named, key) == _plain(typed, key), f"recipe={recipe} differs from {same_as} in {key}"
    default = compose_train()
    assert any(_plain(named, key) != _plain(default, key) for key in TRAINED)  # and it is not the default


def test_every_recipe_file_is_tested() -> None:
    shipped = {entry.name.removesuffix(".yaml") for entry in RECIPES.iterdir() if entry.name.endswith(".yaml")}
    assert shipped == {
        "any_order_default",
        "behaviour_cloning",
        "autoregressive",
        "autoregressive_actions",
        "autoregressive_3400",
        "any_order_world_model",
    }


def test_the_demo_count_sweep_runs_each_recipe_on_three_seeds_at_1k(compose_train, sweep_jobs) -> None:
    jobs = sweep_jobs("demo_counts")
    assert len(jobs) == 9
    trained = set()
    for job, cfg in jobs:
        assert cfg.data.num_episodes == 1000 and cfg.eval_after_fit and cfg.ckpt_path == "auto"
        alone = compose_train(f"recipe={job['recipe']}")
        assert _plain(cfg, "model") == _plain(alone, "model"), "the sweep changed a recipe's model"
        trained.add((job["seed"], *(str(_plain(cfg, key)) for key in TRAINED)))
    assert len(trained) == 9  # no two jobs train the same


def test_a_recipe_job_is_labelled_by_its_recipe() -> None:
    assert strategy_label({"recipe": "autoregressive_actions", "experiment": "demo_counts"}) == "autoregressive_actions"
    assert strategy_label({"recipe": "behaviour_cloning", "masking": "mixture"}) == "mixture"  # typed last, ran


@pytest.mark.parametrize(("recipe", "point"), sorted(RECIPE_POINTS.items()))
def test_a_recipe_read_as_a_table_point_trains_that_point(compose_train, recipe: str, point: str) -> None:
    named, pointed = compose_train(f"recipe={recipe}"), compose_train(f"point={point}")
    for key in TRAINED:
        assert _plain(named, key) == _plain(pointed, key), f"recipe={recipe} differs from point={point} in {key}"
    label = strategy_label({"recipe": recipe, "experiment": "demo_counts"})
    assert label == point and label in ROW_LABELS  # the demo-count table reads its rows against it
