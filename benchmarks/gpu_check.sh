#!/usr/bin/env bash
# The GPU check: one script, one table, under 8 minutes on one GPU (issue 22).
#
#   bash benchmarks/gpu_check.sh             # on a machine with a CUDA GPU and facegan installed
#   bash benchmarks/gpu_check.sh --dry-run   # CPU, ~1 min: the same steps, tiny and on gloo (what CI runs)
#   bash benchmarks/gpu_check.sh --help
#
# It measures, at 64 px / conv_dim 64 / batch 128 with bf16 autocast and channels_last:
#   1. the default recipe and --preset dcgan, eager and with --compile: images/s and peak GPU memory
#      (benchmarks/train_speed.py --device cuda --memory, alternating repeats);
#   2. a 1-GPU torchrun run over NCCL (facegan train under torchrun --standalone);
#   3. a resume of that run (--resume latest, a few more steps);
#   4. generate (a grid from the resumed run) and an ONNX export (needs the `export` extra).
# Each step's status and time go into one table at the end; a failed step is marked and the rest still run.
# --dry-run runs the steps 2-4 on the CPU with a tiny model and the speed steps as --help, so the script
# and every flag it uses are checked wherever the tests run.
# Work files go to a temporary folder (kept with --keep), so it writes nothing in the checkout.
set -uo pipefail

dry=0; keep=0
for arg in "$@"; do
  case "$arg" in
    --help|-h) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --dry-run) dry=1 ;;
    --keep) keep=1 ;;
    *) echo "gpu_check.sh: unknown option '$arg': use --help, --dry-run or --keep" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python}"
work="$(mktemp -d)"
[ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
if [ "$dry" = 0 ] && ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: this torch sees no CUDA GPU: run it on a GPU machine, or use --dry-run here" >&2
  exit 2
fi
gpu_shape=(--image-size 64 --conv-dim 64 --batch-size 128 --num-images 2560 --amp bf16 --channels-last)
if [ "$dry" = 1 ]; then
  steps=4; more=6
  shape=(--image-size 32 --conv-dim 8 --z-size 16 --batch-size 16 --num-images 64 --num-samples 4 --device cpu)
  speed=(--help)
else
  steps=200; more=260
  shape=("${gpu_shape[@]}" --device cuda)
  speed=(--device cuda --sizes 64 --precisions bf16 --steps 20 --repeats 3 --memory)
fi
rows=()

step() {  # step NAME COMMAND...: run one command, record its status and seconds
  local name="$1"; shift
  local start=$SECONDS status
  if "$@" > "$work/$name.log" 2>&1; then
    status="ok"
  else
    status="FAILED (see $work/$name.log)"; keep=1; trap - EXIT
  fi
  [ "$dry" = 1 ] || tail -n 12 "$work/$name.log"
  rows+=("$(printf '%-28s %-40s %6ss' "$name" "$status" "$((SECONDS - start))")")
}

# The dry run's tiny shape leaves the GPU shape's flags unchecked: resolve them once on the CPU (writes nothing).
[ "$dry" = 1 ] && step "GPU options parse" "$python" -m facegan train "${gpu_shape[@]}" --device cpu \
  --max-steps "$steps" --dry-run --out "$work/runs"
step "speed eager" "$python" "$here/train_speed.py" "${speed[@]}" --warmup 5
step "speed --compile" "$python" "$here/train_speed.py" "${speed[@]}" --warmup 10 --compile
step "torchrun 1 process ($([ "$dry" = 1 ] && echo gloo || echo NCCL))" "$python" -m torch.distributed.run --standalone \
  --nproc_per_node 1 -m facegan train "${shape[@]}" --max-steps "$steps" --no-progress --out "$work/runs"
step "resume" "$python" -m facegan train --resume latest --out "$work/runs" --max-steps "$more" --no-progress
step "generate" "$python" -m facegan generate --runs "$work/runs" --seeds 0-63 --out "$work/generated.png"
step "export onnx" "$python" -m facegan export --runs "$work/runs" --format onnx --out "$work/generator.onnx"

echo
echo "gpu_check on: $("$python" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU (dry run)')") (torch $("$python" -c "import torch; print(torch.__version__)"))"
printf '%-28s %-40s %7s\n' "step" "status" "time"
printf '%s\n' "${rows[@]}"
if [ "$dry" = 0 ]; then
  echo "images/s and peak memory: the 'speed' tables above (train_speed.py); the torchrun run's rate: its metrics.jsonl"
  grep -h images_per_s "$work"/runs/*/metrics.jsonl 2>/dev/null | tail -n 1
fi
case "${rows[*]}" in *FAILED*) exit 1 ;; esac
