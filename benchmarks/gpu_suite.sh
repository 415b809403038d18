#!/usr/bin/env bash
# Every GPU check in one call (sections 1-4: 261-279 s on one H100 on 2026-11-27; nothing here runs in CI):
#   1. the tests marked gpu (bf16 autocast paths on CUDA; toy and image runs with device cuda);
#   2. the trainer under torchrun on one GPU (NCCL, bf16): a tiny JiT on a generated ImageFolder, stopped,
#      resumed, then class-balanced guided sampling from its checkpoint;
#   3. benchmarks/gpu_train_check.py: JiT-B/16 training step speed, memory and utilisation (torch.compile);
#   4. JiT-B/16 end to end through the real trainer: JPEG/PNG images decoded and cropped to 256 px by the
#      data loader.
#   5. benchmarks/gpu_speed.py: B/16 and L/16, synthetic and each data path, loader alone, profile (~6 min);
#   6. studies on the GPU: toy_fig2 and one seed of image_pred_loss with --set device=cuda, wall times and
#      the metrics beside the committed CPU ones.
# Logs and JSON land in $OUT (default ./gpu_out).   bash benchmarks/gpu_suite.sh [SECTION ...] (default: all)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node=1)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT   # the JiT-B/16 checkpoint alone is over 1 GB
fails=()
SECTIONS=" ${*:-1 2 3 4 5 6} "
want() { [[ "$SECTIONS" == *" $1 "* ]]; }
section() { echo; echo "=== $1 ($(date +%T))"; }
check() { if [ "$1" -ne 0 ]; then fails+=("$2"); echo "FAILED: $2"; fi; }
make_folder() {   # make_folder DIR "make_image_folder keyword arguments": a generated ImageFolder
  "$PY" -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path
from imagenet_helpers import make_image_folder; make_image_folder(Path('$1'), $2)"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

if want 1; then
section "1. pytest -m gpu"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -m gpu tests/test_jit.py tests/test_train_core.py 2>&1 | tail -4
check "${PIPESTATUS[0]}" "pytest -m gpu"
fi

if want 2; then
section "2. tiny JiT under torchrun on one GPU: bf16, stop at step 6, resume to 12, sample"
make_folder "$W/tiny_data" "classes=3, per_class=8"
TINY=(-m manifold_lab train --config configs/jit_tiny_cpu.yaml --data-path "$W/tiny_data" --output-dir "$W/tiny"
      --precision bf16 --max-steps 12 --num-workers 2)
timeout 180 "${TORCHRUN[@]}" "${TINY[@]}" --stop-at-step 6 > "$OUT/tiny_train.log" 2>&1
rc=$?; tail -3 "$OUT/tiny_train.log"; check $rc "tiny train (stop at 6)"
grep -q "1 process(es) on cuda" "$OUT/tiny_train.log"; check $? "tiny train ran on cuda"
timeout 180 "${TORCHRUN[@]}" "${TINY[@]}" --resume "$W/tiny" >> "$OUT/tiny_train.log" 2>&1
rc=$?; tail -2 "$OUT/tiny_train.log"; check $rc "tiny train (resume to 12)"
"$PY" -c "
import torch; s = torch.load('$W/tiny/checkpoint-last.pth', weights_only=True, map_location='cpu')
print('checkpoint step', s['step']); assert s['step'] == 12, s['step']"
check $? "resumed run reached step 12"
timeout 180 "${TORCHRUN[@]}" -m manifold_lab sample --checkpoint "$W/tiny" --num-samples 12 --sample-steps 4 --cfg 2.0 \
    --batch-size 6 --out "$W/samples" --format both --no-progress > "$OUT/tiny_sample.log" 2>&1
rc=$?; tail -2 "$OUT/tiny_sample.log"; check $rc "tiny sample"
fi

if want 3; then
section "3. gpu_train_check.py: JiT-B/16, batch 128, bf16, torch.compile"
timeout 330 "$PY" benchmarks/gpu_train_check.py --out "$OUT" 2>&1 | tail -6
check "${PIPESTATUS[0]}" "gpu_train_check"
fi

if want 4; then
section "4. JiT-B/16 through the trainer: 512 JPEG/PNG images (320x288) -> 256 px crops, batch 64, 24 steps"
make_folder "$W/b16_data" "classes=8, per_class=64, size=(320, 288), seed=1"
timeout 240 "${TORCHRUN[@]}" -m manifold_lab train --config configs/jit_b16_in256.yaml --data-path "$W/b16_data" \
    --num-classes 8 --output-dir "$W/b16" --batch-size 64 --max-steps 24 --log-every 8 --num-workers 8 \
    --save-every-epochs 1000 --keep-every-epochs 1000 --progress false > "$OUT/b16_train.log" 2>&1
rc=$?; grep -E "params|step (8|16|24)/" "$OUT/b16_train.log" | tail -4; check $rc "JiT-B/16 trainer"
fi

if want 5; then
section "5. gpu_speed.py: B/16 and L/16, synthetic, ImageFolder JPEG and shards, loader alone, profile"
timeout 540 "$PY" benchmarks/gpu_speed.py --out "$OUT" 2>&1 | tail -30
check "${PIPESTATUS[0]}" "gpu_speed"
fi

if want 6; then
section "6. studies with --set device=cuda: toy_fig2 (12 runs), image_pred_loss seed 0 (18 runs)"
for s in "toy_fig2 --workers 4" "image_pred_loss --set seed=0 --workers 6"; do
  name=${s%% *}
  start=$(date +%s)
  timeout 420 "$PY" -m manifold_lab study "studies/$name.yaml" ${s#* } --set device=cuda --results-dir "$W/results" \
      --no-progress > "$OUT/study_$name.log" 2>&1
  rc=$?; echo "$name on cuda: exit $rc, $(( $(date +%s) - start )) s"; tail -1 "$OUT/study_$name.log"; check $rc "study $name"
  cp "$W/results/$name/summary.csv" "$OUT/${name}_cuda_summary.csv" 2>/dev/null
  "$PY" - "$name" "$W/results" <<'PYEOF'
import sys, pandas as pd
name, root = sys.argv[1], sys.argv[2]
gpu = pd.read_csv(f"{root}/{name}/summary.csv"); cpu = pd.read_csv(f"results/{name}/summary.csv")
keep = ["nn_dist", "off_manifold"] if name.startswith("toy") else ["fd_feat", "fd_pix"]
key = ["run_id", "metric"]
both = cpu[cpu.metric.isin(keep)].merge(gpu[gpu.metric.isin(keep)], on=key, suffixes=("_cpu", "_cuda"))
print(both[key + ["value_cpu", "value_cuda"]].to_string(index=False))
PYEOF
done
fi

echo
if [ ${#fails[@]} -eq 0 ]; then echo "ALL GPU CHECKS PASSED"; else printf 'FAILED CHECKS: %s\n' "${fails[*]}"; exit 1; fi
