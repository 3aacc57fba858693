"""Sweep throughput: the same small strategy-table sweep run serially and packed.

    python benchmarks/sweep.py                      # CPU: 4 jobs, serial (all cores each) vs 2 at a time
    python benchmarks/sweep.py --gpu --jobs 8 --per-device 8    # a GPU: 8 jobs on one GPU vs 1 at a time

Each job is the default's shape (the tiny 4-layer encoder, window 2, batch 32) trained for
``--steps`` steps on 1,000 demos, then evaluated on ``--episodes`` dev seeds (eval_after_fit),
through ``anyorder-train -m experiment=strategy_table`` — the real command, with
``launcher=local_gpus`` (serial: ``jobs_per_device=1``; packed: ``--per-device``). The
dataset is generated before either run. Prints wall time, jobs/hour and the packed/serial
ratio (targets: >= 1.2x with 2 jobs x 1 thread on a 2-core CPU; >= 4x with 8 jobs per H200).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_sweep(sweep_dir: Path, data_dir: Path, args: argparse.Namespace, per_device: int) -> float:
    points = ["uniform_t", "behaviour_cloning", "cell_p0.3", "step_p0.3", "attribute_p0.3", "scheduled_p0.3"]
    seeds = ",".join(str(s) for s in range(max(1, -(-args.jobs // len(points)))))
    command = [
        sys.executable, "-m", "anyorder.train", "-m", "experiment=strategy_table",
        f"point={','.join(points[: min(args.jobs, len(points))])}", f"seed={seeds}", "data=babyai_gotoredball",
        "data.num_episodes=1000", f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}",
        "trainer.limit_val_batches=4", "callbacks.closed_loop_eval=null", f"eval.num_episodes={args.episodes}",
        "eval.occlusion_fractions=[0.0]", "eval.query_batches=2", "launcher=local_gpus",
        f"hydra.launcher.jobs_per_device={per_device}", f"hydra.sweep.dir={sweep_dir}", f"paths.data_dir={data_dir}",
    ]  # fmt: skip
    if args.gpu:
        command += ["trainer=gpu", "eval.device=cuda", "hydra.launcher.gpus=[0]"]
    else:
        command += ["hydra.launcher.gpus=[]"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"sweep failed:\n{result.stderr[-3000:]}")
    finished = len(list(sweep_dir.glob("*/job.json")))
    if finished != args.jobs_run:
        sys.exit(f"{finished} of {args.jobs_run} jobs finished in {sweep_dir}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--per-device", type=int, default=2, help="jobs at once in the packed run")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        subprocess.run(
            [sys.executable, "-m", "anyorder.generate", "data.num_episodes=1000", f"paths.data_dir={data}"],
            check=True, capture_output=True,
        )  # fmt: skip
        points = 6
        seeds = max(1, -(-args.jobs // points))
        args.jobs_run = min(args.jobs, points) * seeds
        serial = run_sweep(root / "serial", data, args, per_device=1)
        packed = run_sweep(root / "packed", data, args, per_device=args.per_device)
    print(f"job: tiny encoder (default shape), {args.steps} steps, batch 32, window 2; eval {args.episodes} dev seeds")
    print(f"serial  {args.jobs_run} jobs, 1 at a time:  {serial:7.1f} s  {3600 * args.jobs_run / serial:6.1f} jobs/h")
    print(
        f"packed  {args.jobs_run} jobs, {args.per_device} at a time:  {packed:7.1f} s  "
        f"{3600 * args.jobs_run / packed:6.1f} jobs/h"
    )
    print(f"packed / serial throughput: {serial / packed:.2f}x")


if __name__ == "__main__":
    main()
