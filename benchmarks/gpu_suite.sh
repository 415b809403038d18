#!/usr/bin/env bash
# Every GPU check in one call; nothing here runs in CI. Only the suite (python -m benchmarks) and pytest -m gpu:
#   1. pytest -m gpu (bf16 autocast paths on CUDA; toy and image runs with device cuda; the ImageNet trainer
#      under torchrun on one GPU where those tests are marked gpu);
#   2. step: JiT-B/16 and JiT-L/16 training step, batch 128, bf16 and bf16+compile (images/s, peak memory,
#      useful TFLOP/s against the measured bf16 matmul rate), with a profile;
#   3. forward: JiT-B/16 forward pass and one guided sampling batch (Heun 50, cfg 3.0);
#   4. trainer: JiT-B/16 through the real trainer on generated JPEGs and their shards (no checkpoint files);
#   5. loader: where the data loader's time goes, per CPU worker;
#   6. (only when asked: bash benchmarks/gpu_suite.sh 6, about an hour) the wall time of whole studies on one
#      GPU with several small runs at once: toy_fig2, image_pred_loss (the Table-2 analogue, 3 seeds; target
#      at most 10 minutes on an H100) and toy_phase, into $OUT/studies/ and $OUT/study_<name>.json.
# Results land in $OUT (default ./gpu_out) as <name>.json; compare two runs with
#   python -m benchmarks compare OLD/step_b16.json NEW/step_b16.json
# bash benchmarks/gpu_suite.sh [SECTION ...] (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
fails=()
SECTIONS=" ${*:-1 2 3 4 5} "
STUDY_WORKERS=${STUDY_WORKERS:-8}   # small runs at once on the one GPU (section 6)
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
section() { echo; echo "=== $1 ($(date +%T))"; }
check() { if [ "$1" -ne 0 ]; then fails+=("$2"); echo "FAILED: $2"; fi; }
bench() { local t=$1; shift; timeout "$t" "$PY" -m benchmarks "$@" --out "$OUT" 2>&1 | tail -25; check "${PIPESTATUS[0]}" "$*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if want 1; then section "1. pytest -m gpu"
  timeout 600 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -m gpu tests 2>&1 | tail -4
  check "${PIPESTATUS[0]}" "pytest -m gpu"
fi
if want 2; then section "2. step: JiT-B/16 and JiT-L/16, batch 128, bf16 vs bf16+compile"
  bench 420 step --net JiT-B/16 --batch-size 128 --modes bf16 bf16+compile --profile 5 --name step_b16
  bench 540 step --net JiT-L/16 --batch-size 128 --modes bf16+compile --name step_l16
fi
if want 3; then section "3. forward: JiT-B/16 batch 64 and a guided sampling batch of 32"
  bench 300 forward --net JiT-B/16 --batch-size 64 --modes bf16 bf16+compile --sample-batch 32 --name forward_b16
fi
if want 4; then section "4. trainer: JiT-B/16 through generated JPEGs and shards"
  bench 540 trainer --net JiT-B/16 --batch-size 128 --mode bf16+compile --name trainer_b16
fi
if want 5; then section "5. loader: per-worker costs"
  bench 300 loader --name loader
fi
if want 6; then section "6. studies on one GPU, $STUDY_WORKERS runs at once: toy_fig2, image_pred_loss, toy_phase"
  for study in toy_fig2 image_pred_loss toy_phase; do
    "$PY" -m manifold_lab study "studies/$study.yaml" --plan --set device=cuda --workers "$STUDY_WORKERS" \
      --results-dir "$OUT/studies" | tail -3
    t0=$(date +%s)
    timeout 3000 "$PY" -m manifold_lab study "studies/$study.yaml" --set device=cuda --workers "$STUDY_WORKERS" \
      --results-dir "$OUT/studies" --no-progress 2>&1 | tail -3
    rc=${PIPESTATUS[0]}
    echo "{\"study\": \"$study\", \"workers\": $STUDY_WORKERS, \"wall_s\": $(( $(date +%s) - t0 )), \"rc\": $rc}" \
      | tee "$OUT/study_$study.json"
    check "$rc" "study $study"
  done
fi

echo
if [ ${#fails[@]} -eq 0 ]; then echo "ALL GPU CHECKS PASSED"; else printf 'FAILED CHECKS: %s\n' "${fails[*]}"; exit 1; fi
