"""Host memory to read a sharded full fine-tuning checkpoint back (what evaluation and export do).

    python benchmarks/checkpoint_memory.py                  # a 132M-parameter LLaDA2 shape, float32
    python benchmarks/checkpoint_memory.py --hidden 1024    # larger

A sharded run's ``last.ckpt/`` holds the model and AdamW's two moments: three times the model.
The old reader gathered the whole directory into one file (``dcp_to_torch_save``) and loaded it,
after building the model from its base checkpoint; the project's reader
(:func:`anyorder.eval.checkpoint.read_weights`) reads the model's tensors only, in place into a
skeleton. Each reader runs in a fresh process; the figure is its peak resident memory above
that of a process that only imported torch and built the skeleton's config, as a multiple of
the model's size in bytes (1.0: the model, once).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from anyorder.models.llada2 import LLaDA2Config, LLaDA2MoE

READERS = {
    "import only": "",
    "gather the directory, load it (old)": """
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
dcp_to_torch_save(directory, directory.parent / "gathered.pt")
state = torch.load(directory.parent / "gathered.pt", map_location="cpu", weights_only=True)["state_dict"]
""",
    "model tensors into a skeleton (now)": """
from anyorder.eval.checkpoint import read_weights
with torch.device("meta"):
    model = LLaDA2MoE(config)
model.to_empty(device="cpu")
state = read_weights(directory, into={f"backbone.{k}": v for k, v in model.state_dict().items()})
""",
}
PRELUDE = """
import json, sys
from pathlib import Path
import torch
from anyorder.models.llada2 import LLaDA2Config, LLaDA2MoE
directory = Path(sys.argv[1])
config = LLaDA2Config(**json.loads(sys.argv[2]))
"""
# the high-water mark of this process's own memory (ru_maxrss would carry over the parent's across exec)
EPILOGUE = """
peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
print(int(peak.split()[1]) * 1024)
"""


def shape(hidden: int, layers: int, experts: int) -> dict:
    return dict(
        vocab_size=32000, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 256, head_dim=64,
        moe_intermediate_size=hidden // 2, num_experts=experts, num_experts_per_tok=4, num_shared_experts=1,
        first_k_dense_replace=1, n_group=4, topk_group=2, pad_token_id=0,
    )  # fmt: skip


def write_checkpoint(config: LLaDA2Config, directory: Path) -> int:
    """A Lightning-style sharded checkpoint: the module's tensors and AdamW's two moments; returns the model's bytes."""
    torch.manual_seed(0)
    state = {f"backbone.{k}": v for k, v in LLaDA2MoE(config).state_dict().items()}
    moments = {k: {"exp_avg": torch.randn_like(v), "exp_avg_sq": torch.rand_like(v)} for k, v in state.items()}
    dcp.save({"state_dict": state, "optimizer_0": {"state": moments}}, checkpoint_id=directory, no_dist=True)
    return sum(t.numel() * t.element_size() for t in state.values())


def peak_rss(code: str, directory: Path, config: dict) -> int:
    import json

    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + code + EPILOGUE, str(directory), json.dumps(config)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--experts", type=int, default=32)
    args = parser.parse_args()
    config = shape(args.hidden, args.layers, args.experts)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "last.ckpt"
        model_bytes = write_checkpoint(LLaDA2Config(**config), directory)
        on_disk = sum(f.stat().st_size for f in directory.iterdir())
        print(f"model {model_bytes / 2**20:,.0f} MiB (float32); checkpoint on disk {on_disk / 2**20:,.0f} MiB")
        baseline = peak_rss(READERS["import only"], directory, config)
        for name, code in READERS.items():
            if not code:
                continue
            peak = peak_rss(code, directory, config)
            extra = peak - baseline
            print(f"  {name:<40} peak {peak / 2**20:7,.0f} MiB, above import {extra / 2**20:7,.0f} MiB"
                  f" = {extra / model_bytes:.2f} x the model")  # fmt: skip


if __name__ == "__main__":
    main()
