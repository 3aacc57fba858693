"""Training throughput and model FLOPs utilisation (MFU) of the tiny backbone and of a
random-init backbone of a configurable size, on a GPU (bf16 autocast) or, as a smoke run, the CPU.

    python benchmarks/gpu.py                                   # tiny + a 24-layer/1024-wide model
    python benchmarks/gpu.py --hidden 2048 --layers 24 --batch-size 16 --peak-tflops 989

MFU = achieved model FLOP/s / the device's peak dense bf16 FLOP/s, counting 6 FLOPs per
parameter per token (forward + backward) plus attention's 12 * layers * hidden * L per token.
"""

from __future__ import annotations

import argparse
import time

import torch

from anyorder.data.layout import Layout
from anyorder.models.backbones import tiny_bidirectional

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, SXM where it applies


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def measure(hidden: int, layers: int, heads: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    length = Layout.build(args.window, 12).length
    backbone = tiny_bidirectional(
        vocab_size=args.vocab, max_length=length, hidden_size=hidden, num_layers=layers, num_heads=heads,
        intermediate_size=4 * hidden,
    ).to(device)  # fmt: skip
    if args.compile:
        backbone = torch.compile(backbone)
    parameters = sum(p.numel() for p in backbone.parameters())
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-4, fused=device.type == "cuda")
    inputs = torch.randint(0, args.vocab, (args.batch_size, length), device=device)
    attention = torch.ones_like(inputs, dtype=torch.bool)
    hidden_mask = torch.rand(inputs.shape, device=device) < 0.3
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            logits = backbone(inputs.masked_fill(hidden_mask, 1), attention)
            loss = torch.nn.functional.cross_entropy(logits[hidden_mask].float(), inputs[hidden_mask])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens = args.steps * inputs.numel() / elapsed
    flops_per_token = 6 * parameters + 12 * layers * hidden * length
    return {
        "parameters": parameters,
        "seq_len": length,
        "tokens_per_s": tokens,
        "tflops": tokens * flops_per_token / 1e12,
        "memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak dense bf16 TFLOP/s")
    args = parser.parse_args()
    device = torch.device(args.device)
    peak = peak_tflops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; bf16 autocast: {device.type == 'cuda'}; batch {args.batch_size}, window {args.window}")
    for label, size in (("tiny default", (128, 4, 4)), ("configured", (args.hidden, args.layers, args.heads))):
        result = measure(*size, args, device)
        mfu = f"{result['tflops'] / peak:6.1%}" if peak else "   n/a"
        print(
            f"{label:>13}: {result['parameters'] / 1e6:8.1f}M params  L={result['seq_len']}  "
            f"{result['tokens_per_s']:12,.0f} tokens/s  {result['tflops']:7.2f} TFLOP/s  MFU {mfu}  "
            f"peak mem {result['memory_gib']:.1f} GiB"
        )


if __name__ == "__main__":
    main()
