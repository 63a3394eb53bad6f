#!/usr/bin/env bash
# The training image's GPU path: build the CUDA flavour of the training image and train in it on
# the GPU, float32 then mixed_float16, printing examples per second (tests/gpu/train_speed.py).
#
#   tests/gpu/check.sh                 build recsys-model:gpu (needs a package index) and run in it
#   tests/gpu/check.sh --no-build      run in an existing recsys-model:gpu
#   tests/gpu/check.sh --host          no Docker: run with this machine's python (TensorFlow with
#                                      CUDA and the image's requirements installed), e.g. an offline GPU box
# Extra arguments after -- go to train_speed.py (e.g. -- --items 50000 --epochs 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=docker; BUILD=true; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=false ;;
    --host) MODE=host ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: no GPU visible" >&2
if [ "$MODE" = host ]; then
  exec "${PYTHON:-python3}" tests/gpu/train_speed.py "${EXTRA[@]}"
fi
if $BUILD; then
  docker build -t recsys-model:gpu training_image   # the default TF_FLAVOUR is the CUDA one
fi
exec docker run --rm --gpus all -v "$PWD/tests/gpu:/gpu:ro" --entrypoint python recsys-model:gpu \
  /gpu/train_speed.py "${EXTRA[@]}"
