#!/usr/bin/env bash
# The GPU check (issue 37): one script for a machine with an NVIDIA GPU, run from the source
# tree with the machine's own python3 and torch (nothing installed), at most ~6 minutes. Each
# step has its own timeout and writes its results under $OUT as soon as it ends, most
# important first, so that a run cut short still brings back what it finished:
#   1. the CUDA tests (CPU checkpoint on CUDA and back, fast stepper, beam search, the
#      one-process torchrun on NCCL, the log-scan cells, the server's batched streams);
#   2. the benchmark's GPU rows (float32 and bfloat16 training and generation, the parallel
#      cells against the LSTM);
#   3. the defaults with --device cuda --time-budget 180 on tiny Shakespeare, beside nanoGPT's
#      character model (val loss 1.4697 nats/char after about 3 minutes on one A100).
# Usage: OUT=/some/folder CHARLM_DATA=.data bash benchmarks/gpu_check.sh
# (.data/ is git-ignored: put tinyshakespeare.txt there and carry it along.)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
BUDGET="${BUDGET:-180}"
export CHARLM_DATA="${CHARLM_DATA:-.data}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CHARLM_CACHE="$OUT/cache"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

step() {  # step NAME SECONDS COMMAND...: its output in $OUT/NAME.txt, its exit code in summary
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    "$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "available", torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
    nproc
} >"$OUT/machine.txt" 2>&1

step tests 100 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py \
    tests/test_perf_paths.py tests/test_mincells.py tests/test_engine.py tests/test_devices.py \
    -k "cuda or CUDA"
step bench 75 "$PY" -m benchmarks.bench --only cuda --rounds 1 \
    --markdown "$OUT/bench.md" --json "$OUT/bench.json"
step train "$((BUDGET + 60))" "$PY" -m charlm train tinyshakespeare --device cuda \
    --time-budget "$BUDGET" --out "$OUT/run" --overwrite
rm -f "$OUT"/run/*.pt  # the numbers come back, not the weights
rm -rf "$OUT/cache"
# the 180 s run's full validation in nats a character, beside nanoGPT's 1.4697
"$PY" - "$OUT/run/metrics.jsonl" >>"$OUT/summary.txt" 2>&1 <<'EOF'
import json, os, sys
if not os.path.isfile(sys.argv[1]):
    sys.exit("train: no metrics.jsonl (see train.txt)")
rows = [json.loads(line) for line in open(sys.argv[1])]
full = [r for r in rows if r.get("kind", "epoch") == "epoch" and r.get("val_loss") is not None]
if not full:
    sys.exit("train: no full validation in metrics.jsonl (see train.txt)")
print(f"train: {len(full)} full validations, best {min(r['val_loss'] for r in full):.4f} "
      f"nats/char, last {full[-1]['val_loss']:.4f}, step {full[-1]['step']}; nanoGPT: 1.4697")
EOF
cat "$OUT/summary.txt"
