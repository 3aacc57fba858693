"""The native LLaDA2-MoE: reference logits, padding, grouped experts, LoRA, export, sharding."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from safetensors.torch import load_file

from anyorder.data.vocabulary import text_vocabulary
from anyorder.errors import ConfigError, DataError
from anyorder.eval.checkpoint import load_trained
from anyorder.export import export
from anyorder.models.llada2 import Experts, LLaDA2Config, LLaDA2MoE, Router, from_pretrained
from anyorder.models.llada2_checkpoint import checkpoint_state_dict, save_pretrained
from anyorder.models.lora import LoRALinear, merge_lora
from anyorder.train import build_module, train

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "llada2_tiny"
needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "reference_outputs.safetensors").is_file(),
    reason=f"the LLaDA2 reference fixture is not at {FIXTURE} (it comes with ../shared beside the checkout)",
)
TINY_DATA = ["data.num_episodes=60", "data.shard_size=20", "data.window=1", "data.batch_size=4"]
LLADA2 = ["model=llada2_mini", f"model.path={FIXTURE}", "model.backbone.gradient_checkpointing=false"]


def random_config(seed: int, **changes: object) -> LLaDA2Config:
    """A small random LLaDA2 shape: GQA, partial rotary, a dense first layer, grouped routing."""
    g = torch.Generator().manual_seed(seed)
    heads = [2, 4][int(torch.randint(2, (1,), generator=g))]
    values = dict(
        vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=heads,
        num_key_value_heads=heads // 2, head_dim=8, moe_intermediate_size=16, num_experts=8,
        num_experts_per_tok=int(torch.randint(1, 4, (1,), generator=g)), num_shared_experts=1,
        first_k_dense_replace=1, n_group=4, topk_group=2, routed_scaling_factor=2.5, partial_rotary_factor=0.5,
        pad_token_id=0,
    )  # fmt: skip
    return LLaDA2Config(**{**values, **changes})


def random_model(config: LLaDA2Config, seed: int = 0) -> LLaDA2MoE:
    torch.manual_seed(seed)
    model = LLaDA2MoE(config).eval()
    for layer in model.model.layers:
        if hasattr(layer.mlp, "gate"):  # a nonzero expert bias, so that choice and weights differ
            layer.mlp.gate.expert_bias.normal_(std=0.05)
    return model


# -- the reference ------------------------------------------------------------------------
@needs_fixture
def test_the_llada2_mini_path_matches_the_reference_logits(compose_train) -> None:
    cfg = compose_train(*TINY_DATA, *LLADA2)
    backbone = build_module(cfg, instantiate(cfg.data)).backbone.eval()
    assert isinstance(backbone, LLaDA2MoE)
    reference = load_file(FIXTURE / "reference_outputs.safetensors")
    with torch.no_grad():
        logits = backbone(reference["input_ids"])
        padded = backbone(reference["padded_input_ids"], reference["keep"])
    torch.testing.assert_close(logits, reference["logits"], rtol=0, atol=1e-4)
    keep = reference["keep"]
    assert (~keep).any(), "the reference has padded positions"
    torch.testing.assert_close(padded[keep], reference["padded_logits"][keep], rtol=0, atol=1e-4)


@needs_fixture
def test_the_fixture_tokenizer_gives_the_mask_id_by_name() -> None:
    reference = json.loads((FIXTURE / "reference.json").read_text())
    vocabulary = text_vocabulary(FIXTURE)
    assert vocabulary.mask_id == reference["mask_token_id"]
    assert vocabulary.pad_id == reference["pad_token_id"]


def test_a_tokenizer_with_no_mask_token_at_all_is_refused(tmp_path: Path) -> None:
    from hf_checkpoints import save_bert

    save_bert(tmp_path, drop=())
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "<|mask|>" in json.dumps(tokenizer_config)
    text = (tmp_path / "tokenizer.json").read_text().replace("<|mask|>", "<|nomask|>")
    (tmp_path / "tokenizer.json").write_text(text)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (tmp_path / name).is_file():
            data = json.loads((tmp_path / name).read_text().replace("<|mask|>", "<|nomask|>"))
            data.pop("mask_token", None)
            (tmp_path / name).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="mask"):
        text_vocabulary(tmp_path)


# -- padding ------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_padding_anywhere_leaves_the_real_tokens_logits_as_the_row_alone(seed: int) -> None:
    config = random_config(seed)
    model = random_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(1, config.vocab_size, (int(n),), generator=g) for n in (9, 14, 5)]
    length = 24
    batch = torch.zeros(len(rows), length, dtype=torch.long)
    keep = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):  # pads on the left and scattered inside the row, as a padded mission field
        slots = torch.sort(torch.randperm(length - 1, generator=g)[: len(row)] + 1).values
        batch[i, slots], keep[i, slots] = row, True
    with torch.no_grad():
        padded = model(batch, keep)
        for i, row in enumerate(rows):
            alone = model(row[None])[0]
            torch.testing.assert_close(padded[i][keep[i]], alone, rtol=0, atol=1e-5)


def test_without_a_mask_attention_is_bidirectional() -> None:
    model = random_model(random_config(0))
    ids = torch.randint(1, 50, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] % 49) + 1
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0, 0], model(changed)[0, 0])  # the first token sees the last


# -- experts and router -------------------------------------------------------------------
@pytest.mark.parametrize("hidden", [32, 30])  # the fused path and the batched fallback
def test_padded_tokens_go_to_no_expert_and_the_real_ones_are_unchanged(hidden: int) -> None:
    torch.manual_seed(0)
    experts = Experts(num_experts=5, hidden_size=hidden, width=16)
    x, weights = torch.randn(12, hidden), torch.rand(12, 2)
    chosen = torch.stack([torch.randperm(5)[:2] for _ in range(12)])
    real = torch.rand(12) > 0.4
    x.requires_grad_(True)
    routed = experts(x, chosen, weights, real=real)
    reference = experts.forward_loop(x, chosen, weights)
    torch.testing.assert_close(routed[real], reference[real], rtol=1e-5, atol=1e-5)
    assert torch.equal(routed[~real], torch.zeros_like(routed[~real]))
    # the gradients too: finite everywhere (an uncomputed row must not leak its undefined values back)
    probe = torch.randn_like(routed) * real[:, None]
    grads = torch.autograd.grad((routed * probe).sum(), [x, experts.up_proj])
    expected = torch.autograd.grad((reference * probe).sum(), [x, experts.up_proj])
    assert all(torch.isfinite(g).all() for g in grads)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    nothing = experts(x, chosen, weights, real=torch.zeros(12, dtype=torch.bool))
    assert torch.equal(nothing, torch.zeros_like(nothing))


def test_under_autocast_the_experts_compute_in_its_dtype_and_combine_in_float32(monkeypatch) -> None:
    """grouped_mm is no autocast op: the experts cast to autocast's dtype themselves (no float32
    [T*k, H] copies, the bf16 fast path), and the k outputs are summed in the weights' float32."""
    import anyorder.models.llada2 as llada2

    seen = []
    real = llada2.grouped_matmul
    monkeypatch.setattr(llada2, "grouped_matmul", lambda x, w, ends: seen.append(x.dtype) or real(x, w, ends))
    torch.manual_seed(0)
    experts = Experts(num_experts=4, hidden_size=32, width=16)
    x, weights = torch.randn(10, 32), torch.rand(10, 2)
    chosen = torch.stack([torch.randperm(4)[:2] for _ in range(10)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = experts(x, chosen, weights)
    assert set(seen) == {torch.bfloat16} and out.dtype == torch.float32
    torch.testing.assert_close(out, experts(x, chosen, weights), rtol=0.05, atol=0.05)


def test_a_slow_expert_path_is_warned_about_once() -> None:
    import anyorder.models.llada2 as llada2

    llada2._warned.clear()
    experts = Experts(num_experts=3, hidden_size=30, width=8)  # 30 float32 values: rows not 16-byte aligned
    chosen = torch.zeros(5, 1, dtype=torch.long)
    with pytest.warns(UserWarning, match="slow path"):
        experts(torch.randn(5, 30), chosen, torch.ones(5, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experts(torch.randn(5, 30), chosen, torch.ones(5, 1))  # once per reason, not per layer and step


@pytest.mark.parametrize("hidden", [32, 30])  # 30: rows not 16-byte aligned, the batched fallback
def test_grouped_experts_equal_a_per_expert_loop_forward_and_backward(hidden: int) -> None:
    torch.manual_seed(0)
    experts = Experts(num_experts=6, hidden_size=hidden, width=16)
    x = torch.randn(40, hidden, requires_grad=True)
    chosen = torch.stack([torch.randperm(6)[:2] for _ in range(40)])
    chosen[:, 0] = torch.where(chosen[:, 0] == 5, 0, chosen[:, 0])  # expert 5 may get few or no tokens
    weights = torch.rand(40, 2)
    grouped = experts(x, chosen, weights)
    reference = experts.forward_loop(x, chosen, weights)
    torch.testing.assert_close(grouped, reference, rtol=1e-5, atol=1e-5)
    probe = torch.randn_like(grouped)
    grads = torch.autograd.grad((grouped * probe).sum(), [x, experts.gate_proj, experts.down_proj])
    expected = torch.autograd.grad((reference * probe).sum(), [x, experts.gate_proj, experts.down_proj])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_router_chooses_on_biased_scores_within_the_best_groups_and_weighs_unbiased() -> None:
    config = random_config(0, num_experts=8, n_group=4, topk_group=1, num_experts_per_tok=2)
    router = Router(config)
    with torch.no_grad():
        router.weight.zero_()
        router.expert_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.2]))
    chosen, weights = router(torch.randn(3, config.hidden_size))
    assert chosen.sort(dim=1).values.tolist() == [[6, 7]] * 3  # the only group kept is the biased one
    # every sigmoid score is 0.5 (zero router weights): the bias chose, it does not weigh
    torch.testing.assert_close(weights, torch.full((3, 2), 0.5 * config.routed_scaling_factor))


def test_under_bf16_autocast_the_router_chooses_and_weighs_as_in_float32() -> None:
    config = random_config(1, num_experts=16, n_group=4, topk_group=2, num_experts_per_tok=4)
    router = Router(config)
    with torch.no_grad():
        router.weight.normal_(std=1.0)  # scores spread out: close calls are where bf16 would differ
    x = torch.randn(512, config.hidden_size)
    chosen, weights = router(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chosen_bf16, weights_bf16 = router(x)
    assert torch.equal(chosen_bf16, chosen) and weights_bf16.dtype == torch.float32
    torch.testing.assert_close(weights_bf16, weights)


def test_every_module_with_its_own_tensors_initialises_them_in_place_for_a_meta_device_start() -> None:
    """FSDP materialises a model built on the meta device (every rank but 0) by calling each
    module's ``reset_parameters``: a module holding tensors without one cannot start there."""
    config = random_config(2)
    with torch.device("meta"):
        model = LLaDA2MoE(config)
    for name, module in model.named_modules():
        if list(module.parameters(recurse=False)) or list(module.buffers(recurse=False)):
            assert hasattr(module, "reset_parameters"), name
    model.to_empty(device="cpu")
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model(torch.randint(0, config.vocab_size, (1, 8))).shape == (1, 8, config.vocab_size)


# -- checkpoints in and out ---------------------------------------------------------------
def test_a_sharded_save_loads_back_with_the_same_logits(tmp_path: Path) -> None:
    model = random_model(random_config(1))
    save_pretrained(model, tmp_path, dtype=torch.float32, max_shard_bytes=40_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in index["weight_map"]  # the upstream key names
    loaded = from_pretrained(tmp_path)
    ids = torch.randint(1, 50, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_missing_and_corrupt_weights_are_named(tmp_path: Path) -> None:
    model = random_model(random_config(1))
    save_pretrained(model, tmp_path, dtype=torch.float32, max_shard_bytes=40_000)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError) as error:
        from_pretrained(tmp_path)
    assert error.value.path == shard
    shard.unlink()
    with pytest.raises(DataError, match="missing shard") as error:
        from_pretrained(tmp_path)
    assert error.value.path == shard


@pytest.mark.parametrize(
    "change",
    [
        {"rope_scaling": {"type": "yarn"}},
        {"norm_topk_prob": False},
        {"router_dtype": "bf16"},
        {"attention_dropout": 0.1},
        {"rotary_dim": 8},  # head_dim 8 x partial_rotary_factor 0.5 is 4
    ],
)
def test_a_config_this_implementation_would_compute_differently_is_refused(tmp_path: Path, change: dict) -> None:
    model = random_model(random_config(1))
    save_pretrained(model, tmp_path, dtype=torch.float32)
    config = json.loads((tmp_path / "config.json").read_text())
    from_pretrained(tmp_path)  # as written, it reads back
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConfigError, match=next(iter(change))):
        from_pretrained(tmp_path)


def test_absent_config_fields_take_the_upstream_defaults() -> None:
    required = dict(
        model_type="llada2_moe", vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=4, moe_intermediate_size=16, attention_dropout=0.0, embedding_dropout=0.0,
        output_dropout=0.0, pad_token_id=0,
    )  # fmt: skip
    config = LLaDA2Config.from_dict(required)
    assert (config.num_key_value_heads, config.head_dim, config.rotary_dim) == (4, 8, 4)  # 0 / absent: MHA
    assert (config.num_experts, config.n_group, config.topk_group, config.routed_scaling_factor) == (16, 8, 4, 2.5)
    assert (config.rms_norm_eps, config.use_bias, config.max_position_embeddings) == (1e-5, True, 16384)
    with pytest.raises(ConfigError, match="attention_dropout"):  # upstream's default, 0.1, is not implemented
        LLaDA2Config.from_dict({k: v for k, v in required.items() if k != "attention_dropout"})
    with pytest.raises(ConfigError, match="pad_token_id"):  # upstream's default, 126081, is no id of 50
        LLaDA2Config.from_dict({k: v for k, v in required.items() if k != "pad_token_id"})


# -- training, LoRA, export ---------------------------------------------------------------
@needs_fixture
def test_lora_trains_only_attention_adapters_and_checkpoints_only_them(compose_train) -> None:
    cfg = compose_train(
        *TINY_DATA, *LLADA2, "model.lora.r=4", "trainer.max_steps=5", "trainer.val_check_interval=5",
        "trainer.limit_val_batches=1", "callbacks.closed_loop_eval=null",
    )  # fmt: skip
    module = build_module(cfg, instantiate(cfg.data))
    adapters = [m for m in module.modules() if isinstance(m, LoRALinear)]
    assert len(adapters) == 2 * 3  # query_key_value and dense in each of the 3 layers, nothing else
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(("lora_A", "lora_B")) for name in trainable)
    assert all(p.dtype == torch.float32 for n, p in module.named_parameters() if n in trainable)
    assert module.backbone.lm_head.weight.dtype == torch.bfloat16  # the frozen base stays bf16
    # qkv: 64 -> (4 + 2 * 2) * 16 = 128, dense: 64 -> 64, r = 4: 4 * (64 + 128) + 4 * (64 + 64) per layer
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == 3 * (4 * 192 + 4 * 128)

    train(cfg)
    checkpoint = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(checkpoint["state_dict"]) == {f"backbone.{name.removeprefix('backbone.')}" for name in trainable}
    [state] = checkpoint["optimizer_states"]
    assert len(state["state"]) == len(trainable)

    resumed = compose_train(*TINY_DATA, *LLADA2, "model.lora.r=4", "trainer.max_steps=7", "ckpt_path=last",
                            "trainer.limit_val_batches=1", "callbacks.closed_loop_eval=null")  # fmt: skip
    with open_dict(resumed):
        resumed.paths.output_dir = cfg.paths.output_dir
    train(resumed)  # the adapters-only checkpoint resumes onto the base reloaded from model.path
    checkpoint = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 7


@needs_fixture
def test_full_fine_tuning_trains_evaluates_and_exports_in_the_original_layout(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(
        *TINY_DATA, *LLADA2, "trainer.max_steps=5", "trainer.val_check_interval=5", "trainer.limit_val_batches=1",
        "callbacks.closed_loop_eval.num_episodes=2", "callbacks.closed_loop_eval.num_envs=2",
    )  # fmt: skip
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    run = Path(cfg.paths.output_dir)
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    trained = load_trained(run / "checkpoints" / "last.ckpt").module.backbone.eval()
    assert next(trained.parameters()).dtype == torch.float32  # fp32 master weights for full fine-tuning
    ids = torch.randint(7, 120, (2, 16))

    out = export(run / "checkpoints" / "last.ckpt", tmp_path / "exported", dtype="float32")
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(out)(ids), trained(ids), rtol=0, atol=1e-6)
    assert (out / "tokenizer.json").is_file() and "model.layers.2.mlp.experts.0.up_proj.weight" in load_file(
        out / "model.safetensors"
    )
    shipped = export(run / "checkpoints" / "last.ckpt", tmp_path / "bf16")  # bf16, as the released weights
    assert json.loads((shipped / "config.json").read_text())["dtype"] == "bfloat16"
    written, expected = load_file(shipped / "model.safetensors"), checkpoint_state_dict(trained, torch.bfloat16)
    assert written.keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(written[key], tensor, rtol=0, atol=0, msg=key)
    assert next(from_pretrained(shipped, dtype="bfloat16").parameters()).dtype == torch.bfloat16

    # FSDP's sharded last.ckpt/ (a torch.distributed.checkpoint directory) exports the same
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    sharded = tmp_path / "fsdp" / "checkpoints" / "last.ckpt"
    dcp.save({"model": checkpoint["state_dict"]}, checkpoint_id=sharded)
    shutil.copytree(run / ".hydra", tmp_path / "fsdp" / ".hydra")
    again = export(sharded, tmp_path / "from_sharded", dtype="float32")
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(again)(ids), trained(ids), rtol=0, atol=1e-6)


def test_merging_adapters_keeps_the_function() -> None:
    from anyorder.models.lora import add_lora

    model = random_model(random_config(2))
    assert add_lora(model, r=2) == 2 * 3
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_()
    ids = torch.randint(1, 50, (2, 10))
    with torch.no_grad():
        adapted = model(ids)
        merge_lora(model)
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
        torch.testing.assert_close(model(ids), adapted, rtol=1e-5, atol=1e-5)


# -- sharding -----------------------------------------------------------------------------
@needs_fixture
@pytest.mark.parametrize("lora_r", [0, 4])
def test_under_fsdp_only_rank_zero_reads_the_checkpoint(compose_train, monkeypatch, lora_r: int) -> None:
    """strategy=fsdp broadcasts rank 0's weights (broadcast_from_rank0): the other ranks hold no
    weights on the host, only a meta skeleton whose tensors match rank 0's by name, shape and
    dtype; filling it with rank 0's tensors (what the broadcast does) gives rank 0's model."""
    from lightning.pytorch.utilities import rank_zero_only

    cfg = compose_train(*TINY_DATA, *LLADA2, "strategy=fsdp", "trainer=gpu", f"model.lora.r={lora_r}")
    assert cfg.trainer.strategy.broadcast_from_rank0 and cfg.model.backbone.load_on_rank_zero_only
    assert cfg.trainer.strategy.save_distributed_checkpoint == (lora_r == 0)  # adapters: one gathered file
    data = instantiate(cfg.data)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    torch.manual_seed(0)
    skeleton = build_module(cfg, data).backbone
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    torch.manual_seed(0)
    loaded = build_module(cfg, data).backbone
    tensors = {**dict(skeleton.named_parameters()), **dict(skeleton.named_buffers())}
    assert tensors and all(t.is_meta for t in tensors.values())
    reference = {**dict(loaded.named_parameters()), **dict(loaded.named_buffers())}
    assert not any(t.is_meta for t in reference.values())
    assert {k: (t.shape, t.dtype, t.requires_grad) for k, t in tensors.items()} == {
        k: (t.shape, t.dtype, t.requires_grad) for k, t in reference.items()
    }
    skeleton.to_empty(device="cpu")
    with torch.no_grad():
        for name, tensor in {**dict(skeleton.named_parameters()), **dict(skeleton.named_buffers())}.items():
            tensor.copy_(reference[name])
    ids = load_file(FIXTURE / "reference_outputs.safetensors")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(skeleton.eval()(ids), loaded.eval()(ids), rtol=0, atol=0)


def test_fully_sharded_units_are_the_blocks_and_the_router_gathers_in_float32(tmp_path: Path) -> None:
    """One gloo process: the mesh of a one-rank run, the same calls as on eight GPUs."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule

    from anyorder.models.sharding import shard_backbone

    model = random_model(random_config(3))
    ids = torch.randint(1, 50, (2, 9))
    with torch.no_grad():
        expected = model(ids)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
        shard_backbone(model, mesh, "bf16-mixed", torch.device("cpu"), rank=0)
        units = {name for name, module in model.named_modules() if isinstance(module, FSDPModule)}
        routers = {f"model.layers.{i}.mlp.gate" for i in (1, 2)}  # layer 0 is dense
        assert units == {"", "model.layers.0", "model.layers.1", "model.layers.2", *routers}
        router, layer = model.get_submodule("model.layers.1.mlp.gate"), model.model.layers[1]
        for unit in (router, layer):
            unit.unshard()  # what its forward computes with
        assert router.weight.dtype == torch.float32 and layer.attention.dense.weight.dtype == torch.bfloat16
        for unit in (router, layer):
            unit.reshard()
        with torch.no_grad():  # gathered in bf16 outside autocast: close to the float32 model, not equal
            torch.testing.assert_close(model(ids).float(), expected, rtol=0.1, atol=0.1)
    finally:
        dist.destroy_process_group()


def test_a_causal_llada2_never_looks_ahead_under_padding() -> None:
    model = random_model(random_config(4))
    model.causal = True
    ids = torch.randint(1, 50, (2, 10))
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[0, :2] = False
    keep[1, 4] = False
    changed = ids.clone()
    changed[:, 7:] = torch.randint(1, 50, (2, 3))
    with torch.no_grad():
        before = model(ids, keep)
        torch.testing.assert_close(model(changed, keep)[:, :7], before[:, :7])
        assert torch.isfinite(before).all()
        model.causal = False
        assert not torch.allclose(model(changed, keep)[:, :7], before[:, :7])  # bidirectional: it does look
