#!/usr/bin/env bash
# Every GPU check in one call (261-279 s on one H100 on 2026-11-27; nothing here runs in CI):
#   1. the tests marked gpu (bf16 autocast paths on CUDA);
#   2. the trainer under torchrun on one GPU (NCCL, bf16): a tiny JiT on a generated ImageFolder, stopped,
#      resumed, then class-balanced guided sampling from its checkpoint;
#   3. benchmarks/gpu_train_check.py: JiT-B/16 training step speed, memory and utilisation (torch.compile);
#   4. JiT-B/16 end to end through the real trainer: JPEG/PNG images decoded and cropped to 256 px by the
#      data loader.
# Logs and JSON land in $OUT (default ./gpu_out).   bash benchmarks/gpu_suite.sh
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
section() { echo; echo "=== $1 ($(date +%T))"; }
check() { if [ "$1" -ne 0 ]; then fails+=("$2"); echo "FAILED: $2"; fi; }
make_folder() {   # make_folder DIR "make_image_folder keyword arguments": a generated ImageFolder
  "$PY" -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path
from imagenet_helpers import make_image_folder; make_image_folder(Path('$1'), $2)"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

section "1. pytest -m gpu"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -m gpu tests/test_jit.py 2>&1 | tail -4
check "${PIPESTATUS[0]}" "pytest -m gpu"

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
import torch; s = torch.load('$W/tiny/checkpoint-last.pth', weights_only=False, map_location='cpu')
print('checkpoint step', s['step']); assert s['step'] == 12, s['step']"
check $? "resumed run reached step 12"
timeout 180 "${TORCHRUN[@]}" -m manifold_lab sample --checkpoint "$W/tiny" --num-samples 12 --sample-steps 4 --cfg 2.0 \
    --batch-size 6 --out "$W/samples" --format both --no-progress > "$OUT/tiny_sample.log" 2>&1
rc=$?; tail -2 "$OUT/tiny_sample.log"; check $rc "tiny sample"

section "3. gpu_train_check.py: JiT-B/16, batch 128, bf16, torch.compile"
timeout 330 "$PY" benchmarks/gpu_train_check.py --out "$OUT" 2>&1 | tail -6
check "${PIPESTATUS[0]}" "gpu_train_check"

section "4. JiT-B/16 through the trainer: 512 JPEG/PNG images (320x288) -> 256 px crops, batch 64, 24 steps"
make_folder "$W/b16_data" "classes=8, per_class=64, size=(320, 288), seed=1"
timeout 240 "${TORCHRUN[@]}" -m manifold_lab train --config configs/jit_b16_in256.yaml --data-path "$W/b16_data" \
    --num-classes 8 --output-dir "$W/b16" --batch-size 64 --max-steps 24 --log-every 8 --num-workers 8 \
    --save-every-epochs 1000 --keep-every-epochs 1000 --progress false > "$OUT/b16_train.log" 2>&1
rc=$?; grep -E "params|step (8|16|24)/" "$OUT/b16_train.log" | tail -4; check $rc "JiT-B/16 trainer"

echo
if [ ${#fails[@]} -eq 0 ]; then echo "ALL GPU CHECKS PASSED"; else printf 'FAILED CHECKS: %s\n' "${fails[*]}"; exit 1; fi
