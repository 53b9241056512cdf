#!/usr/bin/env bash
# One GPU session with a fixed time budget: everything it measures is appended under $OUT as it
# finishes (a cut session keeps what finished). The phases are in tools/gpu_session.py:
# smoke test, throughput of N concurrent runs (with and without torch.compile), the recipe race
# with the ResNet-18 control, the winner as the reference run, then the ablation queue.
#
# Usage (from the repository root):
#   OUT=out XCEPTION_DATA=.data XCEPTION_COMMIT=$(git rev-parse HEAD) tools/gpu_session.sh [SECONDS]
#
#   SECONDS          the whole budget (default 540); the Python session stops starting runs in
#                    time, and `timeout` stops everything 30 s after it
#   PHASES           optional: some of smoke,throughput,race,reference,queue (default: all)
#   XCEPTION_DRY_RUN=1  everything tiny on the CPU: a test of this command, never a result
#
# Afterwards, on the development machine: python -m xception_lib.ledger merge <files>/runs.jsonl
# The GPU machine needs torch and torchvision; fvcore (MAC counts) is optional.
set -u
total=${1:-540}
out=${OUT:?set OUT to the folder for results}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 XCEPTION_CACHE=${XCEPTION_CACHE:-/tmp/xception-cache}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
args=(--out "$out" --budget-s "$total")
[ "${XCEPTION_DRY_RUN:-0}" = 1 ] && args+=(--dry-run)
[ -n "${PHASES:-}" ] && args+=(--phases "$PHASES")

{
    echo "commit ${XCEPTION_COMMIT:-unknown}; data ${XCEPTION_DATA:-unset}"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
    $py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
} >>"$out/session.log" 2>&1
timeout $((total + 30)) $py tools/gpu_session.py "${args[@]}"
status=$?
tail -n 40 "$out/session.log"
exit $status
