"""The routed experts of one LLaDA2 MoE layer: grouped (the project's) vs a per-expert loop.

    python benchmarks/moe.py                           # CPU: the mini's expert shape, 32 experts
    python benchmarks/moe.py --device cuda --experts 256 --tokens 16384 --dtype bfloat16
    python benchmarks/moe.py --device cuda --model     # + tokens/s and MFU of a 2-layer mini-shaped model

LLaDA2.0-mini's MoE layers: hidden 2048, expert width 512, 256 experts, 8 chosen per token
(+1 shared). Both paths compute forward + backward of the same routed sum on the same
routing (the router's real choice on random inputs); the ratio is loop time / grouped time.
MFU counts 6 FLOPs per active matmul parameter per token (forward + backward; the input
embedding is a lookup and not counted) plus attention's 12 * layers * heads * head_dim * L,
against the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from anyorder.models.llada2 import Experts, LLaDA2Config, LLaDA2MoE, Router

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def mini_config(**changes: object) -> LLaDA2Config:
    """LLaDA2.0-mini's shape (its config.json), with ``changes``."""
    shape = dict(
        vocab_size=157184, hidden_size=2048, intermediate_size=5120, num_hidden_layers=20, num_attention_heads=16,
        num_key_value_heads=4, head_dim=128, moe_intermediate_size=512, num_experts=256, num_experts_per_tok=8,
        num_shared_experts=1, first_k_dense_replace=1, n_group=8, topk_group=4, routed_scaling_factor=2.5,
        partial_rotary_factor=0.5, rope_theta=600000.0, rms_norm_eps=1e-6, use_bias=False, pad_token_id=156892,
    )  # fmt: skip
    return LLaDA2Config(**{**shape, **changes})


def timed(run: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median seconds of ``run`` after one warm-up."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_layer(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
    groups = max(1, min(8, args.experts // 8))
    config = mini_config(num_experts=args.experts, n_group=groups, topk_group=max(1, groups // 2))
    torch.manual_seed(0)
    experts = Experts(config.num_experts, config.hidden_size, config.moe_intermediate_size).to(device, dtype)
    router = Router(config).to(device)
    x = torch.randn(args.tokens, config.hidden_size, device=device, dtype=dtype, requires_grad=True)
    with torch.no_grad():
        chosen, weights = router(x)

    def step(forward: Callable) -> Callable[[], None]:
        def run() -> None:
            out = forward(x, chosen, weights)
            out.backward(torch.ones_like(out))  # a materialised gradient, as the loss's would be
            experts.zero_grad(set_to_none=True)
            x.grad = None

        return run

    grouped = timed(step(experts.forward), device, args.repeats)
    loop = timed(step(experts.forward_loop), device, args.repeats)
    flops = 6 * args.tokens * config.num_experts_per_tok * 3 * config.hidden_size * config.moe_intermediate_size
    print(
        f"MoE layer, {args.experts} experts x width {config.moe_intermediate_size}, hidden {config.hidden_size}, "
        f"top-{config.num_experts_per_tok}, {args.tokens} tokens, {dtype}, {device} (forward + backward):"
    )
    print(f"  grouped matmul   {grouped * 1e3:9.1f} ms   {flops / grouped / 1e12:7.2f} TFLOP/s")
    print(f"  per-expert loop  {loop * 1e3:9.1f} ms   {flops / loop / 1e12:7.2f} TFLOP/s")
    print(f"  ratio (loop / grouped): {loop / grouped:.2f}x")


def bench_model(args: argparse.Namespace, device: torch.device) -> None:
    """Training tokens/s of a 2-layer LLaDA2.0-mini-shaped model (1 dense + 1 MoE layer), bf16 autocast."""
    config = mini_config(num_hidden_layers=2)
    torch.manual_seed(0)
    model = LLaDA2MoE(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    ids = torch.randint(0, config.vocab_size, (args.batch_size, args.length), device=device)

    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(ids).flatten(0, 1).float(), ids.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(run, device, args.repeats)
    tokens = args.batch_size * args.length
    h, w = config.hidden_size, config.moe_intermediate_size
    attention = h * (config.num_attention_heads + 2 * config.num_key_value_heads) * config.head_dim + h * h
    active = (
        2 * attention
        + 3 * h * config.intermediate_size
        + 3 * h * w * (config.num_experts_per_tok + config.num_shared_experts)
        + h * config.num_experts
        + config.vocab_size * h  # the head; the input embedding is a lookup, no matmul
    )
    flops = tokens * (6 * active + 12 * 2 * config.num_attention_heads * config.head_dim * args.length)
    peak = next(
        (v for k, v in PEAK_BF16_TFLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name()), None
    )
    mfu = f", MFU {flops / seconds / (peak * 1e12):.1%} of {peak:.0f} TFLOP/s" if peak else ""
    memory = f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
    print(
        f"2-layer mini-shaped model, batch {args.batch_size} x {args.length} tokens: "
        f"{tokens / seconds:,.0f} tokens/s ({seconds * 1e3:.0f} ms/step){mfu}{memory}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--experts", type=int, default=32, help="256 in LLaDA2.0-mini; fewer on a CPU")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", action="store_true", help="also time a 2-layer mini-shaped model")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=1024)
    args = parser.parse_args()
    device = torch.device(args.device)
    bench_layer(args, device, getattr(torch, args.dtype))
    if args.model:
        bench_model(args, device)


if __name__ == "__main__":
    main()
