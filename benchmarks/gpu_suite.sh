#!/usr/bin/env bash
# GPU suite: every step's benchmark on the CUDA device, fp32 vs autocast, plus the local GPU
# claim with concurrent jobs when 2+ cards are visible; one JSON-lines file and one Markdown
# table. Sized to finish in under 8 minutes on one modern card.
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR]          # default OUT_DIR: benchmarks/results/gpu_suite_<date>
#   SUITE_SMOKE=1 bash benchmarks/gpu_suite.sh DIR  # tiny sizes, one step: the CPU-path check of the tests
#
# Without CUDA the suite runs on the CPU (autocast is a no-op there, so only the fp32 rows
# are taken) and says so in the table: the same script, tested in CI, ready for a GPU node.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu_suite_$(date +%Y%m%d_%H%M)}
mkdir -p "$OUT"
JSON="$OUT/suite.jsonl"
: > "$JSON"

CUDA=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$CUDA" -gt 0 ]; then DEVICE=cuda; else DEVICE=cpu; fi
THREADS=${SUITE_THREADS:-$(python -c "import os; print(min(8, os.cpu_count() or 1))")}
echo "== gpu suite: device $DEVICE ($CUDA visible CUDA devices), threads $THREADS -> $OUT"

if [ "${SUITE_SMOKE:-0}" = 1 ]; then
  STEPS="cam"; IMAGES=2; SIZE=32; BIG=32; REPEAT=1
else
  STEPS="cam seg_infer random_walk confounder"; IMAGES=32; SIZE=320; BIG=500; REPEAT=2
fi

run() {  # step, autocast (1/0), extra args...
  local step=$1 ac=$2; shift 2
  echo "-- $step autocast=$ac $*"
  CONTA_AUTOCAST=$ac python "benchmarks/bench_$step.py" --device "$DEVICE" --threads "$THREADS" \
    --repeat "$REPEAT" --variants fast --no-trace --json "$JSON" "$@"
}

for step in $STEPS; do
  run "$step" 0 --images "$IMAGES" --size "$SIZE"
  if [ "$DEVICE" = cuda ] && [ "$step" != confounder ]; then
    run "$step" 1 --images "$IMAGES" --size "$SIZE"
    run "$step" 1 --images 8 --size "$BIG"   # VOC-sized images
  fi
done

# The local GPU claim: 2+ concurrent GPU jobs must land on different cards (the job logs
# name the device each one claimed; conta_core.infra.device.claim_device).
CLAIM="$OUT/claim.txt"
if [ "$CUDA" -gt 1 ]; then
  WORK=$(mktemp -d)
  python - "$WORK" <<'EOF'
import sys, yaml
from pathlib import Path
cfg = yaml.safe_load(Path(".test/config.yaml").read_text())
cfg.update({"device": "auto", "results_dir": str(Path(sys.argv[1]) / "results"), "shards": 4})
(Path(sys.argv[1]) / "suite.yaml").write_text(yaml.safe_dump(cfg))
EOF
  start=$(date +%s)
  python -m snakemake -s Snakefile --directory "$WORK" --configfile "$WORK/suite.yaml" \
    --cores 8 --resources gpu="$CUDA" round0_pseudo > "$WORK/snakemake.log" 2>&1
  echo "round0_pseudo with --resources gpu=$CUDA: $(( $(date +%s) - start )) s" > "$CLAIM"
  grep -ho "device cuda:[0-9]*" "$WORK"/results/tiny/logs/make_cam/*.log | sort | uniq -c >> "$CLAIM"
else
  echo "local GPU claim: not measured ($CUDA CUDA devices visible; needs 2+)" > "$CLAIM"
fi

python benchmarks/gpu_suite_table.py "$JSON" "$CLAIM" > "$OUT/suite.md"
cat "$OUT/suite.md"
