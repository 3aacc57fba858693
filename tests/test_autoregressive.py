"""The autoregressive baseline: causal backbones, the shifted objective, its answers to the queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from anyorder.data.layout import TokenKind
from anyorder.eval.autoregressive import AutoregressiveEvaluator, greedy_decode, greedy_decode_cached
from anyorder.eval.baselines import TrainingPriors
from anyorder.eval.checkpoint import load_trained
from anyorder.eval.tasks import TaskEvaluator, revealed_in_order
from anyorder.evaluate import evaluate, evaluator_for, format_table
from anyorder.masking.queries import OBSERVATION_KINDS, of_kinds, world_model_query
from anyorder.models.autoregressive import AutoregressiveModule
from anyorder.models.backbones import PreNormEncoder
from anyorder.models.causal import previous_real, shift_to_targets
from anyorder.models.objective import token_nll
from anyorder.train import build_module, train

TINY = [
    "data.num_episodes=60", "data.shard_size=20", "data.num_workers=1", "data.window=2", "data.batch_size=8",
    "model.backbone.hidden_size=32", "model.backbone.num_layers=1", "model.backbone.num_heads=2",
    "model.backbone.intermediate_size=64",
]  # fmt: skip


def test_a_causal_encoder_never_looks_ahead_and_skips_padding_anywhere() -> None:
    torch.manual_seed(0)
    model = PreNormEncoder(vocab_size=20, max_length=12, hidden_size=16, num_layers=2, num_heads=2, causal=True).eval()
    ids = torch.randint(1, 20, (2, 12))
    keep = torch.ones(2, 12, dtype=torch.bool)
    keep[0, :3] = False  # left padding
    keep[1, 5:7] = False  # padding inside the row
    changed = ids.clone()
    changed[:, 9:] = torch.randint(1, 20, (2, 3))
    with torch.no_grad():
        before, after = model(ids, keep), model(changed, keep)
        torch.testing.assert_close(before[:, :9], after[:, :9])  # a later token changes nothing before it
        assert torch.isfinite(before).all()
        other_padding = ids.clone()
        other_padding[1, 5:7] = 3  # what a padded slot holds is never read by a real position
        torch.testing.assert_close(model(other_padding, keep)[1, 7:], before[1, 7:])


def test_targets_move_to_the_next_real_position() -> None:
    keep = torch.tensor([[False, True, True, False, True]])
    assert previous_real(keep).tolist() == [[-1, -1, 1, 2, 2]]
    logits = torch.arange(5.0).view(1, 5, 1)
    moved, predicted = shift_to_targets(logits, keep)
    assert predicted.tolist() == [[False, False, True, False, True]]  # the first real token has no predictor
    assert moved[0, 2, 0] == 1 and moved[0, 4, 0] == 2  # position 4 is predicted from 2, across the padding


def test_greedy_decoding_by_fixed_point_equals_one_token_at_a_time() -> None:
    torch.manual_seed(1)
    table = torch.randn(6, 6, 6)  # next-token logits from the two previous tokens

    def logits_fn(ids: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*ids.shape, 6)
        out[:, 2:] = table[ids[:, :-2], ids[:, 1:-1]]
        return out

    ids = torch.randint(0, 6, (3, 10))
    query = torch.zeros(3, 10, dtype=torch.bool)
    query[:, 4:] = True
    kind = torch.zeros(3, 10, dtype=torch.long)
    allowed = torch.ones(1, 6, dtype=torch.bool)
    expected = ids.clone()
    for position in range(4, 10):  # the reference: decode one position, then the next
        expected[:, position] = logits_fn(expected)[:, position].argmax(dim=-1)
    assert torch.equal(greedy_decode(logits_fn, ids, query, kind, allowed), expected)


def test_cached_decoding_is_the_full_forward_one_position_at_a_time(compose_train) -> None:
    cfg = compose_train(*TINY, "objective=autoregressive", "model=tiny_layout", "model.backbone.num_layers=2")
    data = instantiate(cfg.data)
    data.setup("fit")
    module = build_module(cfg, data).eval()
    backbone = module.backbone
    batch = next(iter(data.val_dataloader()))
    ids, keep = batch["input_ids"], batch["attention_mask"].bool()
    assert (~keep).any()  # left padding and padding inside the mission: what the cache must skip
    split = 2  # every later position one step at a time: padded ones too
    with torch.no_grad():
        full = backbone(ids, keep)
        prefix, cache = backbone.start_decoding(ids[:, :split], keep[:, :split])
        steps = [backbone.decode_step(ids[:, p], keep[:, p], cache) for p in range(split, ids.shape[1])]
    torch.testing.assert_close(prefix, full[:, :split], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, split:], atol=1e-5, rtol=1e-4)

    evaluator = AutoregressiveEvaluator(module, data.tokenizer.vocabulary)
    query = world_model_query(batch)
    cached = greedy_decode_cached(backbone, batch, query, evaluator.allowed)
    visible = torch.zeros_like(query)
    jacobi = greedy_decode(
        lambda x: module({**batch, "input_ids": x}, visible), ids, query, batch["kind"], evaluator.allowed
    )
    assert torch.equal(cached, jacobi) and torch.equal(cached[~query], ids[~query])
    assert torch.equal(evaluator.decode(batch, query), cached)  # the evaluator takes the cache where there is one
    scattered = torch.rand(query.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    scattered[:, :2] = False  # each row its own query, starting where it starts, through padding too
    assert (scattered & ~keep).any()
    jacobi = greedy_decode(
        lambda x: module({**batch, "input_ids": x}, visible), ids, scattered, batch["kind"], evaluator.allowed
    )
    assert torch.equal(greedy_decode_cached(backbone, batch, scattered, evaluator.allowed), jacobi)


def test_the_objective_scores_the_chosen_kinds_and_never_padding(compose_train) -> None:
    for objective, kinds in (("autoregressive", None), ("autoregressive_actions", {TokenKind.ACTION})):
        cfg = compose_train(*TINY, f"objective={objective}")
        data = instantiate(cfg.data)
        data.setup("fit")
        module = build_module(cfg, data)
        assert isinstance(module, AutoregressiveModule)
        batch = next(iter(data.train_dataloader()))
        out = module._objective(batch)
        scored_kinds = set(batch["kind"][out.mask].tolist())
        assert TokenKind.PAD not in scored_kinds
        assert scored_kinds == (kinds or scored_kinds) and len(scored_kinds) >= (1 if kinds else 6)
        assert out.mask.sum() == len(out.token_nll) and torch.isclose(out.loss, out.token_nll.mean())


def test_revealing_in_order_gives_a_left_to_right_model_its_teacher_forced_likelihood(compose_train) -> None:
    """For a causal model hiding the tokens from i on changes nothing before i: revealing in order
    must then give exactly the chain rule of teacher forcing, token by token."""
    cfg = compose_train(*TINY, "objective=autoregressive")
    data = instantiate(cfg.data)
    data.setup("fit")
    module = build_module(cfg, data).eval()
    batch = next(iter(data.val_dataloader()))
    query = world_model_query(batch)
    scored = query & of_kinds(batch["kind"], OBSERVATION_KINDS)
    with torch.no_grad():
        revealed = revealed_in_order(module, batch, query, scored)
        teacher_forced = token_nll(module.query_logits(batch, query), batch["input_ids"], scored)
        all_hidden = token_nll(module(batch, query), batch["input_ids"], scored)
    torch.testing.assert_close(revealed, teacher_forced)
    assert not torch.allclose(all_hidden, teacher_forced)  # hiding the query at once is another quantity


def test_the_any_order_models_joint_nll_is_the_one_shot_one_for_a_single_hidden_token(compose_train) -> None:
    cfg = compose_train(*TINY)
    data = instantiate(cfg.data)
    data.setup("fit")
    module = build_module(cfg, data).eval()
    batch = next(iter(data.val_dataloader()))
    query = world_model_query(batch)
    first = query & (query.long().cumsum(dim=1) == 1)  # each window's first hidden token only
    with torch.no_grad():
        joint = revealed_in_order(module, batch, first, first)
        torch.testing.assert_close(joint, token_nll(module(batch, first), batch["input_ids"], first))
        scored = query & of_kinds(batch["kind"], OBSERVATION_KINDS)
        chain = revealed_in_order(module, batch, query, scored)
    assert chain.shape == (int(scored.sum()),) and torch.isfinite(chain).all()


def test_an_autoregressive_run_trains_and_is_evaluated_left_to_right(compose_train, data_root: Path) -> None:
    cfg = compose_train(*TINY, "objective=autoregressive", "trainer.max_steps=4", "trainer.val_check_interval=4",
                        "callbacks.closed_loop_eval=null")  # fmt: skip
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    run = load_trained(last)
    assert isinstance(run.module, AutoregressiveModule) and run.module.backbone.causal
    assert evaluator_for(run.module) is AutoregressiveEvaluator
    assert evaluator_for(build_module(compose_train(*TINY), run.datamodule)) is TaskEvaluator

    settings = compose_train(
        f"ckpt_path={last}", "eval.num_episodes=4", "eval.num_envs=4", "eval.query_batches=2",
        "eval.occlusion_fractions=[0.0]", "eval.progress=false", "eval.imagination_rollouts=4",
        config_name="eval",
    )  # fmt: skip
    metrics = evaluate(settings, Path(cfg.paths.output_dir) / "eval")
    tasks = metrics["tasks"]
    assert "mission" not in tasks and "inpainting" not in tasks  # not answerable left to right
    world = tasks["world_model"]
    assert "nll_per_token" not in world and world["joint_nll_per_token_all_windows"] > 0
    assert world["joint_nll_per_token"] > 0  # on the first eval.joint_nll_batches batches, as the any-order model
    assert 0 <= tasks["inverse"]["accuracy"] <= 1 and 0 <= tasks["world_model"]["exact_cell_accuracy"] <= 1
    assert len(metrics["imagination"]["model"]) == 5
    printout = format_table(metrics)  # the world model split by what the previous view determines, by the chain rule
    assert re.search(r"chain rule per cell: new in view +\d", printout) and "per cell token" not in printout
    # a factorised baseline's chain rule is its one-shot NLL: both named, paired with the model's own
    chain, one_shot = "world_model.joint_nll_per_token_all_windows_new_in_view", "world_model.nll_per_token_new_in_view"
    assert metrics["baselines"][chain] == metrics["baselines"][one_shot]
    assert "ego_motion_mixture" in metrics["paired_differences"][chain]
    assert re.search(r"chain rule per cell: new in view .* vs ego_motion_mixture", printout)
    json.dumps(metrics)  # what metrics.json holds


@pytest.mark.slow
def test_a_trained_autoregressive_model_beats_chance(compose_train, training_spec) -> None:
    cfg = compose_train(
        "data.num_episodes=400", "data.batch_size=16", "data.window=2", "model.backbone.hidden_size=64",
        "model.backbone.num_layers=2", "model.backbone.num_heads=2", "model.backbone.intermediate_size=128",
        f"paths.data_dir={training_spec.root}", "objective=autoregressive", "trainer.max_steps=300",
        "trainer.val_check_interval=300", "model.optimizer.lr=3e-3", "model.lr_scheduler.num_warmup_steps=10",
        "callbacks.closed_loop_eval=null",
    )  # fmt: skip
    train(cfg)
    run = load_trained(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    run.datamodule.setup("fit")
    vocab = run.datamodule.tokenizer.vocabulary
    priors = TrainingPriors.from_table(run.datamodule.datasets["train"].table, vocab)
    evaluator = AutoregressiveEvaluator(run.module, vocab, occlusion_fractions=(0.0,), priors=priors)
    results = evaluator.run(run.datamodule.val_dataloader(), max_batches=4)
    assert results["policy"]["accuracy"] > results["baselines"]["policy.accuracy"]["majority_action"] + 0.05
    unigram = results["baselines"]["world_model.nll_per_token"]["unigram"]
    assert results["world_model"]["joint_nll_per_token_all_windows"] < unigram


def test_the_dev_grid_sweeps_both_loss_options_at_every_rate_and_budget(compose_train, sweep_jobs) -> None:
    """experiment=autoregressive_grid: 2 options x 3 rates x 2 budgets, each a left-to-right job
    that evaluates itself; the objective changes the model, never the data or the batches."""
    from omegaconf import OmegaConf

    points = sweep_jobs("autoregressive_grid")
    assert len(points) == 12
    recipes = set()
    for point, cfg in points:
        assert cfg.model._target_.endswith("AutoregressiveModule") and cfg.model.backbone.causal
        assert cfg.eval_after_fit and cfg.model.loss_kinds == (
            ["action"] if point["objective"] == "autoregressive_actions" else None
        )
        recipes.add((str(cfg.model.loss_kinds), cfg.model.optimizer.lr, cfg.trainer.max_steps))
        assert OmegaConf.to_container(cfg.data) == OmegaConf.to_container(compose_train().data)
    assert len(recipes) == 12  # no two points train the same
