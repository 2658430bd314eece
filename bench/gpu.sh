#!/usr/bin/env bash
# wtal's GPU checks and measurements in one run, for a CUDA machine with torch, numpy and OpenCV
# but no PyAV, decord, Ray or network (the `device` tool's machine). Carry gpu_carry/ (made by
# bench/gpu_prep.py on the CPU machine) with the checkout. Steps run in order, each bounded by
# `timeout` and printing as it goes (a cut-off run still reports); everything is also written to
# $OUT/gpu_bench.log when $OUT is set. Without a CUDA GPU it says so in one line and stops.
#
#   bash bench/gpu.sh                 # E2E_SECONDS=120: video seconds of the end-to-end step
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "bench/gpu.sh: no CUDA GPU here ($PY: torch.cuda.is_available() is False or torch is missing); nothing measured"
    exit 0
fi
if [ ! -f gpu_carry/ref.npz ]; then
    echo "bench/gpu.sh: gpu_carry/ref.npz is missing: run bench/gpu_prep.py on the CPU machine and carry gpu_carry"
    exit 1
fi
LOG=${OUT:-/tmp}/gpu_bench.log
exec > >(tee -a "$LOG") 2>&1
# The tests read <checkout>/../shared/data/videos, which does not travel: put the carried clips there.
mkdir -p ../shared/data/videos && cp -n gpu_carry/videos/* ../shared/data/videos/

step() {
    local limit=$1 start=$SECONDS
    shift
    echo "== $* (at most ${limit} s)"
    timeout -k 5 "$limit" "$@"
    echo "== exit $? after $((SECONDS - start)) s"
}

echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader 2>&1 | head -1)"
"$PY" -c "import torch, cv2, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), '| OpenCV', cv2.__version__, '| numpy', numpy.__version__)"
step 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_tvl1.py tests/test_gpu_extract.py
step 90 "$PY" bench/gpu_bench.py tvl1
step 45 "$PY" bench/gpu_bench.py i3d
step 120 "$PY" bench/gpu_bench.py e2e --seconds "${E2E_SECONDS:-120}"
step 45 "$PY" bench/gpu_bench.py profile
echo "== done $(date -u +%FT%TZ)"
