#!/usr/bin/env bash
# #19 item 7: everything to check on a GPU, as one prepared script that ends within 10 minutes.
#
#   bash benchmarks/gpu_check.sh            # on a machine with CUDA and torch (+ numpy, pytest)
#
# 1. the device, torch and the CUDA build;
# 2. every engine on CUDA against the float64 NumPy references, and the kerasopt.optim step with
#    a checkpoint written on the device (tests/test_devices.py; CI runs the same on the CPU);
# 3. the step table on CUDA for Adam, SGD, Adagrad and RMSprop (benchmarks/bench_step.py
#    --device cuda): each engine against torch's for-loop, foreach, fused, and fused captured in
#    a CUDA graph, with the allocator's peak memory, as Markdown and a PNG chart.
#
# It uses the machine's own python3 and torch, and kerasopt from src/ (nothing is installed).
# Everything it prints, and the table, go to $OUT (default /tmp/gpu_check). DEVICE=cpu SCALE=0.02
# PYTHON=.venv/bin/python runs the same steps on the CPU, small (a dry run of the script).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
SCALE="${SCALE:-1.0}"
status=0
{
  date
  nvidia-smi -L || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())'
  if [ "$DEVICE" = cuda ]; then
    "$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device here"' || exit 2
  fi

  echo "== engines on $DEVICE (tests/test_devices.py)"
  timeout 270 "$PY" -m pytest -q -p no:cacheprovider tests/test_devices.py -k "$DEVICE" -rf \
    || status=1

  echo "== step table on $DEVICE (benchmarks/bench_step.py --device $DEVICE)"
  # (peak memory from CUDA's allocator, in-process; on the CPU it takes a subprocess a row)
  memory=$([ "$DEVICE" = cuda ] && echo --memory)
  timeout 270 "$PY" benchmarks/bench_step.py --device "$DEVICE" --scale "$SCALE" --no-keras3 $memory \
    --optimizers Adam SGD Adagrad RMSprop --workloads transformer many_small \
    --impls foreach compiled flat optim:flat --steps 30 --warmup 5 \
    --markdown "$OUT/gpu_table.md" --png "$OUT/gpu_table.png" || status=1
  date
  exit "$status"
} 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
