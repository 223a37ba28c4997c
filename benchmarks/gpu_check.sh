#!/usr/bin/env bash
# The GPU checks in one run, for a machine with CUDA, PyTorch and Triton
# already installed (no data needed: the benchmark falls back to random
# inputs). On an H200 step 1 took 19 s (2026-11-30); steps 2 and 3 have not run
# on a GPU yet.
#
#   bash benchmarks/gpu_check.sh [python]      # logs also go to $OUT if set
#
# 1. the compiled Triton kernel against the float64 reference (tests/test_gpu.py)
# 2. the benchmark with the Triton kernel (HTS_EP_KERNEL=auto) for M = 1, 20, 100
# 3. the same with the package's PyTorch path (HTS_EP_KERNEL=torch), M = 20
# 4. the kernel's launch settings (HTS_EP_TRITON) timed against each other
set -uo pipefail
PY=${1:-python3}
LOG=${OUT:-/tmp}/gpu_check
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$LOG/gpu.txt"
"$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$LOG/gpu.txt"
rc=0       # every step runs; the exit status says whether any failed
"$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$LOG/test_gpu.txt" || rc=1
HTS_EP_KERNEL=auto "$PY" benchmarks/bench_relax.py --models 1 20 100 --batches 5 2>&1 \
    | tee "$LOG/bench_triton.txt" || rc=1
HTS_EP_KERNEL=torch "$PY" benchmarks/bench_relax.py --models 20 --batches 5 2>&1 \
    | tee "$LOG/bench_torch.txt" || rc=1
"$PY" benchmarks/gpu_tune.py --models 20 100 --out "$LOG/tune.json" 2>&1 | tee "$LOG/tune.txt" || rc=1
echo "gpu_check: $([ $rc = 0 ] && echo passed || echo FAILED)"
exit $rc
