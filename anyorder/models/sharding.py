"""Fully sharded data parallelism (FSDP2) for every backbone the suite builds.

``strategy=fsdp`` is Lightning's :class:`~lightning.pytorch.strategies.ModelParallelStrategy`:
the module shards itself in ``configure_model`` (:func:`shard_backbone`), per-parameter
(``fully_shard``), so that

* each transformer block is one unit (its weights gathered for its forward and backward
  only), the embeddings and the head the root unit;
* a unit may mix a frozen bf16 base with float32 LoRA adapters (FSDP1 flattened one dtype);
* with ``broadcast_from_rank0`` only rank 0 reads a pretrained checkpoint: the other ranks
  build the backbone on the meta device and receive rank 0's tensors, shard by shard;
* the LLaDA2 router is a unit of its own, gathered in float32 under any mixed precision, so
  training chooses the experts that evaluation chooses.

The same code runs on the CPU with gloo (the tests train two processes through it) and on
GPUs with NCCL. Over several nodes the strategy's mesh is (nodes x devices per node): the
weights are sharded within a node and replicated across nodes (hybrid sharding), so only
gradients cross the slower inter-node links.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from transformers.models.bert.modeling_bert import BertLayer

from anyorder.models.llada2 import DecoderLayer, Router

# the blocks of the backbones in anyorder.models.backbones: LLaDA2, the pre-LN encoder, BERT
UNIT_CLASSES: tuple[type[nn.Module], ...] = (DecoderLayer, nn.TransformerEncoderLayer, BertLayer)
# precisions under which the sharded weights are gathered (and computed) in bf16
BF16_PRECISIONS = ("bf16-mixed", "bf16-true")


class FullyShardedStrategy(ModelParallelStrategy):
    """Lightning's FSDP2 strategy, plus whether rank 0 alone reads a pretrained checkpoint.

    Args:
        broadcast_from_rank0: ranks other than 0 build pretrained backbones on the meta device
            (read by the model config, ``model.backbone.load_on_rank_zero_only``); the weights
            reach them from rank 0 when the module shards itself.
        **kwargs: :class:`ModelParallelStrategy`'s (``save_distributed_checkpoint`` ...).
    """

    def __init__(self, broadcast_from_rank0: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broadcast_from_rank0 = broadcast_from_rank0
        self.sharded_checkpoints = kwargs.get("save_distributed_checkpoint", True)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """Gathered into one file (a LoRA run), the trained tensors only: the frozen base is not
        gathered onto rank 0 at every save only to be dropped from the checkpoint."""
        if self.sharded_checkpoints:
            return super().lightning_module_state_dict()
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        return get_model_state_dict(self.model, options=options)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        """Write beside the checkpoint, then swap it in: a run killed while its ranks write
        ``last.ckpt/`` keeps the previous one whole (a directory cannot be replaced atomically
        like a file, so the old one is renamed away first and removed after)."""
        path = Path(self.broadcast(str(filepath)))
        partial, previous = path.with_name(f"{path.name}.partial"), path.with_name(f"{path.name}.previous")
        if self.global_rank == 0:
            remove(partial)
        self.barrier()
        super().save_checkpoint(checkpoint, partial, storage_options)
        self.barrier()
        if self.global_rank == 0:
            if path.exists():  # else a previous save was killed after moving it away: keep that one until now
                remove(previous)
                path.rename(previous)
            partial.rename(path)
            remove(previous)
        self.barrier()


def remove(path: Path) -> None:
    """Delete a checkpoint: a file, or a sharded checkpoint's directory."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def mixed_precision(precision: str, backbone: nn.Module) -> MixedPrecisionPolicy:
    """Gather in bf16 under a bf16 precision, keeping float32 masters and float32 gradient
    reductions. Under ``32-true`` parameters are gathered as stored, unless they mix dtypes
    (a frozen bf16 base with float32 adapters): then in the base's dtype, since a unit gathers one.
    Inputs are not cast: under autocast the residual stream stays float32 between the units, as it
    does on one device (the router, gathered in float32, then routes on float32 inputs)."""
    dtypes = {p.dtype for p in backbone.parameters()}
    if precision in BF16_PRECISIONS:
        gathered = torch.bfloat16
    elif len(dtypes) > 1:
        gathered = min(dtypes, key=lambda dtype: torch.finfo(dtype).bits)
    else:
        gathered = None
    return MixedPrecisionPolicy(param_dtype=gathered, reduce_dtype=torch.float32, cast_forward_inputs=False)


def shard_backbone(backbone: nn.Module, mesh: DeviceMesh, precision: str, device: torch.device, rank: int) -> None:
    """``fully_shard`` ``backbone`` in place: routers, then blocks, then the root; then fill every
    rank with rank 0's tensors (the only complete copy when the others start on the meta device)."""
    if mesh.ndim == 2 and mesh.size(0) == 1:  # one node: plain sharding over its devices
        mesh = mesh[mesh.mesh_dim_names[1]] if mesh.mesh_dim_names else mesh
    full = backbone.state_dict() if rank == 0 else {}
    policy = mixed_precision(precision, backbone)
    float32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32, cast_forward_inputs=False)
    for module in backbone.modules():
        if isinstance(module, Router):
            fully_shard(module, mesh=mesh, mp_policy=float32)
    for module in backbone.modules():
        if isinstance(module, UNIT_CLASSES):
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(backbone, mesh=mesh, mp_policy=policy)
    tensors = [*backbone.parameters(), *backbone.buffers()]
    if any(t.is_meta for t in tensors):
        backbone.to_empty(device=device)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(backbone, full, options=options)
