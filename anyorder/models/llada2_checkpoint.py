"""LLaDA2.0 checkpoint directories in, and back out: key names, expert stacking, shards.

A checkpoint stores each routed expert apart (``model.layers.N.mlp.experts.E.gate_proj.weight``);
:class:`~anyorder.models.llada2.LLaDA2MoE` holds them stacked (``...mlp.experts.gate_proj``
``[E, width, hidden]``) so that they run as one grouped matmul. Reading stacks them, writing
splits them again, so an exported directory loads in the upstream tools unchanged.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from anyorder.data.episodes import atomic_write_bytes
from anyorder.errors import DataError
from anyorder.models.llada2 import IMPLEMENTED_SETTINGS, LLaDA2Config, LLaDA2MoE

log = logging.getLogger(__name__)
# tensors that keep the dtype they are stored in, whatever the model's: the router's expert bias
# is a float32 load-balancing statistic; in bf16 its small differences between experts round away
SOURCE_DTYPE_KEYS = (".expert_bias",)
INDEX = "model.safetensors.index.json"
_EXPERT = re.compile(r"^(?P<prefix>.+\.mlp\.experts)\.(?P<expert>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$")
_STACKED = re.compile(r"^(?P<prefix>.+\.mlp\.experts)\.(?P<proj>gate_proj|up_proj|down_proj)$")
# files of a checkpoint directory that are not weights: config, tokenizer, generation settings, code
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", INDEX)


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of ``directory``: those its index names, or ``model*.safetensors``."""
    index = directory / INDEX
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as error:
            raise DataError(index, f"not a safetensors index ({error})") from None
        files = [directory / name for name in names]
        for file in files:
            if not file.is_file():
                raise DataError(file, f"missing shard (named in {INDEX})")
        return files
    files = sorted(directory.glob("model*.safetensors"))
    if not files:
        raise DataError(directory, "no model*.safetensors weights (LLaDA2.0 checkpoints ship safetensors)")
    return files


def read_state_dict(directory: Path, config: LLaDA2Config, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint in ``dtype`` (but :data:`SOURCE_DTYPE_KEYS`), experts stacked."""
    state: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = defaultdict(dict)
    for file in weight_files(directory):
        log.info("rank %d reads %s", rank_zero_only.rank, file)
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
                    tensor = handle.get_tensor(key)
                    tensor = tensor if key.endswith(SOURCE_DTYPE_KEYS) else tensor.to(dtype)
                    match = _EXPERT.match(key)
                    if match:
                        experts[match["prefix"], match["proj"]][int(match["expert"])] = tensor
                    else:
                        state[key] = tensor
        except (OSError, RuntimeError, SafetensorError) as error:
            raise DataError(file, f"cannot read the weights ({str(error).splitlines()[0]})") from None
    for (prefix, proj), by_index in experts.items():
        if sorted(by_index) != list(range(config.num_experts)):
            stored = f"{len(by_index)} experts stored"
            raise DataError(directory, f"{prefix}: {stored}, config.json says {config.num_experts}")
        state[f"{prefix}.{proj}"] = torch.stack([by_index[i] for i in range(config.num_experts)])
        by_index.clear()
    if config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state.get("model.word_embeddings.weight"))
    return state


def checkpoint_state_dict(model: LLaDA2MoE, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``model``'s tensors under the checkpoint's key names (experts split), in ``dtype`` (but
    :data:`SOURCE_DTYPE_KEYS`, kept in the dtype the model holds them in)."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if model.config.tie_word_embeddings and key == "lm_head.weight":
            continue
        match = _STACKED.match(key)
        if match:
            for index, expert in enumerate(tensor.unbind(0)):
                state[f"{match['prefix']}.{index}.{match['proj']}.weight"] = expert.to(dtype).contiguous()
        else:
            state[key] = (tensor if key.endswith(SOURCE_DTYPE_KEYS) else tensor.to(dtype)).detach().contiguous()
    return state


def save_pretrained(
    model: LLaDA2MoE,
    directory: str | Path,
    source: str | Path | None = None,
    dtype: torch.dtype = torch.bfloat16,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write ``model`` as a LLaDA2.0 checkpoint directory: safetensors shards + index, config.

    ``source`` (the directory it was loaded from) lends its non-weight files: ``config.json``
    (``dtype`` updated), tokenizer, generation config. Each file is written atomically.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = checkpoint_state_dict(model, dtype)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    for name, shard in zip(names, shards, strict=True):
        atomic_write_bytes(out / name, lambda tmp, shard=shard: save_file(shard, tmp, metadata={"format": "pt"}))
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
            "weight_map": {key: name for name, shard in zip(names, shards, strict=True) for key in shard},
        }
        _write_text(out / INDEX, json.dumps(index, indent=2))
    config = {}
    if source is not None:
        source = Path(source)
        config = json.loads((source / "config.json").read_text())
        for file in source.iterdir():
            if file.is_file() and file.name != "config.json" and not file.name.endswith(_WEIGHT_SUFFIXES):
                shutil.copy2(file, out / file.name)
    if not config:  # no source directory: the fields this implementation reads, and what it computes
        config = {**asdict(model.config), **IMPLEMENTED_SETTINGS, "rotary_dim": model.config.rotary_dim}
    name = str(dtype).removeprefix("torch.")
    config.update({"model_type": "llada2_moe", "dtype": name, "torch_dtype": name})  # transformers 5 and 4
    config.setdefault("architectures", ["LLaDA2MoeModelLM"])
    _write_text(out / "config.json", json.dumps(config, indent=2))
    return out


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))
