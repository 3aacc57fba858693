#!/usr/bin/env bash
# Every check that needs a CUDA device, in one go, each step under its own time limit:
# the GPU tests, the throughput benchmarks, and the embedded default recipe trained on
# the GPU (bf16) and evaluated there on 200 held-out seeds.
#
#   bash benchmarks/gpu_node.sh [OUT_DIR]        # default OUT_DIR: gpu-check
#
# Each step's output goes to OUT_DIR/<step>.txt; OUT_DIR/summary.txt has the device and one
# line per step (exit code, seconds); the evaluation's metrics.json is copied beside them.
# Data and run directories go to WORK (default: OUT_DIR/work); PYTHON picks the interpreter;
# STEPS="gpu_tests eval_default" runs only the steps named (eval_default needs train_default's run;
# the whole script needs more than one 10-minute device command: run it in parts, e.g.
# STEPS="table_one_seed table_results").
# LLADA2_DIR=<a LLaDA2 checkpoint directory> adds FSDP and LoRA runs of the native LLaDA2-MoE
# and an export of the FSDP run (the device machine gets only the repository: copy
# ../shared/fixtures/llada2_tiny into an ignored folder of the checkout and carry it).
set -u -o pipefail
out=${1:-gpu-check}
work=${WORK:-$out/work}
mkdir -p "$out" "$work"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 SDL_VIDEODRIVER=dummy

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    if [[ -n ${STEPS:-} && " $STEPS " != *" $name "* ]]; then return; fi
    echo "== $name"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    echo "$name: exit ${PIPESTATUS[0]} in $((SECONDS - start)) s" | tee -a "$out/summary.txt"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/summary.txt"
$py -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__,
'transformers', transformers.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/summary.txt"

step gpu_tests 180 $py -m pytest -q -m "" tests/test_gpu.py
step bench_gpu 60 $py benchmarks/gpu.py --hidden 1024 --layers 24 --batch-size 32
run="$work/default-run"
step train_default 180 $py -m anyorder.train trainer=gpu data.num_workers=8 "hydra.run.dir=$run" \
    "paths.data_dir=$work/data" trainer.enable_progress_bar=false
step eval_default 150 $py -m anyorder.evaluate "ckpt_path=$run/checkpoints/last.ckpt" "paths.data_dir=$work/data" \
    eval.device=cuda eval.chunk_size=32 eval.num_episodes=200 eval.progress=false "hydra.run.dir=$work/default-eval"
cp "$work/default-eval/metrics.json" "$out/eval_metrics.json" 2>/dev/null
step bench_rollout 60 $py benchmarks/rollout.py --device cuda --chunk-size 32
step bench_moe 120 $py benchmarks/moe.py --device cuda --dtype bfloat16 --experts 256 --tokens 16384 --repeats 5 \
    --model --batch-size 8 --length 1024
if [[ -n ${LLADA2_DIR:-} ]]; then  # a LLaDA2 checkpoint directory (e.g. the shared fixture, carried along)
    step llada2_fsdp 180 $py -m anyorder.train model=llada2_mini "model.path=$LLADA2_DIR" trainer=gpu strategy=fsdp \
        trainer.max_steps=20 trainer.val_check_interval=10 "hydra.run.dir=$work/llada2-fsdp" "paths.data_dir=$work/data" \
        trainer.enable_progress_bar=false
    step llada2_lora 180 $py -m anyorder.train model=llada2_mini "model.path=$LLADA2_DIR" trainer=gpu model.lora.r=8 \
        trainer.max_steps=20 trainer.val_check_interval=10 "hydra.run.dir=$work/llada2-lora" "paths.data_dir=$work/data" \
        trainer.enable_progress_bar=false
    step llada2_fsdp_lora 180 $py -m anyorder.train model=llada2_mini "model.path=$LLADA2_DIR" trainer=gpu strategy=fsdp \
        model.lora.r=8 trainer.max_steps=20 trainer.val_check_interval=10 "hydra.run.dir=$work/llada2-fsdp-lora" \
        "paths.data_dir=$work/data" trainer.enable_progress_bar=false
    step llada2_export 60 $py -m anyorder.export "ckpt_path=$work/llada2-fsdp/checkpoints/last.ckpt" "out=$work/llada2-export" \
        "hydra.run.dir=$work/llada2-export-run"
fi
step bench_sweep 420 $py benchmarks/sweep.py --gpu --jobs 8 --per-device 8 --steps 300 --episodes 32
# issue #12: one level x one seed of the whole strategy table (every point of `point/`), packed 8 jobs per GPU,
# each job training and evaluating itself as in the real table; the full table's time is extrapolated from it
table="$work/table-gotoredball-seed0"
step table_one_seed 540 $py -m anyorder.train -m experiment=strategy_table seed=0 data=babyai_gotoredball \
    launcher=local_gpus "hydra.launcher.gpus=[0]" hydra.launcher.jobs_per_device=8 trainer=gpu data.num_workers=8 \
    eval.device=cuda eval.chunk_size=32 eval.progress=false "hydra.sweep.dir=$table" "paths.data_dir=$work/data"
step table_results 60 $py -m anyorder.results "$table"
cp "$table/results.md" "$out/table_one_seed.md" 2>/dev/null
step bench_pipeline 60 $py benchmarks/pipeline.py --device cuda --batch-size 256 --repeats 1
step bench_pipeline_workers 60 $py benchmarks/pipeline.py --device cuda --batch-size 256 --repeats 1 --loader-workers 4
cat "$out/summary.txt"
