#!/usr/bin/env bash
# The recorded GPU results of the book, in one call of a GPU machine with a fixed time budget:
#
#   0. a smoke run (1 epoch on 4,096 images) that stops everything if the CUDA path is broken;
#   1. the training chapter's reference run (issue #4)         -> $OUT/cifar10.json
#   2. the benchmark suite on the GPU (issue #7)               -> $OUT/bench_gpu.json
#   3. the ablation sweep, 3 seeds, sized to the time left (#5) -> $OUT/ablations.json
#
# Usage (from the repository root; OUT is where results go):
#   OUT=results XCEPTION_DATA=../shared/data XCEPTION_COMMIT=$(git rev-parse HEAD) \
#       tools/gpu_session.sh [SECONDS]
#
# SECONDS (default 560) is the whole budget; each stage runs under `timeout`, the sweep gets
# what is left. Records are rewritten as runs finish, so a stage cut short leaves what it did.
# The machine needs torch, torchvision and timm; fvcore (MAC counts) can come on PYTHONPATH.
set -u
total=${1:-560}
start=$(date +%s)
out=${OUT:?set OUT to the folder for results}
mkdir -p "$out"
log="$out/session.log"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5 XCEPTION_CACHE=${XCEPTION_CACHE:-/tmp/xception-cache}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

left() { echo $((total - ($(date +%s) - start))); }
say() { echo "[$(($(date +%s) - start)) s] $*" | tee -a "$log"; }

say "budget ${total} s; commit ${XCEPTION_COMMIT:-unknown}; data ${XCEPTION_DATA:-unset}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
    --format=csv >>"$log" 2>&1 || say "nvidia-smi failed"
$py -c "import torch, torchvision, timm, fvcore; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" 2>&1 | tee -a "$log"

say "stage 0: smoke run"
if ! timeout 120 $py -m xception_lib.chapters.experiments cifar10 --out /tmp/smoke.json --epochs 1 \
        --train-subset 4096 --test-subset 1000 --no-progress >>"$log" 2>&1; then
    say "smoke run failed: stopping"
    tail -n 30 "$log"
    exit 3
fi
say "smoke run passed"

say "stage 1: reference run"
timeout $(( $(left) < 300 ? $(left) : 300 )) $py -m xception_lib.chapters.experiments cifar10 --out "$out/cifar10.json" \
    >>"$log" 2>&1 || say "reference run exited with $?"
grep -a "test accuracy" "$log" | tail -1

say "stage 2: GPU benchmark"
timeout $(( $(left) < 120 ? $(left) : 120 )) $py -m xception_lib.chapters.bench --device cuda --batch-size 64 --rounds 10 \
    --no-compile --variant-models xception resnet50 mobilenet_v2 --output "$out/bench_gpu.json" \
    >>"$log" 2>&1 || say "benchmark exited with $?"

budget=$(( ($(left) - 20) * 4 / 5 ))
say "stage 3: ablation sweep with a budget of ${budget} s"
if [ "$budget" -gt 60 ]; then
    timeout $(( $(left) - 5 )) $py -m xception_lib.chapters.experiments ablations --out "$out/ablations.json" --seeds 3 \
        --budget-s "$budget" --no-progress >>"$log" 2>&1 || say "sweep exited with $?"
else
    say "too little time left for the sweep"
fi
say "done"
tail -n 40 "$log"
