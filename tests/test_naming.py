"""Sweep job names: only the swept keys, short, unique."""

from __future__ import annotations

from anyorder.naming import MAX_LENGTH, job_dirname, swept_keys


def test_only_swept_keys_name_the_job() -> None:
    argv = ["-m", "masking=cell,attribute", "masking.prob=0.15,0.5", "trainer.max_steps=20", "data.window=4"]
    overrides = ["masking=cell", "masking.prob=0.5", "trainer.max_steps=20", "data.window=4", "paths.data_dir=/x"]
    assert swept_keys(argv) == {"masking", "masking.prob"}
    assert job_dirname(overrides, argv=argv) == "masking=cell,masking.prob=0.5"
    # a grid declared in config (hydra.sweeper.params) names its jobs too
    assert job_dirname(overrides, {"masking.prob": "0.15,0.5"}, argv=[]) == "masking.prob=0.5"


def test_list_values_and_sweep_functions() -> None:
    argv = ["masking.strategy.weights=[0.5,0.5]", "seed=range(3)"]
    assert swept_keys(argv) == {"seed"}


def test_without_a_visible_sweep_all_overrides_are_used_and_clipped() -> None:
    overrides = [f"model.backbone.key_{i}={'x' * 20}" for i in range(10)]
    name = job_dirname(overrides, argv=[])
    assert len(name) == MAX_LENGTH and name.startswith("model.backbone.key_0=")
    other = job_dirname([*overrides[:-1], "model.backbone.key_9=y"], argv=[])
    assert other != name  # the hash keeps clipped names apart
    assert job_dirname([], argv=[]) == "defaults"


def test_a_launcher_names_the_keys_that_differ_between_its_jobs() -> None:
    from anyorder.naming import varying_keys

    jobs = [
        ["point=cell_p0.3", "seed=0", "trainer.max_steps=5", "hydra.run.dir=a"],
        ["point=cell_p0.3", "seed=1", "trainer.max_steps=5", "hydra.run.dir=b"],
        ["point=step_p0.3", "seed=0", "trainer.max_steps=5", "hydra.run.dir=c"],
    ]
    assert varying_keys(jobs) == {"point", "seed"}
    assert varying_keys(jobs[:1]) == set()
