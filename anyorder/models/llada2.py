"""LLaDA2-MoE, the project's own implementation: a bidirectional mixture-of-experts transformer.

Why not the checkpoints' own code (``trust_remote_code``)? It does not import under
transformers 5, and it turns any 2-D padding mask into a *causal* mask, which silently
trains a masked-diffusion model as an autoregressive one. This module computes what that
code computes on unpadded input (checked against its logits, ``tests/test_llada2.py``)
and, under padding, what each row computes alone:

* attention is never causal; a key-padding mask hides padded keys (PyTorch SDPA), and
  rotary positions count real tokens only, so padding anywhere (left of a window, inside
  the mission field) leaves the logits at the real tokens unchanged;
* the routed experts are held stacked (``[experts, out, in]`` per projection) and run
  together: tokens are sorted by expert and each projection is one grouped matmul;
* the router is the upstream one: sigmoid scores, choice on scores + a fixed expert bias,
  group-limited top-k, weights = the chosen unbiased scores, normalised, x a scaling factor.

Layer and parameter names follow the checkpoints (``model.layers.N.attention.query_key_value``
...) except the stacked experts; :mod:`anyorder.models.llada2_checkpoint` converts.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from anyorder.errors import ConfigError, DataError
from anyorder.models.causal import causal_blocked

MODEL_TYPE = "llada2_moe"


@dataclass(frozen=True)
class LLaDA2Config:
    """The fields of a LLaDA2.0 ``config.json`` this implementation reads (same names).

    A field absent from a ``config.json`` takes the default of the upstream configuration
    class (``LLaDA2MoeConfig``), so that a sparse file means here what it means there.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    moe_intermediate_size: int
    num_experts: int = 16
    num_experts_per_tok: int = 2
    num_shared_experts: int = 0
    first_k_dense_replace: int = 0
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    partial_rotary_factor: float = 0.5
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 16384
    pad_token_id: int = 126081
    use_qkv_bias: bool = False
    use_bias: bool = True
    tie_word_embeddings: bool = False

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LLaDA2Config:
        """Refuse, by field name, anything this implementation would compute differently."""
        if raw.get("model_type") != MODEL_TYPE:
            raise ConfigError("model_type", f"expected {MODEL_TYPE!r}, got {raw.get('model_type')!r}")
        unsupported = {  # field: (value, upstream default, what is implemented)
            "rope_scaling": (raw.get("rope_scaling"), (None,)),
            "score_function": (raw.get("score_function", "sigmoid"), ("sigmoid",)),
            "use_qk_norm": (raw.get("use_qk_norm", True), (True,)),
            "norm_head": (raw.get("norm_head", False), (False,)),
            "hidden_act": (raw.get("hidden_act", "silu"), ("silu",)),
            "norm_topk_prob": (raw.get("norm_topk_prob", True), (True,)),
            "router_dtype": (raw.get("router_dtype", "fp32"), ("fp32", "float32")),
            "use_sliding_window": (raw.get("use_sliding_window", False), (False,)),
            # dropout is not implemented: fine-tuning runs without it (upstream's default is 0.1)
            "attention_dropout": (raw.get("attention_dropout", 0.1), (0, 0.0)),
            "embedding_dropout": (raw.get("embedding_dropout", 0.1), (0, 0.0)),
            "output_dropout": (raw.get("output_dropout", 0.1), (0, 0.0)),
        }
        for name, (value, supported) in unsupported.items():
            if value not in supported:
                raise ConfigError(name, f"{value!r} is not implemented (only {' or '.join(map(repr, supported))})")
        known = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in raw.items() if key in known}
        values["head_dim"] = values.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
        values["num_key_value_heads"] = values.get("num_key_value_heads") or raw["num_attention_heads"]  # 0: MHA
        values["num_shared_experts"] = values.get("num_shared_experts") or 0
        config = cls(**values)
        if not 0 <= config.pad_token_id < config.vocab_size:
            raise ConfigError(
                "pad_token_id", f"{config.pad_token_id} is not an id of the {config.vocab_size}-token vocabulary"
            )
        if config.num_experts % config.n_group:
            raise ConfigError("n_group", f"{config.num_experts} experts do not split into {config.n_group} groups")
        if raw.get("rotary_dim") not in (None, config.rotary_dim):
            raise ConfigError(
                "rotary_dim",
                f"{raw['rotary_dim']} disagrees with head_dim x partial_rotary_factor = {config.rotary_dim}",
            )
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> LLaDA2Config:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(path, f"cannot read the model config ({error})") from None
        try:
            return cls.from_dict(raw)
        except KeyError as error:
            raise DataError(path, f"the model config lacks {error.args[0]!r}") from None


# what this implementation computes, for the fields a config.json may set otherwise (written
# into an export made without its source directory, so that it reads back as it was computed)
IMPLEMENTED_SETTINGS = {
    "attention_dropout": 0.0,
    "embedding_dropout": 0.0,
    "output_dropout": 0.0,
    "norm_topk_prob": True,
    "router_dtype": "fp32",
    "score_function": "sigmoid",
    "use_qk_norm": True,
    "hidden_act": "silu",
}


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 whatever the input dtype."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size))
        self.eps = eps
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise in place: FSDP calls this on a rank that built the model on the meta device."""
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_tables(positions: torch.Tensor, dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """cos/sin ``[B, L, dim]`` of the rotate-half rotary embedding at ``positions`` ``[B, L]``."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[..., None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of each head of ``x`` ``[B, heads, L, D]``; the rest pass."""
    dim = cos.shape[-1]
    rotated, passed = x[..., :dim], x[..., dim:]
    first, second = rotated.chunk(2, dim=-1)
    cos, sin = cos[:, None], sin[:, None]
    rotated = rotated * cos + torch.cat((-second, first), dim=-1) * sin
    return torch.cat((rotated, passed), dim=-1)


class Attention(nn.Module):
    """Grouped-query attention, one fused qkv projection, RMS-normed queries/keys, partial rotary."""

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        width = (self.heads + 2 * self.kv_heads) * self.head_dim
        self.query_key_value = nn.Linear(config.hidden_size, width, bias=config.use_qkv_bias)
        self.query_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.key_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.dense = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=config.use_bias)

    def forward(
        self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], keep: torch.Tensor | None
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        qkv = self.query_key_value(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        query, key, value = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=1)
        query = apply_rotary(self.query_layernorm(query), *rotary)
        key = apply_rotary(self.key_layernorm(key), *rotary)
        value = value.to(query.dtype)
        grouped = self.heads != self.kv_heads
        mask = None
        if keep is not None:  # [B, L] keys to attend to, or [B, L, L] per query (causal)
            mask = keep[:, None, None, :] if keep.dim() == 2 else keep[:, None]
            if grouped and query.is_cuda:  # CUDA's fused kernels take a mask or GQA, not both: expand K/V
                key, value = (t.repeat_interleave(self.heads // self.kv_heads, dim=1) for t in (key, value))
                grouped = False
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=grouped)
        return self.dense(out.transpose(1, 2).reshape(batch, length, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, width, bias=False)
        self.up_proj = nn.Linear(hidden_size, width, bias=False)
        self.down_proj = nn.Linear(width, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """``real`` is the MoE's routing mask; a dense MLP computes every token alike."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def grouped_matmul(x: torch.Tensor, weight: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """``x[rows of group g] @ weight[g].T`` for rows sorted by group; ``ends`` = cumulative group sizes.
    Rows after ``ends[-1]`` belong to no group and are not computed (their output is undefined).

    One kernel for all groups (``torch.nn.functional.grouped_mm``) where torch has it and the
    row strides meet its 16-byte alignment; otherwise one batched matmul over groups padded
    to the largest (same result, more memory, host syncs for the sizes).
    """
    w = weight.transpose(1, 2).to(x.dtype)  # [G, in, out], a view when the dtypes agree
    aligned = (x.shape[1] * x.element_size()) % 16 == 0 and (w.shape[2] * x.element_size()) % 16 == 0
    fused = hasattr(F, "grouped_mm") and aligned
    warn_if_slow(x, fused)
    if fused:
        return F.grouped_mm(x, w, offs=ends.to(torch.int32))
    out = x.new_zeros(len(x), w.shape[2])
    total = int(ends[-1]) if len(ends) else 0
    if not total:
        return out
    sizes = torch.diff(ends, prepend=ends.new_zeros(1))
    group = torch.repeat_interleave(torch.arange(len(sizes), device=x.device), sizes, output_size=total)
    slot = torch.arange(total, device=x.device) - (ends - sizes)[group]
    padded = x.new_zeros(len(sizes), int(sizes.max()), x.shape[1])
    padded[group, slot] = x[:total]
    out[:total] = torch.bmm(padded, w)[group, slot]
    return out


_warned: set[str] = set()


def warn_if_slow(x: torch.Tensor, fused: bool) -> None:
    """Once per reason: the experts run on a path far slower than the fused grouped matmul."""
    reason = None
    if not fused:
        reason = "torch has no grouped_mm or the expert widths break its 16-byte alignment: padded batched matmul"
    elif x.is_cuda and (x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device) < (9, 0)):
        reason = f"grouped_mm is fused for bf16 on SM90+ only, not {x.dtype} here: it loops over the experts"
    if reason is not None and reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"LLaDA2 experts on a slow path ({reason})", stacklevel=3)


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """What autocast would compute a matmul of ``tensor`` in (its own dtype outside autocast).

    Autocast does not know ``grouped_mm``, so the experts cast to this themselves: under
    bf16-mixed they run in bf16 like every other matmul, not in float32 on a slower path."""
    device = tensor.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else tensor.dtype


class Experts(nn.Module):
    """The routed experts, stacked: gate/up ``[E, width, hidden]``, down ``[E, hidden, width]``."""

    def __init__(self, num_experts: int, hidden_size: int, width: int) -> None:
        super().__init__()
        self.gate_proj = nn.Parameter(torch.empty(num_experts, width, hidden_size))
        self.up_proj = nn.Parameter(torch.empty(num_experts, width, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise in place (see :meth:`RMSNorm.reset_parameters`)."""
        for weight in (self.gate_proj, self.up_proj, self.down_proj):
            nn.init.normal_(weight, std=0.02)

    def forward(
        self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor, real: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` [T, H]; ``chosen``/``weights`` [T, k] -> sum_j weights[:, j] * expert_{chosen[:, j]}(x).

        Rows are gathered in the compute dtype (bf16 under bf16-mixed: no ``[T*k, H]`` float32
        copies), group sizes are counted on the device (no host sync), and the weighted sum
        over the k choices is taken in the routing weights' float32. Tokens outside ``real``
        (bool [T]: padding) are sent to no expert: sorted after every expert's rows, they are
        not computed, and their output is 0.
        """
        tokens, k = chosen.shape
        experts = self.gate_proj.shape[0]
        flat = chosen.flatten()
        if real is not None:  # a virtual expert past the last one: sorted last, outside every group
            flat = torch.where(real.repeat_interleave(k), flat, experts)
        order = torch.argsort(flat, stable=True)
        counts = torch.zeros(experts + 1, dtype=torch.long, device=x.device).scatter_add_(
            0, flat, torch.ones_like(flat)
        )
        ends = torch.cumsum(counts[:experts], dim=0)
        rows = x.to(compute_dtype(x))[order // k]
        if real is not None:  # rows past the last group are computed by no expert: their outputs (and the
            # gradients the grouped matmul returns for them) are undefined, so neither may flow on
            inside = (torch.arange(len(rows), device=x.device) < ends[-1])[:, None]
            rows = torch.where(inside, rows, 0)
        hidden = F.silu(grouped_matmul(rows, self.gate_proj, ends)) * grouped_matmul(rows, self.up_proj, ends)
        out = grouped_matmul(hidden, self.down_proj, ends)
        if real is not None:
            out = torch.where(inside, out, 0)
        out = out[torch.argsort(order)].view(tokens, k, -1)  # back to (token, choice) order
        return (out.to(weights.dtype) * weights[..., None]).sum(dim=1).to(x.dtype)

    def forward_loop(self, x: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The same sum by a Python loop over the experts: the independent reference that
        ``forward`` is tested and benchmarked against (``benchmarks/moe.py``), never used to train."""
        out = torch.zeros(x.shape, dtype=weights.dtype, device=x.device)
        for e in range(self.gate_proj.shape[0]):
            token, slot = torch.nonzero(chosen == e, as_tuple=True)
            rows = x[token]
            hidden = F.silu(rows @ self.gate_proj[e].T) * (rows @ self.up_proj[e].T)
            out = out.index_add(0, token, (hidden @ self.down_proj[e].T).to(weights.dtype) * weights[token, slot, None])
        return out.to(x.dtype)


class Router(nn.Module):
    """Chooses ``k`` experts per token; ``expert_bias`` steers the choice only, never the weights."""

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        self.top_k, self.groups, self.top_groups = config.num_experts_per_tok, config.n_group, config.topk_group
        self.scale = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        # a load-balancing statistic of pre-training, fixed while fine-tuning (a buffer, not a parameter)
        self.register_buffer("expert_bias", torch.zeros(config.num_experts))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise in place (see :meth:`RMSNorm.reset_parameters`); a checkpoint overwrites both."""
        nn.init.normal_(self.weight, std=0.02)
        nn.init.zeros_(self.expert_bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # in float32 even under autocast, which would turn this linear back into bf16 and let
        # training choose other experts than evaluation (measured: 6% of tokens on a mini router)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._route(x)

    def _route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.sigmoid(F.linear(x.float(), self.weight.float()))  # [T, E]
        biased = (scores + self.expert_bias.float()).detach()
        by_group = biased.view(len(x), self.groups, -1)
        group_score = by_group.topk(min(2, by_group.shape[-1]), dim=-1).values.sum(dim=-1)
        kept_groups = group_score.topk(self.top_groups, dim=-1).indices
        allowed = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, kept_groups, True)
        allowed = allowed[..., None].expand_as(by_group).reshape_as(biased)
        chosen = biased.masked_fill(~allowed, float("-inf")).topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, chosen)
        if self.top_k > 1:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return chosen, weights * self.scale


class MoE(nn.Module):
    """Routed experts plus always-on shared experts."""

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        self.gate = Router(config)
        self.experts = Experts(config.num_experts, config.hidden_size, config.moe_intermediate_size)
        self.shared_experts = (
            MLP(config.hidden_size, config.moe_intermediate_size * config.num_shared_experts)
            if config.num_shared_experts
            else None
        )

    def forward(self, x: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """``real`` (bool [B, L]): the tokens to route; padding is sent to no routed expert."""
        flat = x.reshape(-1, x.shape[-1])
        tokens = None if real is None else real.reshape(-1)
        out = self.experts(flat, *self.gate(flat), real=tokens).view_as(x)
        return out if self.shared_experts is None else out + self.shared_experts(x)


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then + mlp(norm(x)). The unit FSDP shards.

    With ``checkpointed`` the block's activations are recomputed in the backward pass *inside*
    the block: under FSDP the unit's hooks gather its weights once for the recomputation and
    the backward together, not once more for a recomputation wrapped around the unit.
    """

    def __init__(self, config: LLaDA2Config, index: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        dense = index < config.first_k_dense_replace or not config.num_experts
        self.mlp = MLP(config.hidden_size, config.intermediate_size) if dense else MoE(config)
        self.checkpointed = False

    def forward(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        """``(x, cos, sin, keep, real)``, as :meth:`block` takes them."""
        if self.checkpointed and self.training and torch.is_grad_enabled():
            return checkpoint(self.block, *inputs, use_reentrant=False)
        return self.block(*inputs)

    def block(self, x: Tensor, cos: Tensor, sin: Tensor, keep: Tensor | None, real: Tensor | None) -> torch.Tensor:
        """``keep``: what each query attends to; ``real`` (bool [B, L] or None): the tokens routed."""
        x = x + self.attention(self.input_layernorm(x), (cos, sin), keep)
        return x + self.mlp(self.post_attention_layernorm(x), real)


class Trunk(nn.Module):
    """Embeddings, decoder layers, final norm (the checkpoints' ``model.`` prefix)."""

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LLaDA2MoE(nn.Module):
    """``forward(input_ids [B, L], attention_mask [B, L] bool, True = real) -> logits [B, L, V]``.

    Logits at position i predict token i (no shift): the masked-diffusion convention.
    """

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        self.config = config
        self.model = Trunk(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.word_embeddings.weight
        self.causal = False  # True: left-to-right attention (the autoregressive baseline)

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether each decoder layer recomputes its activations in the backward pass."""
        return all(layer.checkpointed for layer in self.model.layers)

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enabled: bool) -> None:
        for layer in self.model.layers:
            layer.checkpointed = bool(enabled)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.model.word_embeddings(input_ids)
        if torch.is_autocast_enabled(input_ids.device.type):  # mixed precision: the residual stream in float32,
            hidden = hidden.float()  # whatever dtype the (sharded, bf16-gathered or frozen) embedding is held in
        if attention_mask is None or bool(attention_mask.all()):  # no padding: SDPA keeps its fused kernels
            keep = real = None
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        else:
            real = attention_mask.bool()  # the tokens routed to experts (padding is not)
            keep = real | ~real.any(dim=1, keepdim=True)  # an all-padding row attends to itself, not to nothing
            positions = (torch.cumsum(keep, dim=1) - 1).clamp(min=0)  # real tokens only
        if self.causal:
            keep = ~causal_blocked(torch.ones_like(input_ids, dtype=torch.bool) if keep is None else keep)
        cos, sin = rotary_tables(positions, self.config.rotary_dim, self.config.rope_theta, hidden.dtype)
        for layer in self.model.layers:
            hidden = layer(hidden, cos, sin, keep, real)
        return self.lm_head(self.model.norm(hidden))


def from_pretrained(path: str | Path, dtype: str | torch.dtype = "float32", load: bool = True) -> LLaDA2MoE:
    """A LLaDA2.0 checkpoint directory (``config.json`` + safetensors, sharded or not) as :class:`LLaDA2MoE`.

    The model is built on the meta device and the checkpoint's tensors are assigned to it,
    so the host holds the weights once, never a random initialisation beside them. With
    ``load=False`` it stays on the meta device (no memory at all): for ranks that receive
    their weights from rank 0 when the model is sharded (``strategy=fsdp``).
    """
    from anyorder.models.llada2_checkpoint import read_state_dict

    directory = Path(path)
    config = LLaDA2Config.from_file(directory / "config.json")
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with torch.device("meta"):
        model = LLaDA2MoE(config).to(dtype)
        for router in (m for m in model.modules() if isinstance(m, Router)):
            router.expert_bias = router.expert_bias.float()  # a statistic, kept in float32 (its source dtype)
    if load:
        state = read_state_dict(directory, config, dtype)
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            detail = "; ".join(
                f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected))
                if keys
            )
            raise DataError(directory, f"the weights do not fit its config.json ({detail})")
        model.load_state_dict(state, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.word_embeddings.weight
    return model.eval()
