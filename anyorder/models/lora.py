"""Low-rank adapters for the native LLaDA2-MoE, in place and under the checkpoint's key names.

A :class:`LoRALinear` *is* the ``nn.Linear`` it adapts (same ``weight``/``bias`` names), plus
``lora_A``/``lora_B``: the frozen base keeps its key names and its dtype (bf16: LLaDA2.0-mini
plus adapters fit one 80 GB GPU) while the adapters train in float32. Merging folds
``B @ A * scale`` into the weight and turns the layer back into a plain ``nn.Linear``, which
is what an export writes. (``model=hf_local`` keeps peft, for arbitrary HF architectures.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from anyorder.errors import ConfigError, DataError

# LLaDA2's attention projections: the fused q/k/v and the output projection
DEFAULT_TARGETS = ("query_key_value", "dense")


class LoRALinear(nn.Linear):
    """``base(x) + dropout(x) @ A.T @ B.T * alpha / r``; B starts at zero, so the adapted model starts as the base."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=device, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=device, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)
        self.scale = alpha / r
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = super().forward(x)
        update = F.linear(F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B) * self.scale
        return base + update.to(base.dtype)

    def merged(self, dtype: torch.dtype | None = None) -> nn.Linear:
        """A plain ``nn.Linear`` with the update folded into its weight, in ``dtype`` (None: the
        weight's). Folded in float32 and rounded once: a bf16 base would round away updates
        smaller than its own rounding step, so an export in float32 merges in float32."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        delta = (self.lora_B @ self.lora_A) * self.scale
        merged = (self.weight.float() + delta).to(dtype or self.weight.dtype)
        linear.weight = nn.Parameter(merged, requires_grad=False)
        if self.bias is not None:
            linear.bias = self.bias
        return linear


def add_lora(
    model: nn.Module, r: int, targets: Sequence[str] = DEFAULT_TARGETS, alpha: float | None = None, dropout: float = 0.0
) -> int:
    """Freeze ``model`` and adapt every ``nn.Linear`` whose own name is in ``targets``; returns the adapter count.

    Only ``nn.Linear`` layers can be adapted: the routed experts (stacked ``[E, out, in]``
    tensors) and the router are no ``nn.Linear`` and never take adapters; the shared experts'
    projections (``gate_proj``, ``up_proj``, ``down_proj``) and ``lm_head`` can.
    """
    if r <= 0:
        raise ConfigError("lora.r", f"must be > 0 to add adapters, got {r}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    found = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if name in targets and type(child) is nn.Linear
    ]
    if not found:
        raise ConfigError("lora.targets", f"no nn.Linear named any of {list(targets)} in the model")
    for parent, name in found:
        setattr(parent, name, LoRALinear(getattr(parent, name), r, alpha if alpha is not None else 2 * r, dropout))
    return len(found)


ADAPTER_FILE, ADAPTER_CONFIG = "adapters.safetensors", "adapter_config.json"


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every adapter tensor of ``model`` under its name (``...query_key_value.lora_A``)."""
    return {name: p.detach() for name, p in model.named_parameters() if name.endswith((".lora_A", ".lora_B"))}


def save_adapters(model: nn.Module, directory: Path, settings: dict[str, Any]) -> Path:
    """The adapters alone (float32 safetensors) and the settings that rebuild them on the base."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in adapter_state_dict(model).items()}
    if not state:
        raise ConfigError("adapters_only", "the run has no LoRA adapters to write (model.lora.r is 0)")
    save_file(state, str(directory / ADAPTER_FILE), metadata={"format": "pt"})
    (directory / ADAPTER_CONFIG).write_text(json.dumps(settings, indent=2))
    return directory


def load_adapters(model: nn.Module, directory: str | Path) -> nn.Module:
    """``model`` (the base the adapters were trained on) with the adapters of ``directory``, in place."""
    directory = Path(directory)
    settings = json.loads((directory / ADAPTER_CONFIG).read_text())
    add_lora(model, settings["r"], settings["targets"], settings["alpha"], settings.get("dropout", 0.0))
    missing, unexpected = model.load_state_dict(load_file(str(directory / ADAPTER_FILE)), strict=False)
    if unexpected or any(name.endswith(("lora_A", "lora_B")) for name in missing):
        raise DataError(directory, f"the adapters do not fit the model (unexpected {unexpected[:3]})")
    return model


def merge_lora(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Fold every adapter into its weight (in ``dtype``, None: the base's), in place; the model
    is then adapter-free."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged(dtype))
    return model
